// userfaultfd write-protect in asynchronous mode (UFFD_FEATURE_WP_ASYNC, Linux 6.7) read back
// with the PAGEMAP_SCAN ioctl. Debian 12's headers predate both, so the ABI constants are
// spelled out here when missing; the probe decides at run time whether the kernel has them.
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#include "bypass/base/unique_fd.h"
#include "bypass/memshare/page_ranges.h"
#include "dirty_tracker_impl.h"

#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

#ifndef PAGEMAP_SCAN
struct page_region {
  __u64 start;
  __u64 end;
  __u64 categories;
};
struct pm_scan_arg {
  __u64 size;
  __u64 flags;
  __u64 start;
  __u64 end;
  __u64 walk_end;
  __u64 vec;
  __u64 vec_len;
  __u64 max_pages;
  __u64 category_inverted;
  __u64 category_mask;
  __u64 category_anyof_mask;
  __u64 return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#define PM_SCAN_WP_MATCHING (1 << 0)
#define PM_SCAN_CHECK_WPASYNC (1 << 1)
#define PAGE_IS_WPALLOWED (1 << 0)
#define PAGE_IS_WRITTEN (1 << 1)
#endif

namespace bypass::memshare::detail {
namespace {

constexpr __u64 kFeatures = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED | UFFD_FEATURE_WP_HUGETLBFS_SHMEM;

// A userfaultfd with async write-protect enabled. User-mode-only is tried first: it is what an
// unprivileged process may open when vm.unprivileged_userfaultfd is 0, and async write faults
// are resolved by the kernel whatever mode the fault came from.
Result<base::UniqueFd> open_uffd() {
  int fd = static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY));
  if (fd < 0) fd = static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
  if (fd < 0) return io_error("userfaultfd", errno);
  base::UniqueFd uffd(fd);
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = kFeatures;
  if (::ioctl(uffd.get(), UFFDIO_API, &api) != 0) return io_error("UFFDIO_API (async write-protect)", errno);
  return uffd;
}

}  // namespace

Result<std::unique_ptr<UffdWriteProtect>> UffdWriteProtect::attach(std::byte* base, uint64_t size) {
  auto uffd = open_uffd();
  if (!uffd) return uffd.error();
  uffdio_register reg{};
  reg.range.start = reinterpret_cast<__u64>(base);
  reg.range.len = page_ceil(size);
  reg.mode = UFFDIO_REGISTER_MODE_WP;
  if (::ioctl(uffd->get(), UFFDIO_REGISTER, &reg) != 0) return io_error("UFFDIO_REGISTER (write-protect)", errno);
  base::UniqueFd pagemap(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
  std::unique_ptr<UffdWriteProtect> wp(new UffdWriteProtect(base, size, std::move(*uffd), std::move(pagemap)));
  if (!wp->pagemap_.valid()) return io_error("open /proc/self/pagemap", errno);
  if (auto r = wp->protect(0, page_ceil(size)); !r) return r.error();
  return wp;
}

UffdWriteProtect::~UffdWriteProtect() {
  uffdio_range range{reinterpret_cast<__u64>(base_), page_ceil(size_)};
  ::ioctl(uffd_.get(), UFFDIO_UNREGISTER, &range);
}

Result<void> UffdWriteProtect::write_protect(uint64_t offset, uint64_t length, bool on) {
  uffdio_writeprotect wp{};
  wp.range.start = reinterpret_cast<__u64>(base_) + offset;
  wp.range.len = length;
  wp.mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : 0;
  if (::ioctl(uffd_.get(), UFFDIO_WRITEPROTECT, &wp) != 0) return io_error("UFFDIO_WRITEPROTECT", errno);
  return {};
}

Result<void> UffdWriteProtect::protect(uint64_t offset, uint64_t length) { return write_protect(offset, length, true); }

Result<void> UffdWriteProtect::release(uint64_t offset, uint64_t length) {
  if (auto r = write_protect(offset, length, false); !r) return r;
  // Best effort: a kernel without MADV_POPULATE_WRITE (before 5.14) leaves one plain fault per
  // page, which is slower, not wrong.
  ::madvise(base_ + offset, length, MADV_POPULATE_WRITE);
  return {};
}

Result<void> UffdWriteProtect::scan(uint64_t offset, uint64_t length, std::vector<PageRange>& out) {
  if (length == 0) return {};
  const __u64 origin = reinterpret_cast<__u64>(base_);
  page_region regions[256];
  pm_scan_arg arg{};
  arg.size = sizeof arg;
  arg.flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC;
  arg.start = origin + offset;
  arg.end = origin + offset + length;
  arg.vec = reinterpret_cast<__u64>(regions);
  arg.vec_len = std::size(regions);
  arg.category_mask = PAGE_IS_WRITTEN;
  arg.return_mask = PAGE_IS_WRITTEN;
  // The kernel stops when the vector is full and says where in walk_end; go on from there.
  while (arg.start < arg.end) {
    const int n = ::ioctl(pagemap_.get(), PAGEMAP_SCAN, &arg);
    if (n < 0) {
      if (errno == EINTR) continue;
      return io_error("PAGEMAP_SCAN", errno);
    }
    for (int i = 0; i < n; ++i) {
      const uint64_t begin = regions[i].start - origin;
      const uint64_t end = std::min<uint64_t>(regions[i].end - origin, size_);
      if (end > begin) append_run(out, begin, end - begin);
    }
    if (arg.walk_end <= arg.start) break;  // no progress: defensive, should not happen
    arg.start = arg.walk_end;
  }
  return {};
}

namespace {

class UffdTracker final : public DirtyTracker {
 public:
  UffdTracker(std::byte* base, uint64_t size, std::unique_ptr<UffdWriteProtect> wp)
      : DirtyTracker(base, size), wp_(std::move(wp)) {}

  TrackingMethod method() const override { return TrackingMethod::kUffdAsync; }

  Result<void> collect(Range range, std::vector<PageRange>& out) override {
    auto span = page_span(range, size());
    if (!span) return span.error();
    return wp_->scan(span->offset, page_ceil(span->offset + span->size) - span->offset, out);
  }

 private:
  std::unique_ptr<UffdWriteProtect> wp_;
};

}  // namespace

Result<std::unique_ptr<DirtyTracker>> make_uffd_tracker(std::byte* base, uint64_t size) {
  auto wp = UffdWriteProtect::attach(base, size);
  if (!wp) return wp.error();
  return std::unique_ptr<DirtyTracker>(new UffdTracker(base, size, std::move(*wp)));
}

bool uffd_async_probe() {
  const size_t length = 4 * kPageSize;
  void* mem = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return false;
  bool works = false;
  {
    auto tracker = make_uffd_tracker(static_cast<std::byte*>(mem), length);
    if (tracker) {
      static_cast<volatile char*>(mem)[2 * kPageSize] = 1;
      std::vector<PageRange> runs;
      works = (*tracker)->collect(Range::whole(), runs).ok() && runs.size() == 1 &&
              runs[0] == PageRange{2 * kPageSize, kPageSize};
    }
  }
  ::munmap(mem, length);
  return works;
}

}  // namespace bypass::memshare::detail
