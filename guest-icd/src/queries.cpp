// vkGetQueryPoolResults without VK_QUERY_RESULT_WAIT_BIT: a query that is not available yet must
// leave the application's bytes for it as they were (only its availability word, when asked,
// is written). The reply carries the whole buffer the host's driver wrote into, which for such
// a query is not the application's. So the ICD keeps each pool's type and asks the host with
// VK_QUERY_RESULT_WITH_AVAILABILITY_BIT into a buffer of its own, then writes into the
// application's buffer what the driver would have: a query's values when it is available (or
// VK_QUERY_RESULT_PARTIAL_BIT asked for them), its availability when asked. dEQP-VK's
// pipeline.*.timestamp.*host_query_reset* cases found it. With the wait bit every query is
// written, and the call goes through as it is.
#include <bit>
#include <cstring>
#include <vector>

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

VKAPI_ATTR VkResult VKAPI_CALL icd_vkCreateQueryPool(VkDevice device, const VkQueryPoolCreateInfo* pCreateInfo,
                                                     const VkAllocationCallbacks*, VkQueryPool* pQueryPool) {
  auto* dev = as<Device>(device);
  *pQueryPool = wire::handle_from_bits<VkQueryPool>(dev->conn->new_id());  // an asynchronous create
  const VkResult r = forward_vkCreateQueryPool(device, pCreateInfo, nullptr, pQueryPool);
  if (r == VK_SUCCESS) {
    std::lock_guard lock(dev->mu);
    dev->query_pools[wire::handle_bits(*pQueryPool)] =
        QueryPoolInfo{pCreateInfo->queryType, pCreateInfo->pipelineStatistics};
  }
  return r;
}

VKAPI_ATTR void VKAPI_CALL icd_vkDestroyQueryPool(VkDevice device, VkQueryPool queryPool,
                                                  const VkAllocationCallbacks*) {
  forward_vkDestroyQueryPool(device, queryPool, nullptr);
  if (!queryPool) return;
  auto* dev = as<Device>(device);
  std::lock_guard lock(dev->mu);
  dev->query_pools.erase(wire::handle_bits(queryPool));
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkGetQueryPoolResults(VkDevice device, VkQueryPool queryPool, uint32_t firstQuery,
                                                         uint32_t queryCount, size_t dataSize, void* pData,
                                                         VkDeviceSize stride, VkQueryResultFlags flags) {
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
