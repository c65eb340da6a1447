// Dirty-page tracking behind one small interface: which pages of a local buffer were written
// since the last time we asked. Three mechanisms, chosen by measurement (see docs/memshare.md):
//   kUffdAsync: userfaultfd write-protect in asynchronous mode plus the PAGEMAP_SCAN ioctl
//               (Linux >= 6.7). The kernel resolves the write fault itself, no signal and no
//               handler thread; one ioctl reads and re-protects the written pages atomically.
//   kMprotect:  pages made read-only; a SIGSEGV handler records the page and unprotects it.
//   kHash:      no write cost at all; collect() hashes every page and compares.
// (Soft-dirty bits are process-wide, clearing them disturbs every other tracker in the
// process, and this kernel is built without them; not offered.)
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "bypass/memshare/error.h"
#include "bypass/memshare/types.h"

namespace bypass::memshare {

enum class TrackingMethod : uint32_t { kAuto = 0, kUffdAsync = 1, kMprotect = 2, kHash = 3 };
std::string_view tracking_method_name(TrackingMethod method);

// Whether `method` works in this process on this kernel (probed once, cached).
bool tracking_available(TrackingMethod method);
// What kAuto picks: kUffdAsync where available, else kMprotect.
TrackingMethod default_tracking_method();

class DirtyTracker {
 public:
  virtual ~DirtyTracker() = default;
  DirtyTracker(const DirtyTracker&) = delete;
  DirtyTracker& operator=(const DirtyTracker&) = delete;

  // Appends to `out` the runs of pages inside `range` (bytes from base(), widened to pages)
  // written since the last collect() that covered them, and re-arms those pages: a write that
  // races with collect() is either in this result or in the next one, never lost. Runs are in
  // ascending order; adjacent pages are merged.
  virtual Result<void> collect(Range range, std::vector<PageRange>& out) = 0;

  virtual TrackingMethod method() const = 0;
  std::byte* base() const { return base_; }
  uint64_t size() const { return size_; }

 protected:
  DirtyTracker(std::byte* base, uint64_t size) : base_(base), size_(size) {}

 private:
  std::byte* base_;
  uint64_t size_;
};

// Starts tracking writes to [base, base + size). `base` must be page aligned and the memory
// must stay mapped (readable and writable) for the tracker's lifetime. Every page starts
// clean. The memory may be anonymous or a shared (memfd) mapping.
Result<std::unique_ptr<DirtyTracker>> make_dirty_tracker(void* base, uint64_t size,
                                                         TrackingMethod method = TrackingMethod::kAuto);

}  // namespace bypass::memshare
