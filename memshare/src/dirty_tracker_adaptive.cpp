// Adaptive tracking: each 256 KiB chunk is tracked by write faults (userfaultfd, async) or by
// content hashes, whichever its recent collects say is cheaper.
//
// A write fault costs one exception per page written between two collects: nothing for memory
// written here and there, but a staging buffer rewritten whole pays it for every page, and in
// a VM whose page tables the hypervisor shadows a fault costs 10-20 us (an 8192x8192 upload
// through a 64 MiB shadow spent three quarters of its time in faults). Hashing costs a read of
// every page a collect looks at, written or not, and nothing while the program writes.
//
// Each chunk keeps two decayed estimates over the collects that covered it: what its written
// pages would cost in faults, and what looking at its pages costs in hashing. A chunk switches
// when the other way is at least twice as cheap and it has stayed in its way for a while (a
// chunk that switches back soon after waits twice as long before the next switch, so a pattern
// that fools the estimate costs a bounded share). Only chunks a collect covers whole switch.
//
// Switching without losing a write:
//   faults -> hashes: hash the chunk (the baseline), scan the written pages (writes made before
//     the baseline are reported now; any later write changes a hash), then unprotect the pages
//     and make them writable now (otherwise each would still take one plain fault).
//   hashes -> faults: protect the chunk (later writes fault and are recorded), then compare the
//     hashes (writes made before the protection are reported now).
#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>

#include "bypass/memshare/page_ranges.h"
#include "bypass/memshare/region.h"
#include "dirty_tracker_impl.h"

namespace bypass::memshare {

namespace {

using Clock = std::chrono::steady_clock;

double micros_since(Clock::time_point start) {
  return std::chrono::duration<double, std::micro>(Clock::now() - start).count();
}

// Writes one byte to each of `pages` protected pages and hashes them, three times; the best of
// each. Shared memfd pages, as a shadow's are.
TrackingCosts measure_costs() {
  TrackingCosts costs{2.0, 0.5};  // a guess for a machine where the measurement fails
  constexpr uint64_t kPages = 64;
  constexpr uint64_t kBytes = kPages * kPageSize;
  auto fd = create_memfd(kBytes, "memshare-calibrate");
  if (!fd) return costs;
  auto memory = map_memory(fd->get(), 0, kBytes, true);
  if (!memory) return costs;
  std::byte* base = memory->data();
  std::memset(base, 1, kBytes);
  auto wp = detail::UffdWriteProtect::attach(base, kBytes);
  if (!wp) return costs;
  double fault_us = 1e9;
  double hash_us = 1e9;
  uint64_t sink = 0;
  for (int round = 0; round < 3; ++round) {
    if (!(*wp)->protect(0, kBytes)) return costs;
    auto start = Clock::now();
    for (uint64_t p = 0; p < kPages; ++p) static_cast<volatile std::byte*>(base)[p * kPageSize] = std::byte{2};
    fault_us = std::min(fault_us, micros_since(start) / kPages);
    start = Clock::now();
    for (uint64_t p = 0; p < kPages; ++p) sink += hash_page(base + p * kPageSize, kPageSize);
    hash_us = std::min(hash_us, micros_since(start) / kPages);
  }
  static_cast<void>(*static_cast<volatile uint64_t*>(&sink));
  costs.fault_us = std::max(fault_us, 0.05);
  costs.hash_us = std::max(hash_us, 0.01);
  return costs;
}

}  // namespace

const TrackingCosts& tracking_costs() {
  static const TrackingCosts costs = measure_costs();
  return costs;
}

namespace detail {
namespace {

constexpr uint64_t kChunkPages = 64;
constexpr uint64_t kChunkBytes = kChunkPages * kPageSize;
constexpr double kDecay = 0.75;  // the estimates weigh about the last four collects
constexpr double kMargin = 2.0;  // the other way must be this much cheaper
constexpr uint32_t kMinDwell = 2;
constexpr uint32_t kMaxDwell = 1024;

struct Chunk {
  bool hashed = false;
  bool switched_before = false;
  uint32_t since_switch = 0;   // collects that covered the chunk since its last switch
  uint32_t dwell = kMinDwell;  // collects to wait before the next switch
  double fault_us = 0;         // decayed: pages written x the cost of a fault
  double hash_us = 0;          // decayed: pages looked at x the cost of hashing one
};

enum class Move { kStay, kToHashes, kToFaults };

class AdaptiveTracker final : public DirtyTracker {
 public:
  AdaptiveTracker(std::byte* base, uint64_t size, std::unique_ptr<UffdWriteProtect> wp, const TrackingCosts& costs)
      : DirtyTracker(base, size),
        wp_(std::move(wp)),
        hashes_(size),
        chunks_((page_ceil(size) + kChunkBytes - 1) / kChunkBytes),
        costs_(costs) {}

