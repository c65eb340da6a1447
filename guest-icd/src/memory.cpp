// Device memory. Host-visible memory is a memfd the host created, imported into its driver
// and sent to us: vkMapMemory returns a pointer into the same pages the driver uses, so a
// mapped write needs no copy and no flush beyond what the memory type's coherency says. Small
// allocations (up to 1 MiB by default) are blocks of one such memfd per session instead, the
// small-memory heap, mapped once: bypassd pushes each block's offset before the reply.
//
// VK_KHR_external_memory_fd: memory allocated for export or from an imported fd is the host
// driver's own allocation (host-server/src/memory.cpp). When host-visible, the guest maps the file
// behind the driver's own mapping if bypassd found one (kCtlExternalMemory: lavapipe's memfd),
// and otherwise shadows it like BYPASS_MEMORY=shadow memory: the guest's copy goes to the host
// at submissions and flushes and comes back after waits and at invalidates. The fds are
// the host driver's, passed over the session socket: an exported fd is real memory another
// process (or another instance through bypass) can import on this machine.
//
// VK_EXT_external_memory_host: a guest pointer means nothing to the host's driver, so an import
// (VkImportMemoryHostPointerInfoEXT, which the wire does not carry) is ordinary host-visible
// memory mirroring the application's pages at the barriers (HostPointerMirror in objects.h).
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "bypass/base/log.h"
#include "config.h"
#include "objects.h"

