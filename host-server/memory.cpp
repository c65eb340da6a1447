// Device memory: host-visible memory is a memfd shared with the guest and imported into the
// driver as host memory (VK_EXT_external_memory_host), so the guest's vkMapMemory pointer and
// the driver's memory are the same pages: no copy in either direction.
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>

#include "config.h"
#include "session.h"

namespace bypass::host {

namespace {

Session& session(wire::HostContext& c) { return static_cast<Session&>(c); }

void handle_vkAllocateMemory(wire::HostContext& c, wire::Args_vkAllocateMemory& a) {
  Session& s = session(c);
  const uint64_t dev = wire::handle_bits(a.device);
  const DeviceInfo* info = s.device_info(dev);
  const wire::Dispatch& d = s.dispatch_of(dev);
  if (!info) {
    s.fail("vkAllocateMemory", "unknown device");
    return;
  }
  const uint32_t type = a.pAllocateInfo->memoryTypeIndex;
  if (type >= info->memory.memoryTypeCount) {
    a.result = VK_ERROR_OUT_OF_DEVICE_MEMORY;
    return;
  }
  const bool visible = info->memory.memoryTypes[type].propertyFlags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT;
  if (!visible || !info->host_memory_import) {
    wire::default_vkAllocateMemory(c, a);
    return;
  }
  const uint64_t align = std::max<uint64_t>(info->import_alignment, static_cast<uint64_t>(sysconf(_SC_PAGESIZE)));
  const uint64_t want = a.pAllocateInfo->allocationSize;
  if (want == 0 || want > s.config().max_memory_bytes ||
      s.stats().memory_bytes.load() + want > s.config().max_memory_bytes) {
    a.result = VK_ERROR_OUT_OF_DEVICE_MEMORY;
    return;
  }
  const uint64_t size = (want + align - 1) / align * align;
  int fd = memfd_create("bypass-device-memory", MFD_CLOEXEC);
  if (fd < 0 || ftruncate(fd, static_cast<off_t>(size)) != 0) {
    if (fd >= 0) close(fd);
    a.result = VK_ERROR_OUT_OF_HOST_MEMORY;
    return;
  }
  void* ptr = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (ptr == MAP_FAILED) {
    close(fd);
    a.result = VK_ERROR_OUT_OF_HOST_MEMORY;
    return;
  }
  VkImportMemoryHostPointerInfoEXT import{VK_STRUCTURE_TYPE_IMPORT_MEMORY_HOST_POINTER_INFO_EXT};
  import.handleType = VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT;
  import.pHostPointer = ptr;
  import.pNext = a.pAllocateInfo->pNext;
  VkMemoryAllocateInfo alloc = *a.pAllocateInfo;
  alloc.allocationSize = size;
  alloc.pNext = &import;
  a.result = d.vkAllocateMemory(a.device, &alloc, nullptr, a.pMemory);
  if (a.result != VK_SUCCESS) {
    munmap(ptr, size);
    close(fd);
    return;
  }
  const uint64_t mem = wire::handle_bits(*a.pMemory);
  s.add_object(VK_OBJECT_TYPE_DEVICE_MEMORY, a.id_pMemory, mem, dev);
  s.add_memory(mem, SharedMemory{fd, ptr, size});
  // The fd travels before the reply, so the guest finds it when the reply arrives.
  int fds[1] = {fd};
  s.channel().send_fds(wire::kFdTagMemoryBase + a.id_pMemory, fds);
}

}  // namespace

void register_memory_handlers(wire::Handlers& h) { h.vkAllocateMemory = handle_vkAllocateMemory; }

}  // namespace bypass::host