  TrackingMethod method() const override { return TrackingMethod::kAdaptive; }
  uint64_t pages_hashed() const override {
    std::lock_guard lock(mu_);
    return hashed_pages_;
  }

  Result<void> collect(Range range, std::vector<PageRange>& out) override {
    std::lock_guard lock(mu_);
    auto span = page_span(range, size());
    if (!span) return span.error();
    if (span->size == 0) return {};
    const uint64_t begin = span->offset;
    const uint64_t end = span->offset + span->size;
    const uint64_t first = begin / kChunkBytes;
    const uint64_t last = (end - 1) / kChunkBytes;

    // Chunks that switch: the first half of their move, before anything is collected.
    moves_.assign(last - first + 1, Move::kStay);
    for (uint64_t c = first; c <= last; ++c) {
      const Move move = covers_whole(c, begin, end) ? choose(chunks_[c]) : Move::kStay;
      if (move == Move::kToHashes) hashes_.seen(base(), chunk_span(c));
      if (move == Move::kToFaults) {
        if (auto r = wp_->protect(c * kChunkBytes, chunk_length(c)); !r) return r;
      }
      moves_[c - first] = move;
    }

    // Collect, each run of chunks the same way: a chunk moving to hashes is scanned one last
    // time, a chunk moving to faults is compared one last time.
    runs_.clear();
    uint64_t at = begin;
    while (at < end) {
      const bool by_hash = collects_by_hash(at / kChunkBytes, first);
      uint64_t stop = std::min(end, (at / kChunkBytes + 1) * kChunkBytes);
      while (stop < end && collects_by_hash(stop / kChunkBytes, first) == by_hash) {
        stop = std::min(end, stop + kChunkBytes);
      }
      if (by_hash) {
        hashes_.changed(base(), PageRange{at, stop - at}, runs_);
      } else if (auto r = wp_->scan(at, page_ceil(stop) - at, runs_); !r) {
        return r;
      }
      at = stop;
    }

    // The second half of the moves, then the estimates.
    for (uint64_t c = first; c <= last; ++c) {
      const Move move = moves_[c - first];
      if (move == Move::kToHashes) {
        if (auto r = wp_->release(c * kChunkBytes, chunk_length(c)); !r) return r;
      }
      if (move != Move::kStay) switched(c, move == Move::kToHashes);
    }
    account(begin, end, first, last);
    for (const PageRange& run : runs_) append_run(out, run.offset, run.size);
    return {};
  }

  Result<void> rearm(Range range) override {
    std::lock_guard lock(mu_);
    return forget(range, true);
  }
  Result<void> written_elsewhere(Range range) override {
    std::lock_guard lock(mu_);
    return forget(range, false);
  }

 private:
  // Hashed chunks: what they hold now is seen. Chunks on faults: their recorded writes are
  // dropped when `faulted_too` (writes through another view left no record there).
  Result<void> forget(Range range, bool faulted_too) {
    auto span = page_span(range, size());
    if (!span) return span.error();
    const uint64_t end = span->offset + span->size;
    uint64_t at = span->offset;
    runs_.clear();
    while (at < end) {
      const uint64_t stop = std::min(end, (at / kChunkBytes + 1) * kChunkBytes);
      if (chunks_[at / kChunkBytes].hashed) {
        hashes_.seen(base(), PageRange{at, stop - at});
      } else if (faulted_too) {
        if (auto r = wp_->scan(at, page_ceil(stop) - at, runs_); !r) return r;
      }
      at = stop;
    }
    return {};
  }

