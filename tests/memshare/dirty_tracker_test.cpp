// Dirty tracking and the in-process shadow helper, for every mechanism this kernel offers.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <atomic>
#include <cstring>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "bypass/memshare/dirty_tracker.h"
#include "bypass/memshare/page_ranges.h"
#include "bypass/memshare/shadow_region.h"
#include "test_support.h"

namespace bypass::memshare {
namespace {

constexpr uint64_t kPages = 256;
constexpr uint64_t kBytes = kPages * kPageSize;

class TrackerTest : public ::testing::TestWithParam<TrackingMethod> {
 protected:
  void SetUp() override {
    if (!tracking_available(GetParam())) GTEST_SKIP() << tracking_method_name(GetParam()) << " not available here";
  }
};

std::set<uint64_t> pages_of(const std::vector<PageRange>& runs) {
  std::set<uint64_t> pages;
  for (const PageRange& r : runs) {
    EXPECT_EQ(r.offset % kPageSize, 0u);
    for (uint64_t p = r.offset; p < r.offset + r.size; p += kPageSize) pages.insert(p / kPageSize);
  }
  return pages;
}

TEST_P(TrackerTest, ReportsExactlyTheWrittenPagesAndRearms) {
  void* mem = ::mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  auto* bytes = static_cast<std::byte*>(mem);
  // Touch half the pages before tracking starts, leave the rest unpopulated.
  for (uint64_t p = 0; p < kPages; p += 2) bytes[p * kPageSize] = std::byte{1};
  {
    auto tracker = make_dirty_tracker(mem, kBytes, GetParam());
    ASSERT_TRUE(tracker) << tracker.error().message;
    std::vector<PageRange> runs;
    ASSERT_TRUE((*tracker)->collect(Range::whole(), runs));
    EXPECT_TRUE(runs.empty()) << "a fresh tracker reports nothing";

    // Populated and never-populated pages, single bytes and whole pages, adjacent runs.
    const std::set<uint64_t> written = {0, 1, 2, 7, 64, 65, 127, 128, 200, 255};
    for (uint64_t p : written) bytes[p * kPageSize + (p * 37) % kPageSize] = std::byte{2};
    std::memset(bytes + 64 * kPageSize, 3, 2 * kPageSize);
    runs.clear();
    ASSERT_TRUE((*tracker)->collect(Range::whole(), runs));
    EXPECT_EQ(pages_of(runs), written);
    // Runs are merged: {0,1,2}, {7}, {64,65}, {127,128}, {200}, {255}.
    EXPECT_EQ(runs.size(), 6u);

    runs.clear();
    ASSERT_TRUE((*tracker)->collect(Range::whole(), runs));
    EXPECT_TRUE(runs.empty()) << "collect re-arms";

    // Sub-ranges only report and re-arm their own pages.
    bytes[10 * kPageSize] = std::byte{4};
    bytes[100 * kPageSize] = std::byte{4};
    runs.clear();
    ASSERT_TRUE((*tracker)->collect(Range{0, 50 * kPageSize}, runs));
    EXPECT_EQ(pages_of(runs), (std::set<uint64_t>{10}));
    runs.clear();
    ASSERT_TRUE((*tracker)->collect(Range{5 * kPageSize + 17, 1}, runs));  // unaligned range, page 5
    EXPECT_TRUE(runs.empty());
    runs.clear();
    ASSERT_TRUE((*tracker)->collect(Range::whole(), runs));
    EXPECT_EQ(pages_of(runs), (std::set<uint64_t>{100}));

    runs.clear();
    auto bad = (*tracker)->collect(Range{kBytes, kPageSize}, runs);
    EXPECT_EQ(bad.code(), Errc::kOutOfRange);
  }
  // After the tracker is gone the memory is plain read-write memory again.
  bytes[3 * kPageSize] = std::byte{9};
  EXPECT_EQ(bytes[3 * kPageSize], std::byte{9});
  ::munmap(mem, kBytes);
}

TEST_P(TrackerTest, WorksOnSharedMemfdMappings) {
  auto region = Region::create(kBytes);
  ASSERT_TRUE(region);
  auto tracker = make_dirty_tracker(region->data(), kBytes, GetParam());
  ASSERT_TRUE(tracker) << tracker.error().message;
  region->data()[33 * kPageSize + 5] = std::byte{1};
  std::vector<PageRange> runs;
  ASSERT_TRUE((*tracker)->collect(Range::whole(), runs));
  EXPECT_EQ(pages_of(runs), (std::set<uint64_t>{33}));
}

// Writes done by the kernel on our behalf (read() into the buffer) count as writes too; the
// mprotect tracker cannot offer this (the system call fails with EFAULT instead of faulting).
TEST_P(TrackerTest, KernelWritesAreTracked) {
  if (GetParam() == TrackingMethod::kMprotect) GTEST_SKIP() << "read() into protected pages fails with EFAULT";
  auto region = Region::create(kBytes);
  ASSERT_TRUE(region);
  auto tracker = make_dirty_tracker(region->data(), kBytes, GetParam());
  ASSERT_TRUE(tracker);
  const char text[] = "written by the kernel";
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  ASSERT_EQ(::write(fds[1], text, sizeof text), static_cast<ssize_t>(sizeof text));
  ASSERT_EQ(::read(fds[0], region->data() + 77 * kPageSize + 10, sizeof text), static_cast<ssize_t>(sizeof text));
  ::close(fds[0]);
  ::close(fds[1]);
  std::vector<PageRange> runs;
  ASSERT_TRUE((*tracker)->collect(Range::whole(), runs));
  EXPECT_EQ(pages_of(runs), (std::set<uint64_t>{77}));
}

// A writer thread keeps writing while barriers run; at the end the destination must equal the
// source: no write is ever lost between collect() and the copy.
TEST_P(TrackerTest, ConcurrentWritesAreNeverLost) {
  auto shadow = ShadowRegion::create(kBytes, GetParam());
  ASSERT_TRUE(shadow) << shadow.error().message;
  std::vector<std::byte> dst(kBytes);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> writes{0};  // progress only; relaxed
  std::byte* data = shadow->data();
  std::thread writer([&] {
    std::mt19937 rng(7);
    uint8_t value = 1;
    while (!stop.load(std::memory_order_relaxed)) {
      const uint64_t page = rng() % kPages;
      const uint64_t at = page * kPageSize + (rng() % (kPageSize / 8)) * 8;
      reinterpret_cast<std::atomic<uint64_t>*>(data + at)->store(value++ * 0x0101010101010101ull,
                                                                 std::memory_order_relaxed);
      writes.fetch_add(1, std::memory_order_relaxed);
    }
  });
  // Barriers run while the writer writes: at least 200 of them and 20000 writes.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (int i = 0;
       (i < 200 || writes.load(std::memory_order_relaxed) < 20000) && std::chrono::steady_clock::now() < deadline;
       ++i) {
    ASSERT_TRUE(shadow->write_barrier(dst.data()));
  }
  stop.store(true);
  writer.join();
  EXPECT_GE(writes.load(), 20000u);
  ASSERT_TRUE(shadow->write_barrier(dst.data()));
  EXPECT_EQ(std::memcmp(dst.data(), data, kBytes), 0);
}

TEST_P(TrackerTest, ShadowRegionBarriersMoveOnlyDirtyPages) {
  auto shadow = ShadowRegion::create(kBytes, GetParam());
  ASSERT_TRUE(shadow) << shadow.error().message;
  std::vector<std::byte> host(kBytes, std::byte{0});
  for (uint64_t p : {5u, 6u, 90u}) std::memset(shadow->data() + p * kPageSize, 0x5a, 100);
  auto stats = shadow->write_barrier(host.data());
  ASSERT_TRUE(stats);
  EXPECT_EQ(stats->pages, 3u);
  EXPECT_EQ(stats->ranges, 2u);
  EXPECT_EQ(std::memcmp(host.data(), shadow->data(), kBytes), 0);

  // Send-callback form: one call per run with the run's bytes.
  shadow->data()[17 * kPageSize] = std::byte{1};
  std::vector<PageRange> sent;
  auto via_send = shadow->write_barrier([&](uint64_t offset, std::span<const std::byte> bytes) -> Result<void> {
    sent.push_back(PageRange{offset, bytes.size()});
    std::memcpy(host.data() + offset, bytes.data(), bytes.size());
    return {};
  });
  ASSERT_TRUE(via_send);
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0], (PageRange{17 * kPageSize, kPageSize}));

  // Read barrier: the host changed pages 40 and 41; a local unflushed write to page 41 loses.
  std::memset(host.data() + 40 * kPageSize, 0x11, 2 * kPageSize);
  shadow->data()[41 * kPageSize + 9] = std::byte{0x77};
  auto back = shadow->read_barrier(host.data());
  ASSERT_TRUE(back);
  EXPECT_EQ(back->pages, 2u);
  EXPECT_EQ(std::memcmp(host.data(), shadow->data(), kBytes), 0);
  // Nothing the read barrier wrote counts as a local write.
  auto dirty = shadow->collect_dirty();
  ASSERT_TRUE(dirty);
  EXPECT_TRUE(dirty->empty());

  // apply(): bytes received from the other side, not marked dirty.
  std::vector<std::byte> incoming(kPageSize, std::byte{0x22});
  ASSERT_TRUE(shadow->apply(3 * kPageSize, incoming));
  EXPECT_EQ(shadow->data()[3 * kPageSize + 100], std::byte{0x22});
  dirty = shadow->collect_dirty();
  ASSERT_TRUE(dirty);
  EXPECT_TRUE(dirty->empty());
  EXPECT_EQ(shadow->apply(kBytes - 10, incoming).code(), Errc::kOutOfRange);
}

