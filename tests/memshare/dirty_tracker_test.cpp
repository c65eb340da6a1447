// Dirty tracking and the in-process shadow helper, for every mechanism this kernel offers.
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <atomic>
#include <cstring>
#include <mutex>
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
  // Barriers run while the writer writes: at least 200 of them and 20000 writes, or as many
  // as 30 s allow (each write to a re-protected page is a fault, and in a VM that shadows page
  // tables a barrier racing a fault can take a millisecond); at least 2000 writes either way.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (int i = 0;
       (i < 200 || writes.load(std::memory_order_relaxed) < 20000) && std::chrono::steady_clock::now() < deadline;
       ++i) {
    ASSERT_TRUE(shadow->write_barrier(dst.data()));
  }
  stop.store(true);
  writer.join();
  EXPECT_GE(writes.load(), 2000u);
  ASSERT_TRUE(shadow->write_barrier(dst.data()));
  EXPECT_EQ(std::memcmp(dst.data(), data, kBytes), 0);
}

// Two threads run write barriers of one shadow at once (two application threads submitting,
// each barrier covering every shadow) while a third writes: every run reaches the copy, and
// the region's bookkeeping survives (this crashed or lost runs when barriers shared scratch
// state unguarded).
TEST_P(TrackerTest, BarriersFromTwoThreadsAtOnce) {
  auto shadow = ShadowRegion::create(kBytes, GetParam());
  ASSERT_TRUE(shadow) << shadow.error().message;
  std::vector<std::byte> dst(kBytes);
  std::mutex dst_mu;
  std::atomic<bool> stop{false};
  std::byte* data = shadow->data();
  std::thread writer([&] {
    std::mt19937 rng(5);
    uint64_t value = 1;
    while (!stop.load(std::memory_order_relaxed)) {
      const uint64_t at = (rng() % kPages) * kPageSize + (rng() % (kPageSize / 8)) * 8;
      reinterpret_cast<std::atomic<uint64_t>*>(data + at)->store(value++, std::memory_order_relaxed);
    }
  });
  // A run is copied from the shadow as the barrier sends it; the copy of a page sent by both
  // threads must not go backwards, so copies are made under one lock, in send order.
  auto send = [&](uint64_t offset, std::span<const std::byte> bytes) -> Result<void> {
    std::lock_guard lock(dst_mu);
    for (size_t i = 0; i < bytes.size(); i += 8) {
      const uint64_t word = reinterpret_cast<const std::atomic<uint64_t>*>(bytes.data() + i)->load();
      std::memcpy(dst.data() + offset + i, &word, 8);
    }
    return {};
  };
  auto barriers = [&] {
    for (int i = 0; i < 3000; ++i) ASSERT_TRUE(shadow->write_barrier(send));
  };
  std::thread a(barriers);
  std::thread b(barriers);
  a.join();
  b.join();
  stop.store(true);
  writer.join();
  ASSERT_TRUE(shadow->write_barrier(send));
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
                         ::testing::Values(TrackingMethod::kUffdAsync, TrackingMethod::kMprotect, TrackingMethod::kHash,
                                           TrackingMethod::kAdaptive),
                         test::method_param_name<::testing::TestParamInfo<TrackingMethod>>);

TEST(DirtyTracker, RejectsBadMemory) {
  alignas(4096) static std::byte page[2 * kPageSize];
  EXPECT_EQ(make_dirty_tracker(page + 1, kPageSize).code(), Errc::kInvalidArgument);
  EXPECT_EQ(make_dirty_tracker(nullptr, kPageSize).code(), Errc::kInvalidArgument);
  EXPECT_EQ(make_dirty_tracker(page, 0).code(), Errc::kInvalidArgument);
}

TEST(DirtyTracker, DefaultIsAdaptiveWhereUffdIsAvailable) {
  if (tracking_available(TrackingMethod::kUffdAsync)) {
    EXPECT_EQ(default_tracking_method(), TrackingMethod::kAdaptive);
  } else {
    EXPECT_EQ(default_tracking_method(), TrackingMethod::kMprotect);
  }
}

// The adaptive tracker, with costs fixed so that the test does not depend on this machine's: a
// fault costs as much as hashing 10 pages. A chunk (64 pages) whose pages are all rewritten
// between collects then costs 640 in faults against 64 in hashes; one written page costs 10
// against 64.
class AdaptiveTest : public ::testing::Test {
 protected:
  static constexpr TrackingCosts kCosts{10.0, 1.0};
  static constexpr uint64_t kChunk = 64;  // pages