  PageRange chunk_span(uint64_t c) const {
    const uint64_t from = c * kChunkBytes;
    return PageRange{from, std::min(from + kChunkBytes, size()) - from};
  }

  // The chunk's length in whole pages (the last chunk's ends at the page after size()).
  uint64_t chunk_length(uint64_t c) const { return std::min(kChunkBytes, page_ceil(size()) - c * kChunkBytes); }

  bool covers_whole(uint64_t c, uint64_t begin, uint64_t end) const {
    const PageRange chunk = chunk_span(c);
    return begin <= chunk.offset && end >= chunk.offset + chunk.size;
  }

  Move choose(const Chunk& chunk) const {
    if (chunk.since_switch < chunk.dwell) return Move::kStay;
    if (!chunk.hashed && chunk.fault_us > kMargin * chunk.hash_us) return Move::kToHashes;
    if (chunk.hashed && chunk.hash_us > kMargin * chunk.fault_us) return Move::kToFaults;
    return Move::kStay;
  }

  // Whether this collect reads chunk c by its hashes (first: the first chunk of moves_).
  bool collects_by_hash(uint64_t c, uint64_t first) const {
    switch (moves_[c - first]) {
      case Move::kToHashes:
        return false;
      case Move::kToFaults:
        return true;
      case Move::kStay:
        break;
    }
    return chunks_[c].hashed;
  }

  void switched(uint64_t c, bool to_hashes) {
    Chunk& chunk = chunks_[c];
    // Back again soon after the last switch: the estimate is being fooled; wait longer.
    if (chunk.switched_before && chunk.since_switch < 4 * chunk.dwell) {
      chunk.dwell = std::min(chunk.dwell * 2, kMaxDwell);
    } else {
      chunk.dwell = kMinDwell;
    }
    chunk.switched_before = true;
    chunk.since_switch = 0;
    chunk.hashed = to_hashes;
    const uint64_t pages = (chunk_span(c).size + kPageSize - 1) / kPageSize;
    if (to_hashes) {
      hashed_pages_ += pages;
    } else {
      hashed_pages_ -= pages;
    }
  }

  // Decays and adds this collect to the estimates of every chunk it looked at.
  void account(uint64_t begin, uint64_t end, uint64_t first, uint64_t last) {
    written_.assign(last - first + 1, 0);
    for (const PageRange& run : runs_) {
      for (uint64_t at = run.offset; at < run.offset + run.size;) {
        const uint64_t stop = std::min(run.offset + run.size, (at / kChunkBytes + 1) * kChunkBytes);
        written_[at / kChunkBytes - first] += (stop - at + kPageSize - 1) / kPageSize;
        at = stop;
      }
    }
    for (uint64_t c = first; c <= last; ++c) {
      const PageRange chunk = chunk_span(c);
      const uint64_t from = std::max(begin, chunk.offset);
      const uint64_t to = std::min(end, chunk.offset + chunk.size);
      const double looked_at = static_cast<double>((to - from + kPageSize - 1) / kPageSize);
      Chunk& state = chunks_[c];
      state.fault_us = state.fault_us * kDecay + static_cast<double>(written_[c - first]) * costs_.fault_us;
      state.hash_us = state.hash_us * kDecay + looked_at * costs_.hash_us;
      ++state.since_switch;
    }
  }

  mutable std::mutex mu_;  // everything below: collects may come from several threads at once
  std::unique_ptr<UffdWriteProtect> wp_;
  PageHashes hashes_;  // valid for hashed chunks only
  std::vector<Chunk> chunks_;
  const TrackingCosts costs_;
  uint64_t hashed_pages_ = 0;
  // Per-collect scratch.
  std::vector<Move> moves_;
  std::vector<PageRange> runs_;
  std::vector<uint64_t> written_;
};

}  // namespace

Result<std::unique_ptr<DirtyTracker>> make_adaptive_tracker(std::byte* base, uint64_t size,
                                                            const TrackingCosts& costs) {
  auto wp = UffdWriteProtect::attach(base, size);
  if (!wp) return wp.error();
  return std::unique_ptr<DirtyTracker>(new AdaptiveTracker(base, size, std::move(*wp), costs));
}

}  // namespace detail
}  // namespace bypass::memshare
