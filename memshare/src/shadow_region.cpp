#include "bypass/memshare/shadow_region.h"

#include <cstring>

#include "bypass/memshare/page_ranges.h"

namespace bypass::memshare {

Result<ShadowRegion> ShadowRegion::create(uint64_t size, TrackingMethod method) {
  auto fd = create_memfd(size, "memshare-shadow");
  if (!fd) return fd.error();
  auto tracked = map_memory(fd->get(), 0, size, true);
  if (!tracked) return tracked.error();
  auto alias = map_memory(fd->get(), 0, size, true);
  if (!alias) return alias.error();
  auto tracker = make_dirty_tracker(tracked->data(), size, method);
  if (!tracker) return tracker.error();
  ShadowRegion region;
  region.fd_ = std::move(*fd);
  region.tracked_ = std::move(*tracked);
  region.alias_ = std::move(*alias);
  region.tracker_ = std::move(*tracker);
  return region;
}

Result<ShadowRegion> ShadowRegion::wrap(void* base, uint64_t size, TrackingMethod method) {
  auto tracker = make_dirty_tracker(base, size, method);
  if (!tracker) return tracker.error();
  ShadowRegion region;
  region.tracker_ = std::move(*tracker);
  return region;
}

ShadowRegion& ShadowRegion::operator=(ShadowRegion&& other) noexcept {
  if (this != &other) {
    tracker_.reset();  // stop tracking before the old views go away
    fd_ = std::move(other.fd_);
    tracked_ = std::move(other.tracked_);
    alias_ = std::move(other.alias_);
    tracker_ = std::move(other.tracker_);
    mu_ = std::move(other.mu_);
    scratch_ = std::move(other.scratch_);
  }
  return *this;
}

ShadowRegion::~ShadowRegion() {
  // The tracker must stop before the tracked view goes away.
  tracker_.reset();
}

Result<std::vector<PageRange>> ShadowRegion::collect_dirty(Range range) {
  std::lock_guard lock(*mu_);
  std::vector<PageRange> runs;
  auto r = tracker_->collect(range, runs);
  if (!r) return r.error();
  return runs;
}

Result<BarrierStats> ShadowRegion::write_barrier(std::byte* dst, Range range) {
  std::lock_guard lock(*mu_);
  scratch_.clear();
  auto r = tracker_->collect(range, scratch_);
  if (!r) return r.error();
  return copy_runs(dst, data(), scratch_);
}

Result<BarrierStats> ShadowRegion::write_barrier(const SendFn& send, Range range) {
  std::lock_guard lock(*mu_);
  scratch_.clear();
  auto r = tracker_->collect(range, scratch_);
  if (!r) return r.error();
  BarrierStats stats;
  for (const PageRange& run : scratch_) {
    auto sent = send(run.offset, std::span<const std::byte>(data() + run.offset, run.size));
    if (!sent) return sent.error();
    stats.bytes += run.size;
    stats.pages += (run.size + kPageSize - 1) / kPageSize;
    ++stats.ranges;
  }
  return stats;
}

Result<void> ShadowRegion::discard(Range range) { return tracker_->rearm(range); }

Result<BarrierStats> ShadowRegion::read_barrier(const std::byte* src, Range range) {
  std::lock_guard lock(*mu_);
  auto span = page_span(range, size());
  if (!span) return span.error();
  if (auto r = discard(range); !r) return r.error();
  const BarrierStats stats = copy_changed_pages(writable_view(), src, *span, size());
  if (auto r = came_in(range); !r) return r.error();
  return stats;
}

Result<BarrierStats> ShadowRegion::apply(uint64_t offset, std::span<const std::byte> bytes) {
  if (!range_fits(offset, bytes.size(), size())) {
    return make_error(Errc::kOutOfRange, "apply of " + std::to_string(bytes.size()) + " bytes at " +
                                             std::to_string(offset) + " outside shadow of " + std::to_string(size()));
  }
  std::lock_guard lock(*mu_);
  std::memcpy(writable_view() + offset, bytes.data(), bytes.size());
  if (auto r = came_in(Range{offset, bytes.size()}); !r) return r.error();
  BarrierStats stats;
  stats.bytes = bytes.size();
  stats.pages = bytes.empty() ? 0 : (page_ceil(offset + bytes.size()) - page_floor(offset)) / kPageSize;
  stats.ranges = bytes.empty() ? 0 : 1;
  return stats;
}

}  // namespace bypass::memshare