  void SetUp() override {
    if (!tracking_available(TrackingMethod::kAdaptive)) GTEST_SKIP() << "userfaultfd async write-protect not here";
  }
};

// Every page whose contents differ from before: the hash side cannot see a write of the same bytes.
void write_fresh(std::byte* page, uint64_t& counter, uint64_t at = 0) {
  ++counter;
  std::memcpy(page + at, &counter, sizeof counter);
}

TEST_F(AdaptiveTest, RewrittenChunksAreHashedQuietOnesGoBackToFaults) {
  auto region = Region::create(kBytes);  // 4 chunks
  ASSERT_TRUE(region);
  auto tracker = make_adaptive_tracker(region->data(), kBytes, kCosts);
  ASSERT_TRUE(tracker) << tracker.error().message;
  std::byte* bytes = region->data();
  uint64_t counter = 0;
  std::vector<PageRange> runs;
  // Chunks 0 and 1 rewritten whole, one page of chunk 3: the first two switch to hashes.
  std::set<uint64_t> expected;
  for (uint64_t p = 0; p < 2 * kChunk; ++p) expected.insert(p);
  expected.insert(3 * kChunk + 5);
  for (int cycle = 0; cycle < 6; ++cycle) {
    for (uint64_t p : expected) write_fresh(bytes + p * kPageSize, counter, (p * 8 + cycle * 64) % kPageSize);
    runs.clear();
    ASSERT_TRUE((*tracker)->collect(Range::whole(), runs));
    ASSERT_EQ(pages_of(runs), expected) << "cycle " << cycle;
  }
  EXPECT_EQ((*tracker)->pages_hashed(), 2 * kChunk);

  // Hashed or not, a write between collects is reported once, and rearm() forgets writes.
  write_fresh(bytes + 7 * kPageSize, counter);
  write_fresh(bytes + 200 * kPageSize, counter);
  write_fresh(bytes + 9 * kPageSize, counter);
  ASSERT_TRUE((*tracker)->rearm(Range{9 * kPageSize, kPageSize}));
  runs.clear();
  ASSERT_TRUE((*tracker)->collect(Range::whole(), runs));
  EXPECT_EQ(pages_of(runs), (std::set<uint64_t>{7, 200}));

  // Nothing written any more: looking at hashed chunks costs, faults would not; they go back
  // once the decayed estimate of their faults has fallen below half of what hashing costs.
  for (int cycle = 0; cycle < 16; ++cycle) {
    runs.clear();
    ASSERT_TRUE((*tracker)->collect(Range::whole(), runs));
    ASSERT_TRUE(runs.empty()) << "cycle " << cycle;
  }
  EXPECT_EQ((*tracker)->pages_hashed(), 0u);
  write_fresh(bytes + 70 * kPageSize, counter);
  runs.clear();
  ASSERT_TRUE((*tracker)->collect(Range::whole(), runs));
  EXPECT_EQ(pages_of(runs), (std::set<uint64_t>{70}));
}

