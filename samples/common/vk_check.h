// Vulkan error handling for the samples: a failed call throws VulkanError naming the call and
// the VkResult, and the sample's main turns that into one line on stderr and exit status 1.
#pragma once

#include <vulkan/vulkan.h>

#include <stdexcept>
#include <string>

namespace bypass::samples {

class VulkanError : public std::runtime_error {
 public:
  VulkanError(const std::string& what, VkResult result);
  VkResult result() const { return result_; }

 private:
  VkResult result_;
};

// A wrong result found by a sample's own check (as opposed to an API failure).
class CheckError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

std::string vk_result_name(VkResult result);

// Throws VulkanError unless `result` is VK_SUCCESS. `what` names the call.
inline void vk_check(VkResult result, const char* what) {
  if (result != VK_SUCCESS) throw VulkanError(what, result);
}

}  // namespace bypass::samples