namespace bypass::icd {

namespace {

// Host-visible memory the guest keeps its own copy of (BYPASS_MEMORY=shadow, or pages it cannot
// map): a memshare ShadowRegion of m.size bytes, moved by the connection's barrier hooks.
VkResult make_shadow(Connection* conn, Mapping& m) {
  conn->set_memory_hooks(shadow_hooks());
  auto shadow = memshare::ShadowRegion::create(m.size, config().dirty_tracking);
  if (!shadow) {
    base::log(base::LogLevel::kError, "shadow memory: %s", shadow.error().message.c_str());
    return VK_ERROR_OUT_OF_HOST_MEMORY;
  }
  m.shadow = std::make_shared<memshare::ShadowRegion>(std::move(shadow.value()));
  m.ptr = m.shadow->data();
  return VK_SUCCESS;
}

// Host-visible memory that is a block of a heap both sides map: a VM session's slot heap in the
// shared device, or a socket session's small-memory heap. `placement` is what bypassd pushed
// before the allocation's reply. Shadow memory (BYPASS_MEMORY=shadow) keeps its own copy even
// so, moved by barriers as anywhere.
VkResult map_in_heap(Device* dev, uint64_t id, size_t size, std::span<std::byte> heap, const Reply& placement) {
  Connection* conn = dev->conn;
  Mapping m;
  m.size = size;
  if (shadow_memory_enabled()) {
    // Its copy is made at the first vkMapMemory (map_host_visible says why).
  } else {
    wire::MemoryPlacement r;
    if (placement.size() != sizeof(r)) {
      conn->protocol_error("memory placement: short reply");
      return VK_ERROR_DEVICE_LOST;
    }
    std::memcpy(&r, placement.data(), sizeof(r));
    if (r.offset > heap.size() || r.size > heap.size() - r.offset || r.size < size) {
      conn->protocol_error("memory placement outside the shared heap");
      return VK_ERROR_DEVICE_LOST;
    }
    m.ptr = heap.data() + r.offset;
  }
  std::lock_guard lock(dev->mu);
  dev->memory[id] = std::move(m);
  return VK_SUCCESS;
}

// The guest's view of host-visible memory `id`: the host's pages themselves (a memfd the host
// sent; for external memory, the file behind the driver's mapping when there is one) or a
// shadow copy moved by barriers.
VkResult map_host_visible(Device* dev, uint64_t id, size_t size, bool external) {
  Connection* conn = dev->conn;
  int fd = -1;
  uint64_t file_offset = 0;
  const uint64_t pushed = wire::pushed_seq(wire::kPushMemoryPlacement, id);
  if (!conn->shared_heap().empty() && !external) {
    // A VM session: bypassd pushed the block's placement before the allocation's reply, so it is
    // read already. Taken even for a shadow, which does not need it, so that it is not kept.
    Reply& placement = thread_reply();
    if (!conn->take_pushed(pushed, placement)) return VK_ERROR_DEVICE_LOST;
    return map_in_heap(dev, id, size, conn->shared_heap(), placement);
  }
  if (!external) {
    // A socket session's small allocation is a block of the small-memory heap, told by a pushed
    // placement instead of an fd of its own.
    Reply& placement = thread_reply();
    if (conn->try_take_pushed(pushed, placement)) {
      const std::span<std::byte> heap = conn->small_memory_heap();
      if (heap.empty()) return VK_ERROR_DEVICE_LOST;
      return map_in_heap(dev, id, size, heap, placement);
    }
  }
  if (!external && !Connection::endpoint_carries_fds()) {
    // Over the network the host's pages are reached only through barriers, and the shadow copy
    // is made at the first vkMapMemory (which fetches the contents): memory the guest never maps
    // (images and buffers on a driver whose every type is host-visible, like lavapipe) moves no
    // bytes at barriers.
    Mapping m;
    m.size = size;
    std::lock_guard lock(dev->mu);
    dev->memory[id] = std::move(m);
    return VK_SUCCESS;
  }
  if (!external) {
    fd = conn->take_fd(wire::kFdTagMemoryBase + id);
    if (fd < 0) return VK_ERROR_DEVICE_LOST;
  } else if (!shadow_memory_enabled()) {
    Reply& reply = thread_reply();
    if (!conn->call_raw(wire::kCtlExternalMemory, &id, sizeof(id), reply)) return VK_ERROR_DEVICE_LOST;
    wire::ExternalMemoryReply r;
    if (reply.size() != sizeof(r)) {
      conn->protocol_error("external memory: short reply");
      return VK_ERROR_DEVICE_LOST;
    }
    std::memcpy(&r, reply.data(), sizeof(r));
    if (r.shared) {
      fd = conn->take_fd(wire::kFdTagMemoryBase + id);
      if (fd < 0) return VK_ERROR_DEVICE_LOST;
      file_offset = r.file_offset;
    }
  }
  Mapping m;
  m.size = size;
  if (fd < 0 || shadow_memory_enabled()) {
    // The guest keeps its own copy; the host's pages are reached only through barriers. As over
    // the network, the copy of the driver's own memory is made at the first vkMapMemory (which
    // fetches the contents): memory the application never maps (a 256 MiB image on a driver
    // whose every memory type is host-visible) moves no bytes at barriers.
    if (fd >= 0) close(fd);
    if (external)
      if (VkResult r = make_shadow(conn, m); r != VK_SUCCESS) return r;
  } else {
    // mmap wants a page-aligned offset; the driver's pages may start inside one.
    const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
    const uint64_t skip = file_offset % page;
    m.map_size = size + skip;
    m.map_base =
        mmap(nullptr, m.map_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, static_cast<off_t>(file_offset - skip));
    close(fd);
    if (m.map_base == MAP_FAILED) return VK_ERROR_OUT_OF_HOST_MEMORY;
    m.ptr = static_cast<char*>(m.map_base) + skip;
  }
  std::lock_guard lock(dev->mu);
  dev->memory[id] = std::move(m);
  return VK_SUCCESS;
}

}  // namespace

namespace {

// Memory `id` mirrors the application's pages at `app` (VK_EXT_external_memory_host): their
// contents go into the allocation now, and the connection's barriers keep the two in step.
VkResult mirror_host_pointer(Device* dev, uint64_t id, void* app) {
  Connection* conn = dev->conn;
  auto mirror = std::make_shared<HostPointerMirror>();
  {
    std::lock_guard lock(dev->mu);
    auto it = dev->memory.find(id);
    if (it == dev->memory.end()) return VK_ERROR_OUT_OF_DEVICE_MEMORY;
    Mapping& m = it->second;
    // Memory of a network session is shadowed from its first mapping on: now.
    if (!m.ptr)
      if (VkResult r = make_shadow(conn, m); r != VK_SUCCESS) return r;
    mirror->app = static_cast<std::byte*>(app);
    mirror->memory = static_cast<std::byte*>(m.ptr);
    mirror->size = m.size;
    m.host_pointer = mirror;
  }
  host_pointer_start(*mirror);
  conn->imports().imported(id);
  conn->set_memory_hooks(shadow_hooks());
  return VK_SUCCESS;
}

}  // namespace

VKAPI_ATTR VkResult VKAPI_CALL icd_vkGetMemoryHostPointerPropertiesEXT(
    VkDevice device, VkExternalMemoryHandleTypeFlagBits handleType, const void* pHostPointer,
    VkMemoryHostPointerPropertiesEXT* pMemoryHostPointerProperties) {
  if ((handleType != VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT &&
       handleType != VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_MAPPED_FOREIGN_MEMORY_BIT_EXT) ||
      !pHostPointer)
    return VK_ERROR_INVALID_EXTERNAL_HANDLE;
  // Any host-visible type: the import is such memory, mirrored (see the top of this file).
  const auto& props = memory_properties(as<Device>(device)->physical);
  uint32_t bits = 0;
  for (uint32_t i = 0; i < props.memoryTypeCount; ++i)
    if (props.memoryTypes[i].propertyFlags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT) bits |= 1u << i;
  pMemoryHostPointerProperties->memoryTypeBits = bits;
  return VK_SUCCESS;
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkAllocateMemory(VkDevice device, const VkMemoryAllocateInfo* pAllocateInfo,
                                                    const VkAllocationCallbacks*, VkDeviceMemory* pMemory) {
  auto* dev = as<Device>(device);
  Connection* conn = dev->conn;
  const uint64_t id = conn->new_id();
  VkDeviceMemory handle = wire::handle_from_bits<VkDeviceMemory>(id);
  // The same test as the host's: an import or export makes this the driver's own memory.
  const void* chain = pAllocateInfo->pNext;
  auto* import = wire::find_in_chain<const VkImportMemoryFdInfoKHR>(chain, VK_STRUCTURE_TYPE_IMPORT_MEMORY_FD_INFO_KHR);
  auto* exported =
      wire::find_in_chain<const VkExportMemoryAllocateInfo>(chain, VK_STRUCTURE_TYPE_EXPORT_MEMORY_ALLOCATE_INFO);
  const bool imports = import && import->handleType;
  const bool external = imports || (exported && exported->handleTypes);
  if (imports) {
    if (import->fd < 0 || fcntl(import->fd, F_GETFD) < 0) return VK_ERROR_INVALID_EXTERNAL_HANDLE;
    if (!conn->send_fd(wire::kFdTagImportBase + id, import->fd)) return VK_ERROR_DEVICE_LOST;
  }
  auto* host_import = wire::find_in_chain<const VkImportMemoryHostPointerInfoEXT>(
      chain, VK_STRUCTURE_TYPE_IMPORT_MEMORY_HOST_POINTER_INFO_EXT);
  if (host_import && host_import->handleType) {
    const auto& types = memory_properties(dev->physical);
    const uint32_t t = pAllocateInfo->memoryTypeIndex;
    if (!host_import->pHostPointer || t >= types.memoryTypeCount ||
        !(types.memoryTypes[t].propertyFlags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT))
      return VK_ERROR_INVALID_EXTERNAL_HANDLE;
  }
  const VkResult result = forward_vkAllocateMemory(device, pAllocateInfo, nullptr, &handle);
  if (result != VK_SUCCESS) return result;  // a failed import leaves the fd with the application
  // A successful import owns the fd; the host holds its own duplicate.
  if (imports) close(import->fd);
  const auto& props = memory_properties(dev->physical);
  const uint32_t type = pAllocateInfo->memoryTypeIndex;
  if (type < props.memoryTypeCount && (props.memoryTypes[type].propertyFlags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT)) {
    const VkResult mapped = map_host_visible(dev, id, pAllocateInfo->allocationSize, external);
    if (mapped != VK_SUCCESS) {
      forward_vkFreeMemory(device, handle, nullptr);
      return mapped;
    }
    if (host_import && host_import->handleType) {
      if (VkResult r = mirror_host_pointer(dev, id, host_import->pHostPointer); r != VK_SUCCESS) {
        icd_vkFreeMemory(device, handle, nullptr);
        return r;
      }
    }
    // Memory others may hold too: whatever is bound to it, it may change under us.
    if (external || (host_import && host_import->handleType)) note_binding(dev, id, 0);
  }
  *pMemory = handle;
  return VK_SUCCESS;
}

VKAPI_ATTR void VKAPI_CALL icd_vkFreeMemory(VkDevice device, VkDeviceMemory memory, const VkAllocationCallbacks*) {
  if (!memory) return;
  auto* dev = as<Device>(device);
  forward_vkFreeMemory(device, memory, nullptr);
  std::lock_guard lock(dev->mu);
  auto it = dev->memory.find(wire::handle_bits(memory));
  if (it == dev->memory.end()) return;
  if (auto& mirror = it->second.host_pointer) {
    // A barrier of another thread may be copying it: it finishes first, then sees it gone.
    std::lock_guard mirror_lock(mirror->mu);
    mirror->memory = nullptr;
  }
  if (it->second.map_base) munmap(it->second.map_base, it->second.map_size);
  dev->memory.erase(it);
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkMapMemory(VkDevice device, VkDeviceMemory memory, VkDeviceSize offset,
                                               VkDeviceSize, VkMemoryMapFlags, void** ppData) {
  auto* dev = as<Device>(device);
  const uint64_t id = wire::handle_bits(memory);
  bool fetch = false;
  {
    std::lock_guard lock(dev->mu);
    auto it = dev->memory.find(id);
    if (it == dev->memory.end() || offset > it->second.size) return VK_ERROR_MEMORY_MAP_FAILED;
    if (!it->second.ptr) {
      // Shadowed memory mapped for the first time (map_host_visible): its copy now.
      if (VkResult r = make_shadow(dev->conn, it->second); r != VK_SUCCESS) return r;
      fetch = true;
    }
    // Imported host memory maps to the application's own pages, as natively.
    *ppData = it->second.host_pointer ? static_cast<void*>(it->second.host_pointer->app + offset)
                                      : static_cast<char*>(it->second.ptr) + offset;
  }
  if (fetch) {
    shadow_read_barrier(dev, id, memshare::Range::whole());
    if (!dev->conn->alive()) return VK_ERROR_DEVICE_LOST;
  }
  return VK_SUCCESS;
}

VKAPI_ATTR void VKAPI_CALL icd_vkUnmapMemory(VkDevice, VkDeviceMemory) {
  // The shared mapping stays for the memory's lifetime: the host driver uses the same pages.
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkGetMemoryFdKHR(VkDevice device, const VkMemoryGetFdInfoKHR* pGetFdInfo, int* pFd) {
  Connection* conn = connection_of(device);
  int host_number = -1;
  const VkResult result = forward_vkGetMemoryFdKHR(device, pGetFdInfo, &host_number);
  if (result != VK_SUCCESS) return result;
  // The host sent the driver's fd before its reply.
  const int fd = conn->take_fd(wire::kFdTagExportBase + wire::handle_bits(pGetFdInfo->memory));
  if (fd < 0) return VK_ERROR_DEVICE_LOST;
  *pFd = fd;
  return VK_SUCCESS;
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkGetMemoryFdPropertiesKHR(VkDevice device,
                                                              VkExternalMemoryHandleTypeFlagBits handleType, int fd,
                                                              VkMemoryFdPropertiesKHR* pMemoryFdProperties) {
  Connection* conn = connection_of(device);
  if (fd < 0 || fcntl(fd, F_GETFD) < 0) return VK_ERROR_INVALID_EXTERNAL_HANDLE;
  // The fd argument on the wire is the nonce the host finds the fd under.
  const int nonce = static_cast<int>(conn->new_id() & 0x7fffffff);
  if (!conn->send_fd(wire::kFdTagProbeBase + static_cast<uint32_t>(nonce), fd)) return VK_ERROR_DEVICE_LOST;
  return forward_vkGetMemoryFdPropertiesKHR(device, handleType, nonce, pMemoryFdProperties);
}

// Shared memory: the pages are the driver's own, nothing to move. Shadow memory: a flush is
// a write barrier over the range, an invalidate a read barrier.
static memshare::Range range_of(const VkMappedMemoryRange& r) {
  return memshare::Range{r.offset, r.size == VK_WHOLE_SIZE ? memshare::Range::kWhole : r.size};
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkFlushMappedMemoryRanges(VkDevice device, uint32_t count,
                                                             const VkMappedMemoryRange* ranges) {
  if (!connection_of(device)->memory_hooks()) return VK_SUCCESS;  // no shadowed memory
  for (uint32_t i = 0; i < count; ++i)
    shadow_write_barrier(as<Device>(device), wire::handle_bits(ranges[i].memory), range_of(ranges[i]));
  return connection_of(device)->alive() ? VK_SUCCESS : VK_ERROR_DEVICE_LOST;
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkInvalidateMappedMemoryRanges(VkDevice device, uint32_t count,
                                                                  const VkMappedMemoryRange* ranges) {
  if (!connection_of(device)->memory_hooks()) return VK_SUCCESS;  // no shadowed memory
  for (uint32_t i = 0; i < count; ++i)
    shadow_read_barrier(as<Device>(device), wire::handle_bits(ranges[i].memory), range_of(ranges[i]));
  return connection_of(device)->alive() ? VK_SUCCESS : VK_ERROR_DEVICE_LOST;
}

}  // namespace bypass::icd

// --- Which memory the device may write (Mapping::device_writes) ---

namespace bypass::icd {

bool buffer_usage_read_only(const VkBufferCreateInfo& info) {
  constexpr VkBufferUsageFlags kReads = VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_UNIFORM_TEXEL_BUFFER_BIT |
                                        VK_BUFFER_USAGE_UNIFORM_BUFFER_BIT | VK_BUFFER_USAGE_INDEX_BUFFER_BIT |
                                        VK_BUFFER_USAGE_VERTEX_BUFFER_BIT | VK_BUFFER_USAGE_INDIRECT_BUFFER_BIT;
  // Any chained structure (external memory, a capture address, usage given another way) counts
  // as a way to write.
  return info.pNext == nullptr && (info.usage & ~kReads) == 0;
}

bool image_usage_read_only(const VkImageCreateInfo& info) {
  constexpr VkImageUsageFlags kReads =
      VK_IMAGE_USAGE_TRANSFER_SRC_BIT | VK_IMAGE_USAGE_SAMPLED_BIT | VK_IMAGE_USAGE_INPUT_ATTACHMENT_BIT;
  VkImageUsageFlags usage = info.usage;
  for (auto* p = static_cast<const VkBaseInStructure*>(info.pNext); p; p = p->pNext) {
    if (p->sType == VK_STRUCTURE_TYPE_IMAGE_STENCIL_USAGE_CREATE_INFO) {
      usage |= reinterpret_cast<const VkImageStencilUsageCreateInfo*>(p)->stencilUsage;
    } else if (p->sType != VK_STRUCTURE_TYPE_IMAGE_FORMAT_LIST_CREATE_INFO) {
      return false;
    }
  }
  return (usage & ~kReads) == 0;
}

void note_usage(Device* dev, uint64_t resource, bool read_only) {
  if (!read_only) return;
  std::lock_guard lock(dev->mu);
  dev->read_only_resources.insert(resource);
}

void forget_usage(Device* dev, uint64_t resource) {
  std::lock_guard lock(dev->mu);
  dev->read_only_resources.erase(resource);
}

void note_binding(Device* dev, uint64_t memory, uint64_t resource) {
  std::lock_guard lock(dev->mu);
  if (resource != 0 && dev->read_only_resources.count(resource) != 0) return;
  auto it = dev->memory.find(memory);
  if (it != dev->memory.end()) it->second.device_writes = true;
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkBindBufferMemory(VkDevice device, VkBuffer buffer, VkDeviceMemory memory,
                                                      VkDeviceSize memoryOffset) {
  note_binding(as<Device>(device), wire::handle_bits(memory), wire::handle_bits(buffer));
  return forward_vkBindBufferMemory(device, buffer, memory, memoryOffset);
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkBindImageMemory(VkDevice device, VkImage image, VkDeviceMemory memory,
                                                     VkDeviceSize memoryOffset) {
  note_binding(as<Device>(device), wire::handle_bits(memory), wire::handle_bits(image));
  return forward_vkBindImageMemory(device, image, memory, memoryOffset);
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkBindBufferMemory2(VkDevice device, uint32_t bindInfoCount,
                                                       const VkBindBufferMemoryInfo* pBindInfos) {
  for (uint32_t i = 0; pBindInfos && i < bindInfoCount; ++i)
    note_binding(as<Device>(device), wire::handle_bits(pBindInfos[i].memory), wire::handle_bits(pBindInfos[i].buffer));
  return forward_vkBindBufferMemory2(device, bindInfoCount, pBindInfos);
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkBindImageMemory2(VkDevice device, uint32_t bindInfoCount,
                                                      const VkBindImageMemoryInfo* pBindInfos) {
  for (uint32_t i = 0; pBindInfos && i < bindInfoCount; ++i)
    note_binding(as<Device>(device), wire::handle_bits(pBindInfos[i].memory), wire::handle_bits(pBindInfos[i].image));
  return forward_vkBindImageMemory2(device, bindInfoCount, pBindInfos);
}

VKAPI_ATTR VkResult VKAPI_CALL icd_vkQueueBindSparse(VkQueue queue, uint32_t bindInfoCount,
                                                     const VkBindSparseInfo* pBindInfo, VkFence fence) {
  Device* dev = as<Queue>(queue)->device;
  auto note = [dev](uint32_t count, const VkSparseMemoryBind* binds) {
    for (uint32_t i = 0; binds && i < count; ++i)
      if (binds[i].memory) note_binding(dev, wire::handle_bits(binds[i].memory), 0);
  };
  for (uint32_t i = 0; pBindInfo && i < bindInfoCount; ++i) {
    const VkBindSparseInfo& info = pBindInfo[i];
    for (uint32_t j = 0; info.pBufferBinds && j < info.bufferBindCount; ++j)
      note(info.pBufferBinds[j].bindCount, info.pBufferBinds[j].pBinds);
    for (uint32_t j = 0; info.pImageOpaqueBinds && j < info.imageOpaqueBindCount; ++j)
      note(info.pImageOpaqueBinds[j].bindCount, info.pImageOpaqueBinds[j].pBinds);
    for (uint32_t j = 0; info.pImageBinds && j < info.imageBindCount; ++j) {
      const VkSparseImageMemoryBindInfo& image = info.pImageBinds[j];
      for (uint32_t k = 0; image.pBinds && k < image.bindCount; ++k)
        if (image.pBinds[k].memory) note_binding(dev, wire::handle_bits(image.pBinds[k].memory), 0);
    }
  }
  return forward_vkQueueBindSparse(queue, bindInfoCount, pBindInfo, fence);
}

}  // namespace bypass::icd