// Random writes, collects of random ranges (whole chunks, parts of chunks, unaligned) and
// rearms over a buffer whose last page is partial, against a model of which pages are dirty:
// every collect reports exactly the pages written since a collect or rearm last covered them,
// across every switch in both directions.
TEST_F(AdaptiveTest, ReportsExactlyWhatWasWrittenAcrossSwitches) {
  constexpr uint64_t kPagesHere = 5 * kChunk + 7;
  constexpr uint64_t kSize = (kPagesHere - 1) * kPageSize + 100;
  auto region = Region::create(kPagesHere * kPageSize);
  ASSERT_TRUE(region);
  auto tracker = make_adaptive_tracker(region->data(), kSize, kCosts);
  ASSERT_TRUE(tracker) << tracker.error().message;
  std::byte* bytes = region->data();
  std::mt19937_64 rng(11);
  std::set<uint64_t> dirty;
  uint64_t counter = 0;
  uint64_t most_hashed = 0;
  int went_back = 0;
  uint64_t hashed_before = 0;
  std::vector<PageRange> runs;
  for (int step = 0; step < 3000; ++step) {
    // Phases of 200 steps: heavy rewrites of a few chunks, then sparse writes.
    const bool heavy = (step / 200) % 2 == 0;
    const int writes = heavy ? 150 : 2;
    const uint64_t hot = (step / 400) % 5;
    for (int w = 0; w < writes; ++w) {
      const uint64_t page = heavy ? hot * kChunk + rng() % (2 * kChunk) : rng() % kPagesHere;
      if (page >= kPagesHere) continue;
      const uint64_t room = page == kPagesHere - 1 ? 100 : kPageSize;
      write_fresh(bytes + page * kPageSize, counter, (rng() % (room / 8)) * 8);
      dirty.insert(page);
    }
    // A range: the whole buffer, a few whole chunks, or anything.
    Range range = Range::whole();
    switch (rng() % 4) {
      case 0:
        break;
      case 1: {
        const uint64_t c = rng() % 5;
        const uint64_t from = c * kChunk * kPageSize;
        range = Range{from, std::min((1 + rng() % 2) * kChunk * kPageSize, kSize - from)};
        break;
      }
      default: {
        const uint64_t from = rng() % kSize;
        range = Range{from, 1 + rng() % (kSize - from)};
        break;
      }
    }
    auto span = page_span(range, kSize);
    ASSERT_TRUE(span);
    std::set<uint64_t> expected;
    for (uint64_t p = span->offset / kPageSize; p * kPageSize < span->offset + span->size; ++p) {
      if (dirty.erase(p) != 0) expected.insert(p);
    }
    if (rng() % 10 == 0) {
      ASSERT_TRUE((*tracker)->rearm(range));
      continue;
    }
    runs.clear();
    auto collected = (*tracker)->collect(range, runs);
    ASSERT_TRUE(collected) << collected.error().message << " at step " << step;
    ASSERT_EQ(pages_of(runs), expected) << "step " << step;
    for (const PageRange& r : runs) ASSERT_LE(r.offset + r.size, kSize);
    const uint64_t hashed = (*tracker)->pages_hashed();
    most_hashed = std::max(most_hashed, hashed);
    if (hashed < hashed_before) ++went_back;
    hashed_before = hashed;
  }
  EXPECT_GE(most_hashed, 2 * kChunk) << "heavy phases hash their chunks";
  EXPECT_GT(went_back, 0) << "sparse phases take chunks back to faults";
}

// A writer thread in bursts (fast, then quiet) while collects copy what they report: chunks
// switch both ways under its writes, and at the end the copy equals the memory.
TEST_F(AdaptiveTest, ConcurrentWritesAcrossSwitchesAreNeverLost) {
  auto region = Region::create(kBytes);
  ASSERT_TRUE(region);
  auto tracker = make_adaptive_tracker(region->data(), kBytes, kCosts);
  ASSERT_TRUE(tracker) << tracker.error().message;
  std::byte* data = region->data();
  std::vector<std::byte> dst(kBytes);
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    std::mt19937 rng(3);
    uint64_t value = 1;
    while (!stop.load(std::memory_order_relaxed)) {
      const auto burst_end = std::chrono::steady_clock::now() + std::chrono::milliseconds(3);
      while (std::chrono::steady_clock::now() < burst_end) {
        const uint64_t at = (rng() % kPages) * kPageSize + (rng() % (kPageSize / 8)) * 8;
        reinterpret_cast<std::atomic<uint64_t>*>(data + at)->store(value++, std::memory_order_relaxed);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(3));
    }
  });
  std::vector<PageRange> runs;
  int to_hashes = 0;
  int to_faults = 0;
  uint64_t hashed = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  for (int i = 0; (i < 400 || to_hashes < 3 || to_faults < 3) && std::chrono::steady_clock::now() < deadline; ++i) {
    runs.clear();
    ASSERT_TRUE((*tracker)->collect(Range::whole(), runs));
    copy_runs(dst.data(), data, runs);
    const uint64_t now = (*tracker)->pages_hashed();
    if (now > hashed) ++to_hashes;
    if (now < hashed) ++to_faults;
    hashed = now;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  stop.store(true);
  writer.join();
  runs.clear();
  ASSERT_TRUE((*tracker)->collect(Range::whole(), runs));
  copy_runs(dst.data(), data, runs);
  EXPECT_EQ(std::memcmp(dst.data(), data, kBytes), 0);
  EXPECT_GE(to_hashes, 1) << "the bursts never made a chunk switch to hashes";
  EXPECT_GE(to_faults, 1) << "the quiet times never took a chunk back to faults";
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