INSTANTIATE_TEST_SUITE_P(Methods, TrackerTest,
                         ::testing::Values(TrackingMethod::kUffdAsync, TrackingMethod::kMprotect,
                                           TrackingMethod::kHash),
                         test::method_param_name<::testing::TestParamInfo<TrackingMethod>>);

TEST(DirtyTracker, RejectsBadMemory) {
  alignas(4096) static std::byte page[2 * kPageSize];
  EXPECT_EQ(make_dirty_tracker(page + 1, kPageSize).code(), Errc::kInvalidArgument);
  EXPECT_EQ(make_dirty_tracker(nullptr, kPageSize).code(), Errc::kInvalidArgument);
  EXPECT_EQ(make_dirty_tracker(page, 0).code(), Errc::kInvalidArgument);
}

TEST(DirtyTracker, DefaultIsUffdWhereAvailable) {
  if (tracking_available(TrackingMethod::kUffdAsync)) {
    EXPECT_EQ(default_tracking_method(), TrackingMethod::kUffdAsync);
  } else {
    EXPECT_EQ(default_tracking_method(), TrackingMethod::kMprotect);
  }
}

// Faults outside tracked memory still reach the default disposition (the mprotect tracker's
// handler chains), so a real bug still crashes.
TEST(DirtyTracker, UnrelatedFaultStillKills) {
  auto tracker_memory = Region::create(kPageSize);
  ASSERT_TRUE(tracker_memory);
  auto tracker = make_dirty_tracker(tracker_memory->data(), kPageSize, TrackingMethod::kMprotect);
  ASSERT_TRUE(tracker);
  test::Child child([] {
    // Under ASan the previous handler is ASan's, which prints a report of this intended fault.
    const int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    ::dup2(null, STDERR_FILENO);
    void* p = ::mmap(nullptr, kPageSize, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    *static_cast<volatile char*>(p) = 1;
    return 0;
  });
  const int status = child.wait();
  ASSERT_TRUE(WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) != 0)) << status;
}

