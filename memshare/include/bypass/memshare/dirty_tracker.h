// Dirty-page tracking behind one small interface: which pages of a local buffer were written
// since the last time we asked. The mechanisms, chosen by measurement (see docs/memshare.md):
//   kUffdAsync: userfaultfd write-protect in asynchronous mode plus the PAGEMAP_SCAN ioctl
//               (Linux >= 6.7). The kernel resolves the write fault itself, no signal and no
//               handler thread; one ioctl reads and re-protects the written pages atomically.
//               Each page written between two collects costs one fault.
//   kMprotect:  pages made read-only; a SIGSEGV handler records the page and unprotects it.
//   kHash:      no write cost at all; collect() hashes every page and compares.
//   kAdaptive:  kUffdAsync or kHash for each 256 KiB chunk, whichever costs less for how the
//               chunk is written: a staging buffer rewritten whole between collects is hashed
//               (one fault per page costs more than hashing it), memory written here and there
//               takes faults. The costs are measured once per process (tracking_costs()).
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

enum class TrackingMethod : uint32_t { kAuto = 0, kUffdAsync = 1, kMprotect = 2, kHash = 3, kAdaptive = 4 };
std::string_view tracking_method_name(TrackingMethod method);

// Whether `method` works in this process on this kernel (probed once, cached).
bool tracking_available(TrackingMethod method);
// What kAuto picks: kAdaptive where userfaultfd's async write-protect is available, else
// kMprotect.
TrackingMethod default_tracking_method();

// What kAdaptive weighs, measured once per process on first use (a few milliseconds): one
// write fault on a tracked page, and hashing one page, in microseconds.
struct TrackingCosts {
  double fault_us = 0;
  double hash_us = 0;
};
const TrackingCosts& tracking_costs();

// collect(), rearm() and written_elsewhere() may be called from several threads at once.
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

  // Forgets the writes to `range` made so far without reporting them: what the pages hold now
  // counts as clean (bytes a barrier wrote in, local writes an invalidate overrides).
  virtual Result<void> rearm(Range range);
  // Bytes of `range` were written through another mapping of the same pages (a barrier's
  // untracked alias): they are not local writes. Only content hashes see such writes; the
  // others have nothing to do.
  virtual Result<void> written_elsewhere(Range range) {
    static_cast<void>(range);
    return {};
  }

  virtual TrackingMethod method() const = 0;
  // How many pages are tracked by content hashing now (kHash: all; kAdaptive: its hashed chunks).
  virtual uint64_t pages_hashed() const { return 0; }
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
// kAdaptive weighing `costs` instead of the measured ones (tests).
Result<std::unique_ptr<DirtyTracker>> make_adaptive_tracker(void* base, uint64_t size, const TrackingCosts& costs);

}  // namespace bypass::memshare
