// Device, queue and command buffer commands that create or free dispatchable objects.
#include <sys/mman.h>

#include <cstring>
#include <vector>

#include "bypass/base/log.h"
#include "objects.h"

namespace bypass::icd {

VKAPI_ATTR VkResult VKAPI_CALL icd_vkCreateDevice(VkPhysicalDevice physicalDevice,
                                                  const VkDeviceCreateInfo* pCreateInfo, const VkAllocationCallbacks*,
                                                  VkDevice* pDevice) {
  auto* pd = as<PhysicalDevice>(physicalDevice);
  Connection* conn = pd->conn;
  auto* dev = new_object<Device>(conn, VK_OBJECT_TYPE_DEVICE, conn->new_id());
  dev->physical = pd;
  for (uint32_t i = 0; i < pCreateInfo->enabledExtensionCount; ++i)
    dev->extensions.emplace_back(pCreateInfo->ppEnabledExtensionNames[i]);
  VkDevice handle = reinterpret_cast<VkDevice>(dev);
  const VkResult result = forward_vkCreateDevice(physicalDevice, pCreateInfo, nullptr, &handle);
  if (result != VK_SUCCESS) {
    delete_object(dev);
    return result;
  }
  *pDevice = handle;
  return VK_SUCCESS;
}

VKAPI_ATTR void VKAPI_CALL icd_vkDestroyDevice(VkDevice device, const VkAllocationCallbacks*) {
  if (!device) return;
  auto* dev = as<Device>(device);
  forward_vkDestroyDevice(device, nullptr);
  dev->conn->flush();
  if (dev->wait_read_windows.load() + dev->wait_reads_left_out.load() > 0) {
    base::log(base::LogLevel::kInfo,
              "shadow memory: waits read %llu windows and left out %llu shadows (%llu bytes) the device cannot write",
              static_cast<unsigned long long>(dev->wait_read_windows.load()),
              static_cast<unsigned long long>(dev->wait_reads_left_out.load()),
              static_cast<unsigned long long>(dev->wait_bytes_left_out.load()));
  }
  if (dev->pipelines_unasked.load() + dev->pipelines_waited.load() > 0)
    base::log(base::LogLevel::kInfo, "pipelines: %llu created without waiting, %llu waited for",
              static_cast<unsigned long long>(dev->pipelines_unasked.load()),
              static_cast<unsigned long long>(dev->pipelines_waited.load()));
  if (dev->timeline_waits_here.load() + dev->timeline_waits_asked.load() > 0)
    base::log(base::LogLevel::kInfo, "timeline waits: %llu answered here, %llu asked of bypassd",
              static_cast<unsigned long long>(dev->timeline_waits_here.load()),
              static_cast<unsigned long long>(dev->timeline_waits_asked.load()));
  for (auto& [key, q] : dev->queues) delete_object(q);
  for (auto& [pool, list] : dev->pool_buffers)
    for (auto* cb : list) delete_object(cb);
  for (auto& [id, m] : dev->memory)
    if (m.map_base) munmap(m.map_base, m.map_size);
  delete_object(dev);
}

static VkQueue get_queue(VkDevice device, uint32_t flags, uint32_t family, uint32_t index,
                         const VkDeviceQueueInfo2* info2) {
  auto* dev = as<Device>(device);
  std::lock_guard lock(dev->mu);
  auto key = std::make_tuple(flags, family, index);
  if (auto it = dev->queues.find(key); it != dev->queues.end()) return reinterpret_cast<VkQueue>(it->second);
  auto* q = new_object<Queue>(dev->conn, VK_OBJECT_TYPE_QUEUE, dev->conn->new_id());
  q->device = dev;
  VkQueue handle = reinterpret_cast<VkQueue>(q);
  if (info2)
    forward_vkGetDeviceQueue2(device, info2, &handle);
  else
    forward_vkGetDeviceQueue(device, family, index, &handle);
  dev->queues[key] = q;
  return handle;
}

VKAPI_ATTR void VKAPI_CALL icd_vkGetDeviceQueue(VkDevice device, uint32_t queueFamilyIndex, uint32_t queueIndex,
                                                VkQueue* pQueue) {
  *pQueue = get_queue(device, 0, queueFamilyIndex, queueIndex, nullptr);
}

VKAPI_ATTR void VKAPI_CALL icd_vkGetDeviceQueue2(VkDevice device, const VkDeviceQueueInfo2* pQueueInfo,
                                                 VkQueue* pQueue) {
  *pQueue = get_queue(device, pQueueInfo->flags, pQueueInfo->queueFamilyIndex, pQueueInfo->queueIndex, pQueueInfo);
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkAllocateCommandBuffers(VkDevice device,
                                                            const VkCommandBufferAllocateInfo* pAllocateInfo,
                                                            VkCommandBuffer* pCommandBuffers) {
  auto* dev = as<Device>(device);
  Connection* conn = dev->conn;
  const uint32_t n = pAllocateInfo->commandBufferCount;
  const uint64_t pool = wire::handle_bits(pAllocateInfo->commandPool);
  std::vector<CommandBuffer*> made(n);
  for (uint32_t i = 0; i < n; ++i) {
    made[i] = new_object<CommandBuffer>(conn, VK_OBJECT_TYPE_COMMAND_BUFFER, conn->new_id());
    made[i]->device = dev;
    made[i]->pool = pool;
    made[i]->secondary = pAllocateInfo->level == VK_COMMAND_BUFFER_LEVEL_SECONDARY;
    pCommandBuffers[i] = reinterpret_cast<VkCommandBuffer>(made[i]);
  }
  {
    std::lock_guard lock(dev->mu);
    auto it = dev->command_pool_copies.find(pool);
    for (auto* cb : made) cb->copies_queries = !cb->secondary && it != dev->command_pool_copies.end() && it->second;
  }
  // Out of memory is all it can answer: not waited for (codegen/data/async_unasked.txt).
  const VkResult result = send_vkAllocateCommandBuffers(device, pAllocateInfo, pCommandBuffers);
  if (result != VK_SUCCESS) {
    for (auto* cb : made) delete_object(cb);
    for (uint32_t i = 0; i < n; ++i) pCommandBuffers[i] = VK_NULL_HANDLE;
    return result;
  }
  std::lock_guard lock(dev->mu);
  auto& list = dev->pool_buffers[pool];
  list.insert(list.end(), made.begin(), made.end());
  return VK_SUCCESS;
}

VKAPI_ATTR void VKAPI_CALL icd_vkFreeCommandBuffers(VkDevice device, VkCommandPool commandPool,
                                                    uint32_t commandBufferCount,
                                                    const VkCommandBuffer* pCommandBuffers) {
  auto* dev = as<Device>(device);
  // Null entries are allowed; the wire carries them as id 0.
  forward_vkFreeCommandBuffers(device, commandPool, commandBufferCount, pCommandBuffers);
  std::lock_guard lock(dev->mu);
  auto& list = dev->pool_buffers[wire::handle_bits(commandPool)];
  for (uint32_t i = 0; i < commandBufferCount; ++i) {
    auto* cb = as<CommandBuffer>(pCommandBuffers[i]);
    if (!cb) continue;
    std::erase(list, cb);
    delete_object(cb);
  }
}

VKAPI_ATTR void VKAPI_CALL icd_vkDestroyCommandPool(VkDevice device, VkCommandPool commandPool,
                                                    const VkAllocationCallbacks*) {
  if (!commandPool) return;
  auto* dev = as<Device>(device);
  forward_vkDestroyCommandPool(device, commandPool, nullptr);
  std::lock_guard lock(dev->mu);
  dev->command_pool_copies.erase(wire::handle_bits(commandPool));
  auto it = dev->pool_buffers.find(wire::handle_bits(commandPool));
  if (it == dev->pool_buffers.end()) return;
  for (auto* cb : it->second) {
    dev->conn->imports().forget(cb->id);  // no record names the pool's command buffers
    delete_object(cb);
  }
  dev->pool_buffers.erase(it);
}

// A primary command buffer ignores pInheritanceInfo, which may then point at anything (dEQP-VK's
// api.command_buffers.bad_inheritance_info_random_data): it is not encoded, nor read.
VKAPI_ATTR VkResult VKAPI_CALL icd_vkBeginCommandBuffer(VkCommandBuffer commandBuffer,
                                                        const VkCommandBufferBeginInfo* pBeginInfo) {
  as<CommandBuffer>(commandBuffer)->forget_queries();  // a begin resets it (queries.cpp)
  if (pBeginInfo->pInheritanceInfo && !as<CommandBuffer>(commandBuffer)->secondary) {
    VkCommandBufferBeginInfo primary = *pBeginInfo;
    primary.pInheritanceInfo = nullptr;
    return forward_vkBeginCommandBuffer(commandBuffer, &primary);
  }
  return forward_vkBeginCommandBuffer(commandBuffer, pBeginInfo);
}

}  // namespace bypass::icd