TEST(PageHashes, FindsChangedPages) {
  std::vector<std::byte> data(10 * kPageSize + 100, std::byte{0});
  PageHashes hashes(data.size());
  hashes.reset(data.data());
  data[3 * kPageSize + 4095] = std::byte{1};
  data[10 * kPageSize + 99] = std::byte{1};  // partial last page
  std::vector<PageRange> runs;
  hashes.changed(data.data(), PageRange{0, data.size()}, runs);
  ASSERT_EQ(runs.size(), 2u);
  EXPECT_EQ(runs[0], (PageRange{3 * kPageSize, kPageSize}));
  EXPECT_EQ(runs[1], (PageRange{10 * kPageSize, 100}));
  runs.clear();
  hashes.changed(data.data(), PageRange{0, data.size()}, runs);
  EXPECT_TRUE(runs.empty());
}

TEST(PageRanges, SpanClampsAndChecks) {
  auto s = page_span(Range{5000, 10}, 3 * kPageSize);
  ASSERT_TRUE(s);
  EXPECT_EQ(*s, (PageRange{kPageSize, kPageSize}));
  auto whole = page_span(Range::whole(), 3 * kPageSize + 7);
  ASSERT_TRUE(whole);
  EXPECT_EQ(*whole, (PageRange{0, 3 * kPageSize + 7}));
  EXPECT_EQ(page_span(Range{~uint64_t{0} - 5, 10}, kPageSize).code(), Errc::kOutOfRange);
  EXPECT_EQ(page_span(Range{kPageSize, kPageSize + 1}, 2 * kPageSize).code(), Errc::kOutOfRange);
}

}  // namespace
}  // namespace bypass::memshare
