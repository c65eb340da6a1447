// Queries in the guest.
//
// Mirrors. vkGetQueryPoolResults is a round trip, and a program that reads its timers every
// frame (ffmpeg's libplacebo chain: 245 calls in 25 frames) then waits, each time, for bypassd to
// run everything batched before the call. So the ICD gives each pool of a type it knows, at the
// pool's first vkGetQueryPoolResults, a mirror: a host-visible buffer of its own, one slot per
// query (values and availability, 64-bit). It notes which queries each command buffer writes (vkCmdWriteTimestamp(2),
// vkCmdEndQuery) and resets, and as a primary command buffer of a graphics or compute family
// ends, it appends a vkCmdCopyQueryPoolResults (waiting, with availability) of the queries it
// wrote into the mirror, and a barrier that makes the copy visible to the host. Each submission
// then stamps its queries with its serial (`QueryPoolInfo::states`). A call for queries that all
// have a submission that copied them, that the completion feedback shows done, and whose slots
// say available, is answered from the mirror with no round trip, with or without
// VK_QUERY_RESULT_WAIT_BIT. Anything else goes to bypassd: queries reset or written since (on
// the host, in a secondary command buffer, by vkCmdEndQueryIndexedEXT), 32-bit results, pools
// of other types, shadow memory (the network path), `BYPASS_QUERY_MIRROR=0`. A query written in
// a multiview render pass writes the queries after it too, which the mirror never claims to
// hold: a query's state changes only with a write or reset the ICD saw.
//
// Not ready. vkGetQueryPoolResults without VK_QUERY_RESULT_WAIT_BIT: a query that is not
// available yet must leave the application's bytes for it as they were (only its availability
// word, when asked, is written). The reply carries the whole buffer the host's driver wrote into,
// which for such a query is not the application's. So the ICD keeps each pool's type and asks
// the host with VK_QUERY_RESULT_WITH_AVAILABILITY_BIT into a buffer of its own, then writes into
// the application's buffer what the driver would have: a query's values when it is available (or
// VK_QUERY_RESULT_PARTIAL_BIT asked for them), its availability when asked. dEQP-VK's
// pipeline.*.timestamp.*host_query_reset* cases found it. With the wait bit every query is
// written, and the call goes through as it is.
#include <algorithm>
#include <bit>
#include <cstring>
#include <map>
#include <vector>

#include "config.h"

#include "objects.h"

