# Shared by tests/e2e and tests/icd: where the end-to-end tests find the driver, the tools and
# the build's executables, and how a Python test script is registered.
# Included by both folders (variables are per directory; the finds are cached).

# The lavapipe manifest bypassd (and the native reference runs) use.
find_file(BYPASS_LVP_JSON lvp_icd.x86_64.json lvp_icd.json
          PATHS /usr/share/vulkan/icd.d /etc/vulkan/icd.d NO_DEFAULT_PATH
          DOC "lavapipe's Vulkan ICD manifest, the driver the end-to-end tests run on")
find_program(BYPASS_VULKANINFO vulkaninfo DOC "vulkaninfo from vulkan-tools")

# Environment every end-to-end test gets; generator expressions keep it true to the build.
set(BYPASS_E2E_ENV
  "BYPASSD=$<TARGET_FILE:bypassd>"
  "BYPASSCTL=$<TARGET_FILE:bypassctl>"
  "BYPASS_ICD_JSON=${CMAKE_BINARY_DIR}/guest-icd/bypass_icd.json"
  "BYPASS_ICD_LIB=$<TARGET_FILE:bypass_icd>"
  "BYPASS_SAMPLES_DIR=$<TARGET_FILE_DIR:sample_triangle>"
  "BYPASS_PROBE=$<TARGET_FILE:e2e_probe>"
  "BYPASS_RAW_CLIENT=$<TARGET_FILE:icd_raw_client>"
  "BYPASS_LVP_JSON=${BYPASS_LVP_JSON}"
  "BYPASS_VULKANINFO=${BYPASS_VULKANINFO}"
  "PYTHONDONTWRITEBYTECODE=1")

# bypass_add_e2e_test(NAME name SCRIPT file.py ARGS ... LABELS ... TIMEOUT s)
function(bypass_add_e2e_test)
  cmake_parse_arguments(T "" "NAME;SCRIPT;TIMEOUT" "ARGS;LABELS" ${ARGN})
  math(EXPR T_TIMEOUT "${T_TIMEOUT} * ${BYPASS_TIMEOUT_SCALE}")
  add_test(NAME ${T_NAME} COMMAND ${Python3_EXECUTABLE} ${T_SCRIPT} ${T_ARGS})
  set_tests_properties(${T_NAME} PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT}
                       ENVIRONMENT "${BYPASS_E2E_ENV}")
endfunction()


# Sanitized builds: bypassd and the native runs keep lavapipe loaded until exit (LD_PRELOAD after
# the ASan runtime, which must come first), so LeakSanitizer can attribute what lavapipe holds
# instead of reporting it from an unloaded "<unknown module>"; unsanitized guests (vulkaninfo)
# loading the sanitized ICD get the runtime preloaded. See harness.py.
if(BYPASS_SANITIZE)
  execute_process(COMMAND ${CMAKE_CXX_COMPILER} -print-file-name=libasan.so
                  OUTPUT_VARIABLE BYPASS_ASAN_RUNTIME OUTPUT_STRIP_TRAILING_WHITESPACE)
  list(APPEND BYPASS_E2E_ENV "BYPASS_ASAN_RUNTIME=${BYPASS_ASAN_RUNTIME}")
endif()
# ThreadSanitizer builds: every process of ours reports races (and ends at the first); programs
# not built by us (vulkaninfo) loading the instrumented ICD get the runtime preloaded.
if(BYPASS_TSAN)
  list(APPEND BYPASS_E2E_ENV "BYPASS_TSAN_RUNTIME=${BYPASS_TSAN_RUNTIME}" "TSAN_OPTIONS=${BYPASS_TSAN_OPTIONS}"
       "BYPASS_TIMEOUT_SCALE=${BYPASS_TIMEOUT_SCALE}")
endif()
