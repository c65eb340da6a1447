// Content hashing: writes cost nothing; collect() reads every page of the range.
#include <mutex>

#include "bypass/memshare/page_ranges.h"
#include "dirty_tracker_impl.h"

namespace bypass::memshare::detail {
namespace {

class HashTracker final : public DirtyTracker {
 public:
  HashTracker(std::byte* base, uint64_t size) : DirtyTracker(base, size), hashes_(size) { hashes_.reset(base); }

  TrackingMethod method() const override { return TrackingMethod::kHash; }
  uint64_t pages_hashed() const override { return page_ceil(size()) / kPageSize; }

  Result<void> rearm(Range range) override {
    auto span = page_span(range, size());
    if (!span) return span.error();
    std::lock_guard lock(mu_);
    hashes_.seen(base(), *span);
    return {};
  }
  Result<void> written_elsewhere(Range range) override { return rearm(range); }

  Result<void> collect(Range range, std::vector<PageRange>& out) override {
    auto span = page_span(range, size());
    if (!span) return span.error();
    std::lock_guard lock(mu_);
    hashes_.changed(base(), *span, out);
    return {};
  }

 private:
  std::mutex mu_;  // collects may come from several threads at once
  PageHashes hashes_;
};

}  // namespace

Result<std::unique_ptr<DirtyTracker>> make_hash_tracker(std::byte* base, uint64_t size) {
  return std::unique_ptr<DirtyTracker>(new HashTracker(base, size));
}

}  // namespace bypass::memshare::detail
