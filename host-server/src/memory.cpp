// Device memory: host-visible memory is a memfd shared with the guest and imported into the
// driver as host memory (VK_EXT_external_memory_host), so the guest's vkMapMemory pointer and
// the driver's memory are the same pages: no copy in either direction. Small allocations are
// blocks of one memfd per session (the small-memory heap, Session::heap_for), sent once: no
// file, fd or mapping each, and the pages of freed blocks are reused without faulting in again.
//
// Memory the guest exports or imports as an fd (VK_KHR_external_memory_fd) is the driver's
// own allocation instead, since a host-pointer import cannot also be an fd import or export.
// Its fds cross the session socket: vkGetMemoryFdKHR's from the driver to the guest, an
// import's from the guest to the driver. Such memory, when host-visible, is mapped here with
// vkMapMemory; the guest maps the same pages when they are a file it can map (found by
// file_offset_of_mapping), and keeps a shadow copy moved by barriers otherwise
// (guest-icd/src/memory.cpp).
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <optional>

#include "bypass/host/config.h"
#include "bypass/host/session.h"

namespace bypass::host {

namespace {

Session& session(wire::HostContext& c) { return static_cast<Session&>(c); }

// A file the guest can reach and bypassd (or its driver) maps must never change size: a guest
// that truncates it would make the next access here a SIGBUS. Seals do that for memfds (as for
// the session region, transport/src/region.cpp).
constexpr unsigned kResizeSeals = F_SEAL_SHRINK | F_SEAL_GROW;

// A memfd of `size` bytes sealed against resizing and further sealing; -1 on failure. Its name
// shows in /proc/PID/maps of both sides.
int create_sealed_memfd(uint64_t size, const char* name = "bypass-device-memory") {
  int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return -1;
  if (ftruncate(fd, static_cast<off_t>(size)) != 0 || fcntl(fd, F_ADD_SEALS, kResizeSeals | F_SEAL_SEAL) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Whether the pages `fd` names can no longer be resized through any fd: true for what is not
// a regular file (a GPU driver's handle), and for a memfd sealed now or before. A regular file
// that cannot be sealed (a tmpfs file, a memfd made without MFD_ALLOW_SEALING) is false.
bool sealed_against_resize(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) return false;
  if (!S_ISREG(st.st_mode)) return true;
  const int seals = fcntl(fd, F_GET_SEALS);
  if (seals >= 0 && (static_cast<unsigned>(seals) & kResizeSeals) == kResizeSeals) return true;
  return seals >= 0 && fcntl(fd, F_ADD_SEALS, kResizeSeals) == 0;
}

// Drivers read or map what they import: a pipe or socket from the guest could block the
// session in the driver forever (lavapipe reads from the fd), so those never reach it.
bool may_reach_driver(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 && !S_ISFIFO(st.st_mode) && !S_ISSOCK(st.st_mode);
}

// Where the driver's mapping `ptr` of `size` bytes lies in the file `fd` names, if the mapping
// is a shared mapping of that very file (lavapipe's exportable memory is a memfd mapped
// MAP_SHARED): then the guest can map the same pages. Found by matching the mapping's device
// and inode in /proc/self/maps against fstat(fd); any other kind of fd (a GPU driver's
// opaque handle) does not match, and the guest shadows the memory instead.
bool file_offset_of_mapping(int fd, const void* ptr, size_t size, uint64_t* file_offset) {
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return false;
  FILE* maps = std::fopen("/proc/self/maps", "re");
  if (!maps) return false;
  const auto addr = reinterpret_cast<uintptr_t>(ptr);
  bool found = false;
  char line[512];
  while (!found && std::fgets(line, sizeof line, maps)) {
    unsigned long start = 0, end = 0, offset = 0, inode = 0;
    unsigned major = 0, minor = 0;
    char perms[8] = {};
    if (std::sscanf(line, "%lx-%lx %7s %lx %x:%x %lu", &start, &end, perms, &offset, &major, &minor, &inode) != 7)
      continue;
    if (addr < start || addr >= end) continue;
    found = addr + size <= end && perms[3] == 's' && inode == st.st_ino && makedev(major, minor) == st.st_dev;
    if (found) *file_offset = offset + (addr - start);
    break;
  }
  std::fclose(maps);
  return found && *file_offset + size <= static_cast<uint64_t>(st.st_size);
}

// `import`: the fd import, if any; `exported`: the export info, if any (one of the two is set).
void allocate_external(Session& s, wire::Args_vkAllocateMemory& a, VkImportMemoryFdInfoKHR* import,
                       const VkExportMemoryAllocateInfo* exported, bool visible) {
  const uint64_t dev = wire::handle_bits(a.device);
  const wire::Dispatch& d = s.dispatch_of(dev);
  const uint64_t size = a.pAllocateInfo->allocationSize;
  if (visible) s.make_room(size);
  if (visible && s.stats().memory_bytes.load() + size > s.config().max_memory_bytes) {
    a.result = VK_ERROR_OUT_OF_DEVICE_MEMORY;
    return;
  }
  int fd = -1;
  if (import) {
    // The guest sent its fd just before this record; the value in the struct is the guest's.
    fd = s.take_guest_fd(wire::kFdTagImportBase + a.id_pMemory);
    if (fd < 0) {
      s.fail("vkAllocateMemory", "VkImportMemoryFdInfoKHR without its fd on the session socket");
      return;
    }
    // The driver maps the file; the guest keeps its own fd to it.
    if (!may_reach_driver(fd) || !sealed_against_resize(fd)) {
      close(fd);
      a.result = VK_ERROR_INVALID_EXTERNAL_HANDLE;
      return;
    }
    import->fd = fd;
  }
  // The driver owns an imported fd once the import succeeds; this duplicate names the pages.
  int file = import && visible ? dup(fd) : -1;
  a.result = d.vkAllocateMemory(a.device, a.pAllocateInfo, nullptr, a.pMemory);
  if (a.result != VK_SUCCESS) {
    if (fd >= 0) close(fd);  // a failed import leaves the fd with its owner: us
    if (file >= 0) close(file);
    return;
  }
  const uint64_t mem = wire::handle_bits(*a.pMemory);
  s.add_object(VK_OBJECT_TYPE_DEVICE_MEMORY, a.id_pMemory, mem, dev);
  if (!visible) return;
  void* ptr = nullptr;
  if (d.vkMapMemory(a.device, *a.pMemory, 0, VK_WHOLE_SIZE, 0, &ptr) != VK_SUCCESS) {
    spdlog::warn("session {}: vkMapMemory of external host-visible memory failed; the guest cannot map it", s.id());
    if (file >= 0) close(file);
    return;
  }
  SharedMemory shared{-1, ptr, size, 0, true};
  // The fd naming these pages: the imported one's duplicate, or one exported now.
  if (!import && exported && d.vkGetMemoryFdKHR) {
    VkMemoryGetFdInfoKHR get{VK_STRUCTURE_TYPE_MEMORY_GET_FD_INFO_KHR};
    get.memory = *a.pMemory;
    get.handleType =
        exported->handleTypes & VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD_BIT
            ? VK_EXTERNAL_MEMORY_HANDLE_TYPE_OPAQUE_FD_BIT
            : static_cast<VkExternalMemoryHandleTypeFlagBits>(exported->handleTypes & -exported->handleTypes);
    if (d.vkGetMemoryFdKHR(a.device, &get, &file) != VK_SUCCESS) file = -1;
  }
  // The guest maps this file too (kCtlExternalMemory): only once it cannot be resized.
  if (file >= 0 && sealed_against_resize(file) && file_offset_of_mapping(file, ptr, size, &shared.file_offset)) {
    shared.fd = file;
  } else if (file >= 0) {
    close(file);
  }
  spdlog::debug("session {}: external memory {} ({} bytes): {}", s.id(), a.id_pMemory, size,
                shared.fd >= 0 ? "the guest maps the driver's pages" : "the guest shadows the driver's pages");
  s.add_memory(mem, std::move(shared));
}

// Host-visible memory as a block of a heap both sides map (a VM slot's, or a socket session's
// small-memory heap), imported like a memfd's pages. The guest learns the block's offset from a
// MemoryPlacement pushed just before the allocation's reply: no second round trip (across a VM
// boundary every one is polled) and no fd.
void allocate_in_heap(Session& s, wire::Args_vkAllocateMemory& a, const std::shared_ptr<DeviceHeap>& heap,
                      uint64_t offset, uint64_t size) {
  const wire::Dispatch& d = s.dispatch_of(wire::handle_bits(a.device));
  std::byte* ptr = heap->base() + offset;
  VkImportMemoryHostPointerInfoEXT import{VK_STRUCTURE_TYPE_IMPORT_MEMORY_HOST_POINTER_INFO_EXT};
  import.handleType = VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT;
  import.pHostPointer = ptr;
  import.pNext = a.pAllocateInfo->pNext;
  VkMemoryAllocateInfo alloc = *a.pAllocateInfo;
  alloc.allocationSize = size;
  alloc.pNext = &import;
  a.result = d.vkAllocateMemory(a.device, &alloc, nullptr, a.pMemory);
  if (a.result != VK_SUCCESS) {
    heap->release(offset);
    return;
  }
  const uint64_t mem = wire::handle_bits(*a.pMemory);
  s.add_object(VK_OBJECT_TYPE_DEVICE_MEMORY, a.id_pMemory, mem, wire::handle_bits(a.device));
  SharedMemory shared{-1, ptr, size, offset};
  shared.in_heap = true;
  // The block goes back to the heap when the last holder lets go (after vkFreeMemory).
  shared.mapping = std::shared_ptr<void>(ptr, [heap, offset](void*) { heap->release(offset); });
  s.add_memory(mem, std::move(shared));
  const wire::MemoryPlacement placement{offset, size};
  s.send_raw_reply(wire::pushed_seq(wire::kPushMemoryPlacement, a.id_pMemory), wire::kCtlMemoryPlacement, 0, &placement,
                   sizeof(placement));
}

}  // namespace

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
  const void* chain = a.pAllocateInfo->pNext;
  auto* fd_import = wire::find_in_chain<VkImportMemoryFdInfoKHR>(chain, VK_STRUCTURE_TYPE_IMPORT_MEMORY_FD_INFO_KHR);
  auto* exported =
      wire::find_in_chain<VkExportMemoryAllocateInfo>(chain, VK_STRUCTURE_TYPE_EXPORT_MEMORY_ALLOCATE_INFO);
  if ((fd_import && fd_import->handleType) || (exported && exported->handleTypes)) {
    allocate_external(s, a, fd_import && fd_import->handleType ? fd_import : nullptr,
                      exported && exported->handleTypes ? exported : nullptr, visible);
    return;
  }
  if (!visible || !info->host_memory_import) {
    wire::default_vkAllocateMemory(c, a);
    return;
  }
  const uint64_t align = std::max<uint64_t>(info->import_alignment, static_cast<uint64_t>(sysconf(_SC_PAGESIZE)));
  const uint64_t want = a.pAllocateInfo->allocationSize;
  s.make_room(want);
  if (want == 0 || want > s.config().max_memory_bytes ||
      s.stats().memory_bytes.load() + want > s.config().max_memory_bytes) {
    a.result = VK_ERROR_OUT_OF_DEVICE_MEMORY;
    return;
  }
  const uint64_t size = (want + align - 1) / align * align;
  if (const std::shared_ptr<DeviceHeap> heap = s.heap_for(size)) {
    if (const std::optional<uint64_t> offset = heap->allocate(size, align)) {
      allocate_in_heap(s, a, heap, *offset, size);
      return;
    }
    if (s.memory_only_in_heap()) {  // a VM slot's heap is full: the device's memory ran out
      a.result = VK_ERROR_OUT_OF_DEVICE_MEMORY;
      return;
    }
    // The small-memory heap is full: this allocation gets a memfd of its own.
  }
  const int fd = create_sealed_memfd(size);
  if (fd < 0) {
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
  if (s.send_fds(wire::kFdTagMemoryBase + a.id_pMemory, fds) != transport::Status::kOk) {
    // The guest would wait for an fd that never comes: the session cannot go on. The memory is
    // in the session's table already and is freed with it.
    s.fail("vkAllocateMemory", "cannot send the memory's fd to the guest");
  }
}

std::shared_ptr<DeviceHeap> Session::heap_for(uint64_t bytes) {
  if (memory_only_in_heap()) return heap_;
  if (bytes > config_.small_memory_max()) return nullptr;
  if (heap_tried_) return heap_;
  heap_tried_ = true;
  // A session bypass-grpcd relays (it names them "grpc ..."; a guest that claims so only loses
  // the heap) is a network guest's: no fd reaches it, it shadows its memory.
  if (channel_.peer_hello().peer_name.starts_with("grpc ")) return nullptr;
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const uint64_t size = config_.small_memory_heap_bytes / page * page;
  if (size == 0) return nullptr;
  const int fd = create_sealed_memfd(size, "bypass-small-memory");
  if (fd < 0) return nullptr;
  void* base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    close(fd);
    return nullptr;
  }
  // Sent once, before the first placement in it; the guest maps it whole.
  const int fds[1] = {fd};
  const bool sent = send_fds(wire::kFdTagSmallMemoryHeap, fds) == transport::Status::kOk;
  close(fd);
  if (!sent) {
    munmap(base, size);
    return nullptr;
  }
  std::shared_ptr<void> owner(base, [size](void* p) { munmap(p, size); });
  heap_ = std::make_shared<DeviceHeap>(std::span<std::byte>(static_cast<std::byte*>(base), size), std::move(owner));
  spdlog::debug("session {}: small-memory heap of {} bytes", id_, size);
  return heap_;
}

void handle_vkGetMemoryFdKHR(wire::HostContext& c, wire::Args_vkGetMemoryFdKHR& a) {
  Session& s = session(c);
  auto fn = s.dispatch_of(wire::handle_bits(a.device)).vkGetMemoryFdKHR;
  if (!fn) {
    s.decode.fail("vkGetMemoryFdKHR", "not supported by the host driver", wire::Fault::kDriver);
    return;
  }
  int fd = -1;
  a.result = fn(a.device, a.pGetFdInfo, &fd);
  *a.pFd = -1;  // a host fd number means nothing to the guest
  if (a.result != VK_SUCCESS) return;
  if (fd < 0) {  // memory allocated without export info: the driver had nothing to give
    a.result = VK_ERROR_TOO_MANY_OBJECTS;
    return;
  }
  // The driver maps these pages in bypassd: the guest's fd must not be able to shrink them.
  if (!sealed_against_resize(fd)) {
    close(fd);
    a.result = VK_ERROR_TOO_MANY_OBJECTS;
    return;
  }
  // Sent before the reply, so the guest finds it when the reply arrives.
  const uint64_t id = c.decode.handles->to_wire(VK_OBJECT_TYPE_DEVICE_MEMORY, wire::handle_bits(a.pGetFdInfo->memory));
  int fds[1] = {fd};
  if (s.send_fds(wire::kFdTagExportBase + id, fds) != transport::Status::kOk) a.result = VK_ERROR_TOO_MANY_OBJECTS;
  close(fd);
}

void handle_vkGetMemoryFdPropertiesKHR(wire::HostContext& c, wire::Args_vkGetMemoryFdPropertiesKHR& a) {
  Session& s = session(c);
  // The guest's fd argument is the nonce its fd was sent with.
  const int fd = s.take_guest_fd(wire::kFdTagProbeBase + static_cast<uint32_t>(a.fd));
  if (fd < 0) {
    s.fail("vkGetMemoryFdPropertiesKHR", "no fd on the session socket");
    return;
  }
  auto fn = s.dispatch_of(wire::handle_bits(a.device)).vkGetMemoryFdPropertiesKHR;
  a.result = fn && may_reach_driver(fd) ? fn(a.device, a.handleType, fd, a.pMemoryFdProperties)
                                        : VK_ERROR_INVALID_EXTERNAL_HANDLE;
  close(fd);
}

}  // namespace bypass::host
