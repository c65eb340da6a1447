// Page-run arithmetic and the copies every barrier is made of.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "bypass/memshare/error.h"
#include "bypass/memshare/types.h"

namespace bypass::memshare {

inline uint64_t page_floor(uint64_t v) { return v & ~uint64_t{kPageSize - 1}; }
// Rounds up; the caller makes sure v + kPageSize - 1 does not overflow (sizes are bounded).
inline uint64_t page_ceil(uint64_t v) { return page_floor(v + kPageSize - 1); }

// Clamps `range` to a buffer of `size` bytes (Range::kWhole means to the end) and widens it to
// whole pages (the last run ends at `size` when size is not page aligned). kOutOfRange when
// the range does not lie inside the buffer.
Result<PageRange> page_span(Range range, uint64_t size);

// Appends [offset, offset + size) to `runs`, merging with the last run when adjacent.
void append_run(std::vector<PageRange>& runs, uint64_t offset, uint64_t size);

// Copies each run from src to dst (both laid out like the buffer). Runs must lie inside
// `limit` bytes (checked by the caller).
BarrierStats copy_runs(std::byte* dst, const std::byte* src, std::span<const PageRange> runs);

// Copies the pages of `span` that differ between src and dst; appends the copied runs to
// `moved` when given. `limit` is the buffer size (the last page may be partial).
BarrierStats copy_changed_pages(std::byte* dst, const std::byte* src, PageRange span, uint64_t limit,
                                std::vector<PageRange>* moved = nullptr);

// A 64-bit hash of `size` bytes (a multiple of 8, at most kPageSize), fast enough to run over
// whole buffers at memory speed. Any change of a single 8-byte word changes the hash.
uint64_t hash_page(const std::byte* data, size_t size);

// Per-page content hashes of a buffer: tells which pages changed since they were last seen.
// The read direction of a barrier uses this where the writer cannot be tracked (the device or
// the driver writes host memory), e.g. on the host before sending pages back over a network.
class PageHashes {
 public:
  explicit PageHashes(uint64_t size);
  // Records the current contents of every page without reporting anything.
  void reset(const std::byte* data);
  // Appends the runs of `span` whose contents changed since last seen, and remembers the new
  // contents.
  void changed(const std::byte* data, PageRange span, std::vector<PageRange>& out);
  // Records the current contents of the pages of `span` without reporting anything.
  void seen(const std::byte* data, PageRange span);
  // The pages of `span` count as changed next time, whatever they hold then.
  void forget(PageRange span);
  uint64_t size() const { return size_; }

 private:
  uint64_t size_;
  std::vector<uint64_t> hashes_;
};

}  // namespace bypass::memshare
