# Shared build settings for every bypass target.

add_library(bypass_warnings INTERFACE)
target_compile_options(bypass_warnings INTERFACE
  # -Wshadow=local (a local that hides another) is GCC's; clang, which builds the fuzz trees, spells it
  # -Wshadow-uncaptured-local.
  -Wall -Wextra -Wpedantic $<$<CXX_COMPILER_ID:GNU>:-Wshadow=local> -Wno-missing-field-initializers
  $<$<CXX_COMPILER_ID:Clang>:-Wshadow-uncaptured-local>
  $<$<BOOL:${BYPASS_WERROR}>:-Werror>)

if(BYPASS_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

# ThreadSanitizer (scripts/tsan.sh). The driver (lavapipe) is not instrumented: races inside it
# are invisible and its own synchronization unknown to TSan, hence tests/tsan.supp. Every test
# gets TSAN_OPTIONS (BYPASS_TSAN_OPTIONS): a report ends the process, so a race fails its test,
# and is written to build-tsan/tsan-reports/ (a worker's death may be what a test expects; the
# script fails on any report there). A crash is left to the tests (handle_segv=0), as in other
# builds: icd_free_in_flight's worker may crash in the driver once the host's bounded wait for
# the freed memory's work (10 s) runs out, which TSan's slower driver calls make likely.
if(BYPASS_TSAN)
  if(BYPASS_SANITIZE)
    message(FATAL_ERROR "BYPASS_TSAN and BYPASS_SANITIZE exclude each other: use a build tree per sanitizer")
  endif()
  # gcc warns that TSan does not model std::atomic_thread_fence. Ours order a sleep flag against
  # the ring indices (transport/src/futex.cc: a missed wake-up, not data) or sit beside a
  # release store that TSan does model (vm.cc), so nothing TSan checks depends on them.
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer $<$<CXX_COMPILER_ID:GNU>:-Wno-tsan>)
  add_link_options(-fsanitize=thread)
  execute_process(COMMAND ${CMAKE_CXX_COMPILER} -print-file-name=libtsan.so
                  OUTPUT_VARIABLE BYPASS_TSAN_RUNTIME OUTPUT_STRIP_TRAILING_WHITESPACE)
  set(BYPASS_TSAN_OPTIONS
      "halt_on_error=1 handle_segv=0 ignore_noninstrumented_modules=1 second_deadlock_stack=1 history_size=4 suppressions=${CMAKE_SOURCE_DIR}/tests/tsan.supp log_path=${CMAKE_BINARY_DIR}/tsan-reports/report")
  # Everything of ours runs several times slower: test timeouts (and the e2e harness's hang
  # limits, through BYPASS_TIMEOUT_SCALE) stretch by this factor.
  set(BYPASS_TIMEOUT_SCALE 4)
else()
  set(BYPASS_TIMEOUT_SCALE 1)
endif()

# bypass_add_test(NAME name LABEL label SOURCES ... [LIBS ...] [TIMEOUT s] [PROPERTIES ...])
# Builds a GoogleTest executable at build/tests/<name> and registers it with ctest under the
# given label (the label names the source folder the test covers).
function(bypass_add_test)
  cmake_parse_arguments(T "" "NAME;LABEL;TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${T_NAME} ${T_SOURCES})
  set_target_properties(${T_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main bypass_warnings Threads::Threads)
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  math(EXPR T_TIMEOUT "${T_TIMEOUT} * ${BYPASS_TIMEOUT_SCALE}")
  add_test(NAME ${T_NAME} COMMAND ${T_NAME})
  set_tests_properties(${T_NAME} PROPERTIES LABELS "${T_LABEL};${T_LABELS}" TIMEOUT ${T_TIMEOUT})
  if(BYPASS_TSAN)
    set_property(TEST ${T_NAME} APPEND PROPERTY ENVIRONMENT "TSAN_OPTIONS=${BYPASS_TSAN_OPTIONS}")
  endif()
endfunction()

# bypass_embed_shaders(OUT_VAR DIR dir SHADERS file.vert ...)
# Compiles each GLSL file in <current source dir>/shaders/ with glslc into SPIR-V words in
# <dir>/<file>.inc, which a program embeds with
#   constexpr uint32_t kCode[] = {
#   #include "file.vert.inc"
#   };
# so it needs no files next to it at run time. OUT_VAR receives the .inc paths (add them to the
# target's sources so they are built first) and `dir` goes on its include path.
function(bypass_embed_shaders out_var)
  cmake_parse_arguments(E "" "DIR" "SHADERS" ${ARGN})
  find_program(BYPASS_GLSLC glslc REQUIRED)
  set(generated)
  foreach(shader ${E_SHADERS})
    set(src ${CMAKE_CURRENT_SOURCE_DIR}/shaders/${shader})
    set(out ${E_DIR}/${shader}.inc)
    add_custom_command(
      OUTPUT ${out}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${E_DIR}
      COMMAND ${BYPASS_GLSLC} --target-env=vulkan1.0 -Werror -mfmt=num -o ${out} ${src}
      DEPENDS ${src}
      COMMENT "glslc ${shader}"
      VERBATIM)
    list(APPEND generated ${out})
  endforeach()
  set(${out_var} ${generated} PARENT_SCOPE)
endfunction()
