// The Vulkan instance, device and queue a sample runs on, made the way any application makes
// them (through the loader), so the same code runs on lavapipe directly and on the bypass
// guest ICD. With BYPASS_SAMPLE_VALIDATION set, the Khronos validation layer is enabled and a
// debug-utils messenger counts its errors; sample_main() turns a non-zero count into exit 1.
#pragma once

#include <vulkan/vulkan.h>

#include <cstdint>
#include <string>
#include <vector>

#include "handles.h"

namespace bypass::samples {

struct ContextOptions {
  const char* app_name = "bypass-sample";
  // The lowest device API version the sample uses; devices below it are skipped.
  uint32_t min_api_version = VK_API_VERSION_1_0;
  // Vulkan 1.3 core features the sample needs (requires min_api_version >= 1.3).
  bool dynamic_rendering = false;
  bool synchronization2 = false;
  // Vulkan 1.2 core features (requires min_api_version >= 1.2).
  bool timeline_semaphore = false;
  bool host_query_reset = false;
  // Device extensions the sample needs; devices without them are skipped.
  std::vector<const char*> device_extensions;
};

class Context {
 public:
  explicit Context(const ContextOptions& options);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  VkInstance instance() const { return instance_; }
  VkPhysicalDevice physical_device() const { return physical_device_; }
  VkDevice device() const { return device_; }
  VkQueue queue() const { return queue_; }
  uint32_t queue_family() const { return queue_family_; }
  const VkPhysicalDeviceProperties& properties() const { return properties_; }
  const VkPhysicalDeviceMemoryProperties& memory_properties() const { return memory_properties_; }

  // The first memory type allowed by `type_bits` that has `required` and `preferred`, else the
  // first with `required` only. Throws when none has `required`.
  uint32_t find_memory_type(uint32_t type_bits, VkMemoryPropertyFlags required, VkMemoryPropertyFlags preferred) const;

  // Throws unless `format` with optimal tiling supports all of `features`.
  void require_format_features(VkFormat format, VkFormatFeatureFlags features) const;

  // Submits and waits on `fence` (a fresh fence per call when null; a caller's unsignaled fence
  // is reset again after the wait), with a bounded wait so a lost device reads as an error
  // rather than a hang.
  void submit_and_wait(const VkSubmitInfo& submit, VkFence fence = VK_NULL_HANDLE) const;
  void wait_fence(VkFence fence) const;

 private:
  void create_instance(const ContextOptions& options);
  void pick_physical_device(const ContextOptions& options);
  void create_device(const ContextOptions& options);

  VkInstance instance_ = VK_NULL_HANDLE;
  VkDebugUtilsMessengerEXT messenger_ = VK_NULL_HANDLE;
  VkPhysicalDevice physical_device_ = VK_NULL_HANDLE;
  VkDevice device_ = VK_NULL_HANDLE;
  VkQueue queue_ = VK_NULL_HANDLE;
  uint32_t queue_family_ = 0;
  VkPhysicalDeviceProperties properties_{};
  VkPhysicalDeviceMemoryProperties memory_properties_{};
};

// Validation errors reported so far (by any thread, through any Context).
uint32_t validation_error_count();

// True when BYPASS_SAMPLE_VALIDATION asks for the validation layer ("1", or "sync" to add
// synchronization validation).
bool validation_requested();

}  // namespace bypass::samples