namespace bypass::icd {

namespace {

// How many values one query of the pool writes, or 0 where the ICD does not know (then the
// call goes through as it is).
uint32_t values_per_query(const QueryPoolInfo& pool) {
  switch (pool.type) {
    case VK_QUERY_TYPE_OCCLUSION:
    case VK_QUERY_TYPE_TIMESTAMP:
    case VK_QUERY_TYPE_PRIMITIVES_GENERATED_EXT:
      return 1;
    case VK_QUERY_TYPE_PIPELINE_STATISTICS:
      return static_cast<uint32_t>(std::popcount(pool.statistics));
    case VK_QUERY_TYPE_TRANSFORM_FEEDBACK_STREAM_EXT:
      return 2;
    default:
      return 0;
  }
}

}  // namespace

namespace {

constexpr size_t kMaxMirrorBytes = size_t{1} << 20;  // a larger pool gets no mirror

// A mirror for `pool` (its type and count): a transfer-destination buffer on host-visible,
// coherent memory, mapped; set in `pool`. False (no mirror) where the pool's type is unknown,
// the memory is a shadow, or anything fails.
bool make_mirror(Device* dev, VkDevice device, QueryPoolInfo& pool) {
  const uint32_t values = values_per_query(pool);
  if (values == 0 || pool.count == 0 || !config().query_mirror || shadow_memory_enabled() ||
      Connection::endpoint_is_network())
    return false;
  const uint32_t stride = (values + 1) * 8;
  const size_t bytes = size_t{pool.count} * stride;
  if (bytes > kMaxMirrorBytes) return false;
  VkBufferCreateInfo info{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  info.size = bytes;
  info.usage = VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  VkBuffer buffer;
  if (icd_vkCreateBuffer(device, &info, nullptr, &buffer) != VK_SUCCESS) return false;
  VkMemoryRequirements req;
  icd_vkGetBufferMemoryRequirements(device, buffer, &req);
  const auto& props = memory_properties(dev->physical);
  const VkMemoryPropertyFlags want = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
  uint32_t type = props.memoryTypeCount;
  for (uint32_t i = 0; i < props.memoryTypeCount && type == props.memoryTypeCount; ++i)
    if ((req.memoryTypeBits & (1u << i)) && (props.memoryTypes[i].propertyFlags & want) == want) type = i;
  VkMemoryAllocateInfo alloc{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  alloc.allocationSize = req.size;
  alloc.memoryTypeIndex = type;
  VkDeviceMemory memory = VK_NULL_HANDLE;
  void* mapped = nullptr;
  static auto bind = entry<PFN_vkBindBufferMemory>("vkBindBufferMemory");
  if (type == props.memoryTypeCount || icd_vkAllocateMemory(device, &alloc, nullptr, &memory) != VK_SUCCESS ||
      bind(device, buffer, memory, 0) != VK_SUCCESS ||
      icd_vkMapMemory(device, memory, 0, VK_WHOLE_SIZE, 0, &mapped) != VK_SUCCESS) {
    icd_vkDestroyBuffer(device, buffer, nullptr);
    if (memory) icd_vkFreeMemory(device, memory, nullptr);
    return false;
  }
  pool.stride = stride;
  pool.mirror_buffer = buffer;
  pool.mirror_memory = memory;
  pool.mirror = static_cast<const std::byte*>(mapped);
  pool.states.assign(pool.count, {});
  return true;
}

void free_mirror(VkDevice device, const QueryPoolInfo& pool) {
  if (pool.mirror_buffer) icd_vkDestroyBuffer(device, pool.mirror_buffer, nullptr);
  if (pool.mirror_memory) icd_vkFreeMemory(device, pool.mirror_memory, nullptr);
}

// The first vkGetQueryPoolResults of a pool gives it a mirror (only pools the program reads on
// the CPU get one; those it copies on the GPU, as zink does, cost nothing). Made outside the
// device's lock: it makes calls of its own.
void mirror_on_first_read(Device* dev, VkDevice device, VkQueryPool queryPool) {
  QueryPoolInfo made;
  {
    std::lock_guard lock(dev->mu);
    auto it = dev->query_pools.find(wire::handle_bits(queryPool));
    if (it == dev->query_pools.end() || it->second.mirror_tried) return;
    it->second.mirror_tried = true;
    made.type = it->second.type;
    made.statistics = it->second.statistics;
    made.count = it->second.count;
  }
  if (!make_mirror(dev, device, made)) return;
  {
    std::lock_guard lock(dev->mu);
    auto it = dev->query_pools.find(wire::handle_bits(queryPool));
    if (it != dev->query_pools.end()) {
      QueryPoolInfo& pool = it->second;
      pool.stride = made.stride;
      pool.mirror_buffer = made.mirror_buffer;
      pool.mirror_memory = made.mirror_memory;
      pool.mirror = made.mirror;
      pool.states = std::move(made.states);
      return;
    }
  }
  free_mirror(device, made);  // the pool went meanwhile (another thread destroyed it)
}

void note(VkCommandBuffer commandBuffer, VkQueryPool pool, uint32_t first, uint32_t count, bool written) {
  if (!pool || count == 0) return;
  as<CommandBuffer>(commandBuffer)->query_ops.push_back({wire::handle_bits(pool), first, count, written});
}

}  // namespace

VKAPI_ATTR VkResult VKAPI_CALL icd_vkCreateQueryPool(VkDevice device, const VkQueryPoolCreateInfo* pCreateInfo,
                                                     const VkAllocationCallbacks*, VkQueryPool* pQueryPool) {
  auto* dev = as<Device>(device);
  *pQueryPool = wire::handle_from_bits<VkQueryPool>(dev->conn->new_id());  // an asynchronous create
  const VkResult r = forward_vkCreateQueryPool(device, pCreateInfo, nullptr, pQueryPool);
  if (r != VK_SUCCESS) return r;
  QueryPoolInfo pool{pCreateInfo->queryType, pCreateInfo->pipelineStatistics, pCreateInfo->queryCount};
  std::lock_guard lock(dev->mu);
  dev->query_pools[wire::handle_bits(*pQueryPool)] = std::move(pool);
  return r;
}

VKAPI_ATTR void VKAPI_CALL icd_vkDestroyQueryPool(VkDevice device, VkQueryPool queryPool,
                                                  const VkAllocationCallbacks*) {
  forward_vkDestroyQueryPool(device, queryPool, nullptr);
  if (!queryPool) return;
  auto* dev = as<Device>(device);
  QueryPoolInfo pool;
  {
    std::lock_guard lock(dev->mu);
    auto it = dev->query_pools.find(wire::handle_bits(queryPool));
    if (it == dev->query_pools.end()) return;
    pool = std::move(it->second);
    dev->query_pools.erase(it);
  }
  // No submission that copies into it can be pending: the pool's would be too.
  free_mirror(device, pool);
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkCreateCommandPool(VkDevice device, const VkCommandPoolCreateInfo* pCreateInfo,
                                                       const VkAllocationCallbacks*, VkCommandPool* pCommandPool) {
  auto* dev = as<Device>(device);
  *pCommandPool = wire::handle_from_bits<VkCommandPool>(dev->conn->new_id());
  const VkResult r = forward_vkCreateCommandPool(device, pCreateInfo, nullptr, pCommandPool);
  if (r != VK_SUCCESS) return r;
  // vkCmdCopyQueryPoolResults needs a graphics or compute queue, and an unprotected one.
  static auto families =
      entry<PFN_vkGetPhysicalDeviceQueueFamilyProperties>("vkGetPhysicalDeviceQueueFamilyProperties");
  uint32_t n = 0;
  auto* pd = reinterpret_cast<VkPhysicalDevice>(dev->physical);
  families(pd, &n, nullptr);
  std::vector<VkQueueFamilyProperties> props(n);
  families(pd, &n, props.data());
  const uint32_t f = pCreateInfo->queueFamilyIndex;
  const bool copies = f < n && (props[f].queueFlags & (VK_QUEUE_GRAPHICS_BIT | VK_QUEUE_COMPUTE_BIT)) &&
                      !(pCreateInfo->flags & VK_COMMAND_POOL_CREATE_PROTECTED_BIT);
  std::lock_guard lock(dev->mu);
  dev->command_pool_copies[wire::handle_bits(*pCommandPool)] = copies;
  return r;
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkResetCommandPool(VkDevice device, VkCommandPool commandPool,
                                                      VkCommandPoolResetFlags flags) {
  auto* dev = as<Device>(device);
  {
    std::lock_guard lock(dev->mu);
    if (auto it = dev->pool_buffers.find(wire::handle_bits(commandPool)); it != dev->pool_buffers.end())
      for (CommandBuffer* cb : it->second) cb->forget_queries();
  }
  return forward_vkResetCommandPool(device, commandPool, flags);
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkResetCommandBuffer(VkCommandBuffer commandBuffer,
                                                        VkCommandBufferResetFlags flags) {
  as<CommandBuffer>(commandBuffer)->forget_queries();
  return forward_vkResetCommandBuffer(commandBuffer, flags);
}

VKAPI_ATTR void VKAPI_CALL icd_vkCmdWriteTimestamp(VkCommandBuffer commandBuffer, VkPipelineStageFlagBits pipelineStage,
                                                   VkQueryPool queryPool, uint32_t query) {
  note(commandBuffer, queryPool, query, 1, true);
  forward_vkCmdWriteTimestamp(commandBuffer, pipelineStage, queryPool, query);
}

VKAPI_ATTR void VKAPI_CALL icd_vkCmdWriteTimestamp2(VkCommandBuffer commandBuffer, VkPipelineStageFlags2 stage,
                                                    VkQueryPool queryPool, uint32_t query) {
  note(commandBuffer, queryPool, query, 1, true);
  forward_vkCmdWriteTimestamp2(commandBuffer, stage, queryPool, query);
}

VKAPI_ATTR void VKAPI_CALL icd_vkCmdEndQuery(VkCommandBuffer commandBuffer, VkQueryPool queryPool, uint32_t query) {
  note(commandBuffer, queryPool, query, 1, true);
  forward_vkCmdEndQuery(commandBuffer, queryPool, query);
}

VKAPI_ATTR void VKAPI_CALL icd_vkCmdEndQueryIndexedEXT(VkCommandBuffer commandBuffer, VkQueryPool queryPool,
                                                       uint32_t query, uint32_t index) {
  note(commandBuffer, queryPool, query, 1, false);
  forward_vkCmdEndQueryIndexedEXT(commandBuffer, queryPool, query, index);
}

VKAPI_ATTR void VKAPI_CALL icd_vkCmdResetQueryPool(VkCommandBuffer commandBuffer, VkQueryPool queryPool,
                                                   uint32_t firstQuery, uint32_t queryCount) {
  note(commandBuffer, queryPool, firstQuery, queryCount, false);
  forward_vkCmdResetQueryPool(commandBuffer, queryPool, firstQuery, queryCount);
}

// A secondary's queries are not in any mirror (it copies nothing): the primary takes them on as
// changed.
VKAPI_ATTR void VKAPI_CALL icd_vkCmdExecuteCommands(VkCommandBuffer commandBuffer, uint32_t commandBufferCount,
                                                    const VkCommandBuffer* pCommandBuffers) {
  auto* primary = as<CommandBuffer>(commandBuffer);
  for (uint32_t i = 0; i < commandBufferCount; ++i)
    if (auto* secondary = as<CommandBuffer>(pCommandBuffers[i]); secondary && secondary != primary)
      for (QueryOp op : secondary->query_final) {
        op.written = false;
        primary->query_ops.push_back(op);
      }
  forward_vkCmdExecuteCommands(commandBuffer, commandBufferCount, pCommandBuffers);
}

VKAPI_ATTR void VKAPI_CALL icd_vkResetQueryPool(VkDevice device, VkQueryPool queryPool, uint32_t firstQuery,
                                                uint32_t queryCount) {
  forward_vkResetQueryPool(device, queryPool, firstQuery, queryCount);
  auto* dev = as<Device>(device);
  std::lock_guard lock(dev->mu);
  auto it = dev->query_pools.find(wire::handle_bits(queryPool));
  if (it == dev->query_pools.end()) return;
  auto& states = it->second.states;
  for (uint64_t q = firstQuery; q < uint64_t{firstQuery} + queryCount && q < states.size(); ++q) states[q] = {};
}

// The queries the command buffer wrote, copied into their pools' mirrors. Its notes become
// what a submission of it does to the pools' states: every query it touched changed (in order),
// then the ones whose last operation was a write it copied, mirrored.
VKAPI_ATTR VkResult VKAPI_CALL icd_vkEndCommandBuffer(VkCommandBuffer commandBuffer) {
  auto* cb = as<CommandBuffer>(commandBuffer);
  cb->query_final.clear();
  if (cb->query_ops.empty()) return forward_vkEndCommandBuffer(commandBuffer);
  // (pool, query) -> whether its last operation so far is a write the end may copy.
  std::map<std::pair<uint64_t, uint32_t>, bool> last;
  for (const QueryOp& op : cb->query_ops) {
    if (op.count == 1) {
      last[{op.pool, op.first}] = op.written && cb->copies_queries;
      continue;
    }
    auto from = last.lower_bound({op.pool, op.first});
    auto to = last.lower_bound(
        {op.pool, static_cast<uint32_t>(std::min<uint64_t>(uint64_t{op.first} + op.count, UINT32_MAX))});
    last.erase(from, to);
  }
  struct Copy {
    VkQueryPool pool;
    uint32_t first, count;
    VkBuffer buffer;
    uint32_t stride;
  };
  std::vector<Copy> copies;
  std::vector<QueryOp> copied;
  {
    std::lock_guard lock(cb->device->mu);
    for (const auto& [key, write] : last) {
      if (!write) continue;
      auto it = cb->device->query_pools.find(key.first);
      if (it == cb->device->query_pools.end() || !it->second.mirror_buffer || key.second >= it->second.count) continue;
      copied.push_back({key.first, key.second, 1, true});
      if (!copies.empty() && wire::handle_bits(copies.back().pool) == key.first &&
          copies.back().first + copies.back().count == key.second)
        ++copies.back().count;
      else
        copies.push_back({wire::handle_from_bits<VkQueryPool>(key.first), key.second, 1, it->second.mirror_buffer,
                          it->second.stride});
    }
  }
  for (QueryOp op : cb->query_ops) {
    op.written = false;
    cb->query_final.push_back(op);
  }
  cb->query_final.insert(cb->query_final.end(), copied.begin(), copied.end());
  cb->query_ops.clear();
  if (!copies.empty()) {
    static auto copy = entry<PFN_vkCmdCopyQueryPoolResults>("vkCmdCopyQueryPoolResults");
    static auto barrier = entry<PFN_vkCmdPipelineBarrier>("vkCmdPipelineBarrier");
    for (const Copy& c : copies)
      copy(commandBuffer, c.pool, c.first, c.count, c.buffer, VkDeviceSize{c.first} * c.stride, c.stride,
           VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT | VK_QUERY_RESULT_WITH_AVAILABILITY_BIT);
    // Host reads of the mirror come after a fence wait the application made or the feedback
    // block: the copy's writes must be made visible to the host domain.
    const VkMemoryBarrier visible{VK_STRUCTURE_TYPE_MEMORY_BARRIER, nullptr, VK_ACCESS_TRANSFER_WRITE_BIT,
                                  VK_ACCESS_HOST_READ_BIT};
    barrier(commandBuffer, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &visible, 0, nullptr, 0,
            nullptr);
  }
  return forward_vkEndCommandBuffer(commandBuffer);
}

void queries_submitted(Device* dev, const std::vector<CommandBuffer*>& cbs, uint64_t serial) {
  if (std::all_of(cbs.begin(), cbs.end(), [](const CommandBuffer* cb) { return cb->query_final.empty(); })) return;
  std::lock_guard lock(dev->mu);
  for (CommandBuffer* cb : cbs)
    for (const QueryOp& op : cb->query_final) {
      auto it = dev->query_pools.find(op.pool);
      if (it == dev->query_pools.end()) continue;
      auto& states = it->second.states;
      for (uint64_t q = op.first; q < uint64_t{op.first} + op.count && q < states.size(); ++q)
        states[q] = {serial, op.written};
    }
}

namespace {

// The answer from the pool's mirror, when every query of the range has a submission that copied
// it, done by the completion feedback, and its slot says available; false otherwise (bypassd
// answers). 64-bit results only: 32-bit ones wrap or saturate as the driver chooses.
bool answer_from_mirror(Device* dev, VkQueryPool queryPool, uint32_t firstQuery, uint32_t queryCount, size_t dataSize,
                        void* pData, VkDeviceSize stride, VkQueryResultFlags flags) {
  constexpr VkQueryResultFlags kKnown = VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT |
                                        VK_QUERY_RESULT_WITH_AVAILABILITY_BIT | VK_QUERY_RESULT_PARTIAL_BIT;
  if (!(flags & VK_QUERY_RESULT_64_BIT) || (flags & ~kKnown) || queryCount == 0) return false;
  std::lock_guard lock(dev->mu);
  auto it = dev->query_pools.find(wire::handle_bits(queryPool));
  if (it == dev->query_pools.end() || !it->second.mirror) return false;
  const QueryPoolInfo& pool = it->second;
  if (uint64_t{firstQuery} + queryCount > pool.count) return false;
  const uint32_t values = values_per_query(pool);
  // What does not fit the application's buffer is bypassd's to refuse, as it does any call.
  const uint64_t result = (values + ((flags & VK_QUERY_RESULT_WITH_AVAILABILITY_BIT) ? 1 : 0)) * uint64_t{8};
  uint64_t span;
  if (stride % 8 || __builtin_mul_overflow(uint64_t{queryCount - 1}, stride, &span) ||
      __builtin_add_overflow(span, result, &span) || span > dataSize)
    return false;
  for (uint32_t q = firstQuery; q < firstQuery + queryCount; ++q) {
    const QueryPoolInfo::State& st = pool.states[q];
    if (!st.mirrored || seen_by_feedback(dev->conn, st.serial) != ImportTracker::Seen::kDone) return false;
    uint64_t available;
    std::memcpy(&available, pool.mirror + size_t{q} * pool.stride + values * 8, 8);
    if (available == 0) return false;
  }
  auto* out = static_cast<std::byte*>(pData);
  for (uint32_t i = 0; i < queryCount; ++i) {
    std::byte* to = out + size_t{i} * stride;
    std::memcpy(to, pool.mirror + size_t{firstQuery + i} * pool.stride, values * 8);
    if (flags & VK_QUERY_RESULT_WITH_AVAILABILITY_BIT) {
      const uint64_t one = 1;
      std::memcpy(to + values * 8, &one, 8);
    }
  }
  return true;
}

}  // namespace

VKAPI_ATTR VkResult VKAPI_CALL icd_vkGetQueryPoolResults(VkDevice device, VkQueryPool queryPool, uint32_t firstQuery,
                                                         uint32_t queryCount, size_t dataSize, void* pData,
                                                         VkDeviceSize stride, VkQueryResultFlags flags) {
  if (answer_from_mirror(as<Device>(device), queryPool, firstQuery, queryCount, dataSize, pData, stride, flags))
    return VK_SUCCESS;
  mirror_on_first_read(as<Device>(device), device, queryPool);
  uint32_t values = 0;
  if (!(flags & VK_QUERY_RESULT_WAIT_BIT)) {
    auto* dev = as<Device>(device);
    std::lock_guard lock(dev->mu);
    if (auto it = dev->query_pools.find(wire::handle_bits(queryPool)); it != dev->query_pools.end())
      values = values_per_query(it->second);
  }
  if (values == 0 || queryCount == 0)
    return forward_vkGetQueryPoolResults(device, queryPool, firstQuery, queryCount, dataSize, pData, stride, flags);
  const size_t word = flags & VK_QUERY_RESULT_64_BIT ? 8 : 4;
  const size_t ours = (values + 1) * word;  // the values, then the availability word
  std::vector<std::byte> scratch(size_t{queryCount} * ours);
  const VkResult r = forward_vkGetQueryPoolResults(device, queryPool, firstQuery, queryCount, scratch.size(),
                                                   scratch.data(), ours, flags | VK_QUERY_RESULT_WITH_AVAILABILITY_BIT);
  if (r != VK_SUCCESS && r != VK_NOT_READY) return r;
  auto* out = static_cast<std::byte*>(pData);
  for (uint32_t i = 0; i < queryCount; ++i) {
    const std::byte* q = scratch.data() + size_t{i} * ours;
    uint64_t available = 0;
    std::memcpy(&available, q + values * word, word);
    std::byte* to = out + size_t{i} * stride;
    if (available || (flags & VK_QUERY_RESULT_PARTIAL_BIT)) std::memcpy(to, q, values * word);
    if (flags & VK_QUERY_RESULT_WITH_AVAILABILITY_BIT) std::memcpy(to + values * word, q + values * word, word);
  }
  return r;
}

}  // namespace bypass::icd
