#include "commands.h"

#include "vk_check.h"

namespace bypass::samples {

UniqueCommandPool create_command_pool(VkDevice device, uint32_t queue_family, VkCommandPoolCreateFlags flags) {
  VkCommandPoolCreateInfo info{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  info.flags = flags;
  info.queueFamilyIndex = queue_family;
  UniqueCommandPool pool;
  vk_check(vkCreateCommandPool(device, &info, nullptr, pool.put(device)), "vkCreateCommandPool");
  return pool;
}

std::vector<VkCommandBuffer> allocate_command_buffers(VkDevice device, VkCommandPool pool, VkCommandBufferLevel level,
                                                      uint32_t count) {
  std::vector<VkCommandBuffer> buffers(count);
  VkCommandBufferAllocateInfo info{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  info.commandPool = pool;
  info.level = level;
  info.commandBufferCount = count;
  vk_check(vkAllocateCommandBuffers(device, &info, buffers.data()), "vkAllocateCommandBuffers");
  return buffers;
}

void begin_command_buffer(VkCommandBuffer cmd, VkCommandBufferUsageFlags flags,
                          const VkCommandBufferInheritanceInfo* inheritance) {
  VkCommandBufferBeginInfo info{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  info.flags = flags;
  info.pInheritanceInfo = inheritance;
  vk_check(vkBeginCommandBuffer(cmd, &info), "vkBeginCommandBuffer");
}

void end_command_buffer(VkCommandBuffer cmd) { vk_check(vkEndCommandBuffer(cmd), "vkEndCommandBuffer"); }

UniqueFence create_fence(VkDevice device, bool signaled) {
  VkFenceCreateInfo info{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  info.flags = signaled ? VK_FENCE_CREATE_SIGNALED_BIT : 0;
  UniqueFence fence;
  vk_check(vkCreateFence(device, &info, nullptr, fence.put(device)), "vkCreateFence");
  return fence;
}

}  // namespace bypass::samples
