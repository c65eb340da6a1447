// Device memory. Host-visible memory is a memfd the host created, imported into its driver
// and sent to us: vkMapMemory returns a pointer into the same pages the driver uses, so a
// mapped write needs no copy and no flush beyond what the memory type's coherency says.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>

#include "objects.h"

namespace bypass::icd {

VKAPI_ATTR VkResult VKAPI_CALL bypass_hw_vkAllocateMemory(VkDevice device, const VkMemoryAllocateInfo* pAllocateInfo,
                                                   const VkAllocationCallbacks*, VkDeviceMemory* pMemory) {
  auto* dev = as<Device>(device);
  Connection* conn = dev->conn;
  const uint64_t id = conn->new_id();
  VkDeviceMemory handle = wire::handle_from_bits<VkDeviceMemory>(id);
  const VkResult result = forward_vkAllocateMemory(device, pAllocateInfo, nullptr, &handle);
  if (result != VK_SUCCESS) return result;
  const auto& props = memory_properties(dev->physical);
  const uint32_t type = pAllocateInfo->memoryTypeIndex;
  if (type < props.memoryTypeCount && (props.memoryTypes[type].propertyFlags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT)) {
    int fd = conn->take_fd(wire::kFdTagMemoryBase + id);
    if (fd < 0) return VK_ERROR_DEVICE_LOST;
    const size_t size = pAllocateInfo->allocationSize;
    Mapping m;
    m.size = size;
    if (shadow_memory_enabled()) {
      // The guest keeps its own copy; the host's pages are reached only through barriers.
      close(fd);
      auto shadow = memshare::ShadowRegion::create(size);
      if (!shadow) {
        std::fprintf(stderr, "bypass: shadow memory: %s\n", shadow.error().message.c_str());
        return VK_ERROR_OUT_OF_HOST_MEMORY;
      }
      m.shadow = std::make_shared<memshare::ShadowRegion>(std::move(shadow.value()));
      m.ptr = m.shadow->data();
    } else {
      m.ptr = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      close(fd);
      if (m.ptr == MAP_FAILED) return VK_ERROR_OUT_OF_HOST_MEMORY;
    }
    std::lock_guard lock(dev->mu);
    dev->memory[id] = std::move(m);
  }
  *pMemory = handle;
  return VK_SUCCESS;
}

VKAPI_ATTR void VKAPI_CALL bypass_hw_vkFreeMemory(VkDevice device, VkDeviceMemory memory, const VkAllocationCallbacks*) {
  if (!memory) return;
  auto* dev = as<Device>(device);
  forward_vkFreeMemory(device, memory, nullptr);
  std::lock_guard lock(dev->mu);
  auto it = dev->memory.find(wire::handle_bits(memory));
  if (it == dev->memory.end()) return;
  if (!it->second.shadow) munmap(it->second.ptr, it->second.size);
  dev->memory.erase(it);
}

VKAPI_ATTR VkResult VKAPI_CALL bypass_hw_vkMapMemory(VkDevice device, VkDeviceMemory memory, VkDeviceSize offset, VkDeviceSize,
                                              VkMemoryMapFlags, void** ppData) {
  auto* dev = as<Device>(device);
  std::lock_guard lock(dev->mu);
  auto it = dev->memory.find(wire::handle_bits(memory));
  if (it == dev->memory.end() || offset > it->second.size) return VK_ERROR_MEMORY_MAP_FAILED;
  *ppData = static_cast<char*>(it->second.ptr) + offset;
  return VK_SUCCESS;
}

VKAPI_ATTR void VKAPI_CALL bypass_hw_vkUnmapMemory(VkDevice, VkDeviceMemory) {
  // The shared mapping stays for the memory's lifetime: the host driver uses the same pages.
}

// Shared memory: the pages are the driver's own, nothing to move. Shadow memory: a flush is
// a write barrier over the range, an invalidate a read barrier.
static memshare::Range range_of(const VkMappedMemoryRange& r) {
  return memshare::Range{r.offset, r.size == VK_WHOLE_SIZE ? memshare::Range::kWhole : r.size};
}

VKAPI_ATTR VkResult VKAPI_CALL bypass_hw_vkFlushMappedMemoryRanges(VkDevice device, uint32_t count,
                                                                   const VkMappedMemoryRange* ranges) {
  if (!shadow_memory_enabled()) return VK_SUCCESS;
  for (uint32_t i = 0; i < count; ++i)
    shadow_write_barrier(as<Device>(device), wire::handle_bits(ranges[i].memory), range_of(ranges[i]));
  return connection_of(device)->alive() ? VK_SUCCESS : VK_ERROR_DEVICE_LOST;
}

VKAPI_ATTR VkResult VKAPI_CALL bypass_hw_vkInvalidateMappedMemoryRanges(VkDevice device, uint32_t count,
                                                                        const VkMappedMemoryRange* ranges) {
  if (!shadow_memory_enabled()) return VK_SUCCESS;
  for (uint32_t i = 0; i < count; ++i)
    shadow_read_barrier(as<Device>(device), wire::handle_bits(ranges[i].memory), range_of(ranges[i]));
  return connection_of(device)->alive() ? VK_SUCCESS : VK_ERROR_DEVICE_LOST;
}

}  // namespace bypass::icd
