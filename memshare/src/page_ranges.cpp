#include "bypass/memshare/page_ranges.h"

#include <algorithm>
#include <cstring>
#include <string>

namespace bypass::memshare {

Result<PageRange> page_span(Range range, uint64_t size) {
  uint64_t length = range.size;
  if (length == Range::kWhole) {
    if (range.offset > size) {
      return make_error(Errc::kOutOfRange, "offset " + std::to_string(range.offset) + " beyond buffer of " +
                                               std::to_string(size) + " bytes");
    }
    length = size - range.offset;
  }
  if (!range_fits(range.offset, length, size)) {
    return make_error(Errc::kOutOfRange, "range [" + std::to_string(range.offset) + ", +" + std::to_string(length) +
                                             ") outside buffer of " + std::to_string(size) + " bytes");
  }
  const uint64_t begin = page_floor(range.offset);
  // The last run may end inside a page when the buffer size is not page aligned.
  const uint64_t end = std::min(page_ceil(range.offset + length), size);
  return PageRange{begin, end - begin};
}

void append_run(std::vector<PageRange>& runs, uint64_t offset, uint64_t size) {
  if (size == 0) return;
  if (!runs.empty() && runs.back().offset + runs.back().size == offset) {
    runs.back().size += size;
  } else {
    runs.push_back(PageRange{offset, size});
  }
}

BarrierStats copy_runs(std::byte* dst, const std::byte* src, std::span<const PageRange> runs) {
  BarrierStats stats;
  for (const PageRange& run : runs) {
    std::memcpy(dst + run.offset, src + run.offset, run.size);
    stats.bytes += run.size;
    stats.pages += (run.size + kPageSize - 1) / kPageSize;
    ++stats.ranges;
  }
  return stats;
}

BarrierStats copy_changed_pages(std::byte* dst, const std::byte* src, PageRange span, uint64_t limit,
                                std::vector<PageRange>* moved) {
  BarrierStats stats;
  uint64_t run_begin = 0;
  uint64_t run_size = 0;
  const uint64_t end = std::min(span.offset + span.size, limit);
  for (uint64_t page = span.offset; page < end; page += kPageSize) {
    const uint64_t n = std::min<uint64_t>(kPageSize, end - page);
    if (std::memcmp(dst + page, src + page, n) != 0) {
      std::memcpy(dst + page, src + page, n);
      stats.bytes += n;
      ++stats.pages;
      if (run_size != 0 && run_begin + run_size == page) {
        run_size += n;
      } else {
        if (run_size != 0) {
          ++stats.ranges;
          if (moved) append_run(*moved, run_begin, run_size);
        }
        run_begin = page;
        run_size = n;
      }
    }
  }
  if (run_size != 0) {
    ++stats.ranges;
    if (moved) append_run(*moved, run_begin, run_size);
  }
  return stats;
}

uint64_t hash_page(const std::byte* data, size_t size) {
  // Four independent multiply-xor chains keep the multiplier busy; each step is a bijection of
  // the word for a fixed state, so a single changed word always changes its lane.
  constexpr uint64_t kMul = 0x9fb21c651e98df25ull;
  uint64_t lane[4] = {0x243f6a8885a308d3ull, 0x13198a2e03707344ull, 0xa4093822299f31d0ull, 0x082efa98ec4e6c89ull};
  size_t i = 0;
  for (; i + 32 <= size; i += 32) {
    uint64_t w[4];
    std::memcpy(w, data + i, sizeof w);
    for (int k = 0; k < 4; ++k) lane[k] = (lane[k] ^ w[k]) * kMul;
  }
  for (; i + 8 <= size; i += 8) {
    uint64_t w;
    std::memcpy(&w, data + i, sizeof w);
    lane[0] = (lane[0] ^ w) * kMul;
  }
  uint64_t h = size;
  for (int k = 0; k < 4; ++k) {
    h ^= lane[k] + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h = (h ^ (h >> 29)) * kMul;
  }
  return h;
}

namespace {
// Hash of the page at `page`, partial last page included (its tail bytes folded in one by one).
uint64_t hash_at(const std::byte* data, uint64_t page, uint64_t buffer_size) {
  const uint64_t n = std::min<uint64_t>(kPageSize, buffer_size - page);
  uint64_t h = hash_page(data + page, n & ~uint64_t{7});
  for (uint64_t t = n & ~uint64_t{7}; t < n; ++t) h = (h ^ static_cast<uint64_t>(data[page + t])) * 0x100000001b3ull;
  return h;
}
}  // namespace

PageHashes::PageHashes(uint64_t size) : size_(size), hashes_((size + kPageSize - 1) / kPageSize, 0) {}

void PageHashes::reset(const std::byte* data) {
  for (uint64_t page = 0; page < size_; page += kPageSize) {
    hashes_[page / kPageSize] = hash_at(data, page, size_);
  }
}

void PageHashes::changed(const std::byte* data, PageRange span, std::vector<PageRange>& out) {
  const uint64_t end = std::min(span.offset + span.size, size_);
  for (uint64_t page = page_floor(span.offset); page < end; page += kPageSize) {
    const uint64_t n = std::min<uint64_t>(kPageSize, size_ - page);
    const uint64_t h = hash_at(data, page, size_);
    uint64_t& seen = hashes_[page / kPageSize];
    if (h != seen) {
      seen = h;
      append_run(out, page, n);
    }
  }
}

void PageHashes::seen(const std::byte* data, PageRange span) {
  const uint64_t end = std::min(span.offset + span.size, size_);
  for (uint64_t page = page_floor(span.offset); page < end; page += kPageSize)
    hashes_[page / kPageSize] = hash_at(data, page, size_);
}

void PageHashes::forget(PageRange span) {
  const uint64_t end = std::min(span.offset + span.size, size_);
  // 0 is what a fresh table holds: no page's hash is expected to be it.
  for (uint64_t page = page_floor(span.offset); page < end; page += kPageSize) hashes_[page / kPageSize] = 0;
}

}  // namespace bypass::memshare
