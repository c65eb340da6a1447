// In-process shadow memory with dirty tracking: the building block of the "shadow" mode for
// memory that cannot be shared. Needs no service: the caller moves the bytes (to a second
// mapping, or through a send callback onto a ring or a network stream).
//
//   guest writes -> data()            (tracked)
//   write_barrier(dst | send)         moves only the pages written since the last barrier
//   read_barrier(src) / apply(...)    brings the other side's pages back, untracked
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "bypass/memshare/dirty_tracker.h"
#include "bypass/memshare/error.h"
#include "bypass/memshare/region.h"
#include "bypass/memshare/types.h"

namespace bypass::memshare {

// Thread-safe: barriers of one region from several threads at once (two application threads
// submitting, each with a write barrier over every shadow) run one after the other.
class ShadowRegion {
 public:
  // Called once per contiguous dirty run by write_barrier(send). An error stops the barrier;
  // the runs not yet sent are no longer marked dirty, so the caller treats it as fatal for
  // this memory (or follows with a full copy).
  using SendFn = std::function<Result<void>(uint64_t offset, std::span<const std::byte> bytes)>;

  // Allocates `size` bytes (a private memfd, zero filled) and tracks writes to it. Barrier
  // writes into the shadow go through a second, untracked view of the same memfd.
  static Result<ShadowRegion> create(uint64_t size, TrackingMethod method = TrackingMethod::kAuto);
  // Tracks writes to memory the caller owns and keeps mapped for this object's lifetime
  // (page aligned, read-write).
  static Result<ShadowRegion> wrap(void* base, uint64_t size, TrackingMethod method = TrackingMethod::kAuto);

  ShadowRegion(ShadowRegion&&) noexcept = default;
  ShadowRegion& operator=(ShadowRegion&& other) noexcept;
  ~ShadowRegion();

  std::byte* data() const { return tracker_->base(); }
  uint64_t size() const { return tracker_->size(); }
  TrackingMethod method() const { return tracker_->method(); }

  // Runs of pages in `range` written since the last barrier over them; re-arms them.
  Result<std::vector<PageRange>> collect_dirty(Range range = Range::whole());

  // Write barrier into `dst` (laid out like this region, at least size() bytes).
  Result<BarrierStats> write_barrier(std::byte* dst, Range range = Range::whole());
  // Write barrier through a callback, one call per dirty run.
  Result<BarrierStats> write_barrier(const SendFn& send, Range range = Range::whole());

  // Read barrier from `src` (laid out like this region): afterwards `range` equals src there.
  // Local writes in the range not yet moved by a write barrier are discarded (an invalidate
  // wins). Only pages that differ are written.
  Result<BarrierStats> read_barrier(const std::byte* src, Range range = Range::whole());
  // Writes bytes received from the other side at `offset`, without marking them dirty.
  Result<BarrierStats> apply(uint64_t offset, std::span<const std::byte> bytes);

 private:
  ShadowRegion() = default;
  Result<void> discard(Range range);
  // After bytes came in at `range`: through the alias only hashes saw them; without one (wrap())
  // they went through the tracked view and count as written until discarded.
  Result<void> came_in(Range range) { return alias_.valid() ? tracker_->written_elsewhere(range) : discard(range); }
  std::byte* writable_view() const { return alias_.valid() ? alias_.data() : data(); }

  base::UniqueFd fd_;
  base::Mapping tracked_;  // the view handed out (empty when wrapping caller memory)
  base::Mapping alias_;    // untracked view for barrier writes (create() only)
  std::unique_ptr<DirtyTracker> tracker_;
  std::unique_ptr<std::mutex> mu_ = std::make_unique<std::mutex>();  // the tracker and scratch_
  std::vector<PageRange> scratch_;
};

}  // namespace bypass::memshare
