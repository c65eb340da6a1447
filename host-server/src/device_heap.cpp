#include "bypass/host/device_heap.h"

#include <iterator>

namespace bypass::host {

std::optional<uint64_t> DeviceHeap::allocate(uint64_t size, uint64_t align) {
  if (size == 0 || size > heap_.size()) return std::nullopt;
  std::lock_guard lock(mu_);
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    const uint64_t start = (it->first + align - 1) & ~(align - 1);
    const uint64_t end = it->first + it->second;
    if (start >= end || end - start < size) continue;
    const uint64_t before = start - it->first, after = end - start - size;
    const uint64_t range_start = it->first;
    free_.erase(it);
    if (before) free_[range_start] = before;
    if (after) free_[start + size] = after;
    used_[start] = size;
    return start;
  }
  return std::nullopt;
}

void DeviceHeap::release(uint64_t offset) {
  std::lock_guard lock(mu_);
  auto used = used_.find(offset);
  if (used == used_.end()) return;
  uint64_t start = offset, size = used->second;
  used_.erase(used);
  // Merge with the free neighbours on both sides.
  auto next = free_.lower_bound(start);
  if (next != free_.end() && next->first == start + size) {
    size += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == start) {
      start = prev->first;
      size += prev->second;
      free_.erase(prev);
    }
  }
  free_[start] = size;
}

}  // namespace bypass::host
