#include "bench_util.h"

#include <stdexcept>

#include "vk_check.h"

namespace bypass::bench {

namespace {

// Bounded like the samples' waits: generous for a loaded 2-core machine, short enough that a
// host that stopped answering fails the run instead of hanging it.
constexpr uint64_t kFenceTimeoutNs = 60ull * 1000 * 1000 * 1000;

}  // namespace

UniqueDescriptorSetLayout create_single_binding_layout(VkDevice device, VkDescriptorType type,
                                                       VkShaderStageFlags stages) {
  VkDescriptorSetLayoutBinding binding{};
  binding.binding = 0;
  binding.descriptorType = type;
  binding.descriptorCount = 1;
  binding.stageFlags = stages;
  VkDescriptorSetLayoutCreateInfo info{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
  info.bindingCount = 1;
  info.pBindings = &binding;
  UniqueDescriptorSetLayout layout;
  samples::vk_check(vkCreateDescriptorSetLayout(device, &info, nullptr, layout.put(device)),
                    "vkCreateDescriptorSetLayout");
  return layout;
}

UniqueDescriptorPool create_pool(VkDevice device, VkDescriptorType type, uint32_t sets) {
  VkDescriptorPoolSize size{type, sets};
  VkDescriptorPoolCreateInfo info{VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO};
  info.maxSets = sets;
  info.poolSizeCount = 1;
  info.pPoolSizes = &size;
  UniqueDescriptorPool pool;
  samples::vk_check(vkCreateDescriptorPool(device, &info, nullptr, pool.put(device)), "vkCreateDescriptorPool");
  return pool;
}

VkDescriptorSet allocate_set(VkDevice device, VkDescriptorPool pool, VkDescriptorSetLayout layout) {
  VkDescriptorSetAllocateInfo info{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO};
  info.descriptorPool = pool;
  info.descriptorSetCount = 1;
  info.pSetLayouts = &layout;
  VkDescriptorSet set = VK_NULL_HANDLE;
  samples::vk_check(vkAllocateDescriptorSets(device, &info, &set), "vkAllocateDescriptorSets");
  return set;
}

void write_buffer_descriptor(VkDevice device, VkDescriptorSet set, VkDescriptorType type, VkBuffer buffer,
                             VkDeviceSize offset, VkDeviceSize range) {
  VkDescriptorBufferInfo buffer_info{buffer, offset, range};
  VkWriteDescriptorSet write{VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET};
  write.dstSet = set;
  write.dstBinding = 0;
  write.descriptorCount = 1;
  write.descriptorType = type;
  write.pBufferInfo = &buffer_info;
  vkUpdateDescriptorSets(device, 1, &write, 0, nullptr);
}

void submit(VkQueue queue, VkCommandBuffer cmd, VkFence fence) {
  VkSubmitInfo info{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  info.commandBufferCount = 1;
  info.pCommandBuffers = &cmd;
  samples::vk_check(vkQueueSubmit(queue, 1, &info, fence), "vkQueueSubmit");
}

void wait_and_reset(VkDevice device, VkFence fence) {
  const VkResult r = vkWaitForFences(device, 1, &fence, VK_TRUE, kFenceTimeoutNs);
  if (r == VK_TIMEOUT) throw std::runtime_error("a submission did not finish within 60 s");
  samples::vk_check(r, "vkWaitForFences");
  samples::vk_check(vkResetFences(device, 1, &fence), "vkResetFences");
}

}  // namespace bypass::bench
