// Host-visible memory sub-allocated from one region both sides map, so the guest maps it at
// heap + offset and mapped writes need no copy:
//   a VM guest's session: its slot's heap in the shared-memory device (transport/vm.h);
//   a socket session: a memfd the session makes at its first small allocation and sends once
//   (Session::heap_for), so small allocations cost no file, fd or mapping each.
// First fit over a free list; offsets are from the heap's start (the guest has the same heap at
// another address). Thread-safe: blocks go back when the last holder lets go
// (SharedMemory::mapping), which may be a presentation transfer's thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>

namespace bypass::host {

class DeviceHeap {
 public:
  // `owner` keeps the heap's memory mapped (null: someone else does, the VM device's mapping).
  explicit DeviceHeap(std::span<std::byte> heap, std::shared_ptr<void> owner = nullptr)
      : heap_(heap), owner_(std::move(owner)) {
    free_[0] = heap.size();
  }

  std::byte* base() const { return heap_.data(); }
  uint64_t size() const { return heap_.size(); }

  // The offset of `size` bytes aligned to `align` (a power of two), or nullopt when no free
  // range is large enough.
  std::optional<uint64_t> allocate(uint64_t size, uint64_t align);
  void release(uint64_t offset);

 private:
  std::span<std::byte> heap_;
  std::shared_ptr<void> owner_;
  std::mutex mu_;
  std::map<uint64_t, uint64_t> free_;  // offset -> bytes, guarded by mu_
  std::map<uint64_t, uint64_t> used_;  // offset -> bytes, guarded by mu_
};

}  // namespace bypass::host
