// Command pools and buffers. Pools are externally synchronized, so each recording thread gets
// its own pool; these helpers keep that one-liner simple.
#pragma once

#include <vulkan/vulkan.h>

#include <cstdint>
#include <vector>

#include "handles.h"

namespace bypass::samples {

UniqueCommandPool create_command_pool(VkDevice device, uint32_t queue_family, VkCommandPoolCreateFlags flags = 0);

std::vector<VkCommandBuffer> allocate_command_buffers(VkDevice device, VkCommandPool pool, VkCommandBufferLevel level,
                                                      uint32_t count);

// vkBeginCommandBuffer; `inheritance` is required for secondary command buffers.
void begin_command_buffer(VkCommandBuffer cmd, VkCommandBufferUsageFlags flags = 0,
                          const VkCommandBufferInheritanceInfo* inheritance = nullptr);
void end_command_buffer(VkCommandBuffer cmd);

UniqueFence create_fence(VkDevice device, bool signaled = false);

}  // namespace bypass::samples
