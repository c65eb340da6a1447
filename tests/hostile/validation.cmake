# Validation before the driver (host-server/src/validate.cpp, codegen/gen_enums.py): a hostile
# guest's invalid ranges, create infos and enum values are refused before lavapipe sees them.
add_executable(hostile_validation_probe ${CMAKE_CURRENT_LIST_DIR}/validation_probe.cpp)
set_target_properties(hostile_validation_probe PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
target_link_libraries(hostile_validation_probe PRIVATE Vulkan::Vulkan bypass_warnings)
bypass_add_e2e_test(NAME hostile_validation SCRIPT ${CMAKE_CURRENT_LIST_DIR}/validation_test.py
                    ARGS all $<TARGET_FILE:hostile_validation_probe> LABELS hostile TIMEOUT 120)
