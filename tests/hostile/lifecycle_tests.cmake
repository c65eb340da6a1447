# Object lifetimes and per-session limits (issue 13): destroying what a pending wait uses,
# parents destroyed with live children, truncating shared memory, too many pending waits, the
# object limit, objects destroyed while their work runs. Driven by lifecycle_test.py; the hostile guest is lifecycle_probe.cpp.

add_executable(hostile_lifecycle_probe lifecycle_probe.cpp)
set_target_properties(hostile_lifecycle_probe PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
target_link_libraries(hostile_lifecycle_probe PRIVATE Vulkan::Vulkan Threads::Threads bypass_warnings)

set(lifecycle_script ${CMAKE_CURRENT_SOURCE_DIR}/lifecycle_test.py)
# About 3-5 s each here (15 s for the rounds), more on a loaded machine or with sanitizers.
foreach(case destroy-waited-fence destroy-waited-device instance-rounds device-rounds truncate-memory
             pending-waits wait-behind-waits object-limit destroy-in-flight abandoned)
  bypass_add_e2e_test(NAME hostile_lifecycle_${case} SCRIPT ${lifecycle_script} ARGS ${case} LABELS hostile
                      TIMEOUT 120)
  set_property(TEST hostile_lifecycle_${case} APPEND PROPERTY ENVIRONMENT
               "BYPASS_LIFECYCLE_PROBE=$<TARGET_FILE:hostile_lifecycle_probe>")
endforeach()
