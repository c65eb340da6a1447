#include "bypass/memshare/dirty_tracker.h"

#include <cstdint>
#include <mutex>

#include "dirty_tracker_impl.h"

namespace bypass::memshare {

std::string_view tracking_method_name(TrackingMethod method) {
  switch (method) {
    case TrackingMethod::kAuto:
      return "auto";
    case TrackingMethod::kUffdAsync:
      return "uffd-wp-async";
    case TrackingMethod::kMprotect:
      return "mprotect";
    case TrackingMethod::kHash:
      return "hash";
    case TrackingMethod::kAdaptive:
      return "adaptive";
  }
  return "unknown";
}

bool tracking_available(TrackingMethod method) {
  switch (method) {
    case TrackingMethod::kAuto:
      return true;
    case TrackingMethod::kUffdAsync:
    case TrackingMethod::kAdaptive: {
      static const bool available = detail::uffd_async_probe();
      return available;
    }
    case TrackingMethod::kMprotect:
      return true;
    case TrackingMethod::kHash:
      return true;
  }
  return false;
}

TrackingMethod default_tracking_method() {
  return tracking_available(TrackingMethod::kAdaptive) ? TrackingMethod::kAdaptive : TrackingMethod::kMprotect;
}

Result<void> DirtyTracker::rearm(Range range) {
  std::vector<PageRange> dropped;
  return collect(range, dropped);
}

namespace {
Result<void> check_tracked(void* base, uint64_t size) {
  if (base == nullptr || reinterpret_cast<uintptr_t>(base) % kPageSize != 0) {
    return make_error(Errc::kInvalidArgument, "tracked memory must start on a page boundary");
  }
  if (size == 0 || size > (uint64_t{1} << 46)) return make_error(Errc::kInvalidArgument, "tracked size out of bounds");
  return {};
}
constexpr const char* kNoUffd = "userfaultfd async write-protect with PAGEMAP_SCAN is not available";
}  // namespace

Result<std::unique_ptr<DirtyTracker>> make_adaptive_tracker(void* base, uint64_t size, const TrackingCosts& costs) {
  if (auto r = check_tracked(base, size); !r) return r.error();
  if (!tracking_available(TrackingMethod::kAdaptive)) return make_error(Errc::kUnsupported, kNoUffd);
  return detail::make_adaptive_tracker(static_cast<std::byte*>(base), size, costs);
}

Result<std::unique_ptr<DirtyTracker>> make_dirty_tracker(void* base, uint64_t size, TrackingMethod method) {
  if (auto r = check_tracked(base, size); !r) return r.error();
  if (method == TrackingMethod::kAuto) method = default_tracking_method();
  auto* bytes = static_cast<std::byte*>(base);
  switch (method) {
    case TrackingMethod::kUffdAsync:
      if (!tracking_available(method)) return make_error(Errc::kUnsupported, kNoUffd);
      return detail::make_uffd_tracker(bytes, size);
    case TrackingMethod::kMprotect:
      return detail::make_mprotect_tracker(bytes, size);
    case TrackingMethod::kHash:
      return detail::make_hash_tracker(bytes, size);
    case TrackingMethod::kAdaptive:
      return make_adaptive_tracker(base, size, tracking_costs());
    case TrackingMethod::kAuto:
      break;
  }
  return make_error(Errc::kInvalidArgument, "unknown tracking method");
}

}  // namespace bypass::memshare
