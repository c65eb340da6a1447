// Private: the DirtyTracker implementations, and the userfaultfd machinery two of them share.
#pragma once

#include <memory>
#include <vector>

#include "bypass/base/unique_fd.h"
#include "bypass/memshare/dirty_tracker.h"

namespace bypass::memshare::detail {

bool uffd_async_probe();
Result<std::unique_ptr<DirtyTracker>> make_uffd_tracker(std::byte* base, uint64_t size);
Result<std::unique_ptr<DirtyTracker>> make_mprotect_tracker(std::byte* base, uint64_t size);
Result<std::unique_ptr<DirtyTracker>> make_hash_tracker(std::byte* base, uint64_t size);
Result<std::unique_ptr<DirtyTracker>> make_adaptive_tracker(std::byte* base, uint64_t size, const TrackingCosts& costs);

// userfaultfd write-protect in asynchronous mode over [base, base + size): the kernel resolves
// a write to a protected page itself and remembers that it was written; PAGEMAP_SCAN reads and
// re-protects those pages in one ioctl. Offsets are from base; lengths are whole pages (the
// last may run past size to the page boundary).
class UffdWriteProtect {
 public:
  // Registers the range and protects every page (unpopulated ones get markers).
  static Result<std::unique_ptr<UffdWriteProtect>> attach(std::byte* base, uint64_t size);
  ~UffdWriteProtect();
  UffdWriteProtect(const UffdWriteProtect&) = delete;
  UffdWriteProtect& operator=(const UffdWriteProtect&) = delete;

  // Appends the runs of [offset, offset + length) written since they were last protected,
  // clipped to size, and protects them again.
  Result<void> scan(uint64_t offset, uint64_t length, std::vector<PageRange>& out);
  // Protects the pages: the next write to each is recorded (and costs a fault).
  Result<void> protect(uint64_t offset, uint64_t length);
  // Unprotects the pages and makes them writable now (MADV_POPULATE_WRITE), so writes to them
  // stop faulting: without that, a shared mapping's pages stay read-only in the page table
  // and the next write to each still takes a (plain) fault.
  Result<void> release(uint64_t offset, uint64_t length);

 private:
  UffdWriteProtect(std::byte* base, uint64_t size, base::UniqueFd uffd, base::UniqueFd pagemap)
      : base_(base), size_(size), uffd_(std::move(uffd)), pagemap_(std::move(pagemap)) {}
  Result<void> write_protect(uint64_t offset, uint64_t length, bool on);

  std::byte* base_;
  uint64_t size_;
  base::UniqueFd uffd_;
  base::UniqueFd pagemap_;
};

}  // namespace bypass::memshare::detail
