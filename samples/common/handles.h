// RAII owners for Vulkan device objects. Each owner remembers its device and destroys the
// handle when it goes out of scope, so every object is gone before the device that made it
// (declare owners after the Context) and the validation layer sees no leaks.
#pragma once

#include <vulkan/vulkan.h>

#include <utility>

namespace bypass::samples {

template <typename T>
using DeviceDestroyFn = void(VKAPI_PTR*)(VkDevice, T, const VkAllocationCallbacks*);

template <typename T, DeviceDestroyFn<T> kDestroy>
class DeviceObject {
 public:
  DeviceObject() = default;
  DeviceObject(VkDevice device, T handle) : device_(device), handle_(handle) {}
  ~DeviceObject() { reset(); }

  DeviceObject(const DeviceObject&) = delete;
  DeviceObject& operator=(const DeviceObject&) = delete;
  DeviceObject(DeviceObject&& other) noexcept
      : device_(other.device_), handle_(std::exchange(other.handle_, VK_NULL_HANDLE)) {}
  DeviceObject& operator=(DeviceObject&& other) noexcept {
    if (this != &other) {
      reset();
      device_ = other.device_;
      handle_ = std::exchange(other.handle_, VK_NULL_HANDLE);
    }
    return *this;
  }

  T get() const { return handle_; }
  // For vkCreate* calls that write the handle: the previous one is destroyed first.
  T* put(VkDevice device) {
    reset();
    device_ = device;
    return &handle_;
  }
  void reset() {
    if (handle_ != VK_NULL_HANDLE) kDestroy(device_, handle_, nullptr);
    handle_ = VK_NULL_HANDLE;
  }

 private:
  VkDevice device_ = VK_NULL_HANDLE;
  T handle_ = VK_NULL_HANDLE;
};

using UniqueBuffer = DeviceObject<VkBuffer, vkDestroyBuffer>;
using UniqueImage = DeviceObject<VkImage, vkDestroyImage>;
using UniqueImageView = DeviceObject<VkImageView, vkDestroyImageView>;
using UniqueMemory = DeviceObject<VkDeviceMemory, vkFreeMemory>;
using UniqueSampler = DeviceObject<VkSampler, vkDestroySampler>;
using UniqueShaderModule = DeviceObject<VkShaderModule, vkDestroyShaderModule>;
using UniquePipeline = DeviceObject<VkPipeline, vkDestroyPipeline>;
using UniquePipelineLayout = DeviceObject<VkPipelineLayout, vkDestroyPipelineLayout>;
using UniqueDescriptorSetLayout = DeviceObject<VkDescriptorSetLayout, vkDestroyDescriptorSetLayout>;
using UniqueDescriptorPool = DeviceObject<VkDescriptorPool, vkDestroyDescriptorPool>;
using UniqueRenderPass = DeviceObject<VkRenderPass, vkDestroyRenderPass>;
using UniqueFramebuffer = DeviceObject<VkFramebuffer, vkDestroyFramebuffer>;
using UniqueCommandPool = DeviceObject<VkCommandPool, vkDestroyCommandPool>;
using UniqueFence = DeviceObject<VkFence, vkDestroyFence>;
using UniqueSemaphore = DeviceObject<VkSemaphore, vkDestroySemaphore>;

}  // namespace bypass::samples
