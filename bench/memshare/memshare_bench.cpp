// memshare_bench: prints the figures memshare is judged by.
//   memshare_bench [--json] [--size-mib N] [--reps N]
// Lines starting with '#' are details; with --json the LAST line is one JSON object:
//   {"transfer_vs_memcpy": ..., "barrier_bytes_over_dirty_bytes": ..., "dirty_tracking_overhead": ...}
// transfer_vs_memcpy: throughput of the transfer engine (request over the socket, worker pool,
//   completion in shared memory) divided by a single memcpy of the same bytes, same run.
// barrier_bytes_over_dirty_bytes: bytes write barriers copied / bytes the guest dirtied,
//   counted at page granularity (1.0 is exact; below 1.0 where content hashing saw that a
//   write left a page as it was).
// dirty_tracking_overhead: time of the guest's writes with the default tracker armed divided
//   by the same writes to untracked memory (1.0 is free).
// Timings are the fastest of --reps repetitions, interleaved between the compared sides.
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "bypass/memshare/client.h"
#include "bypass/memshare/dirty_tracker.h"
#include "bypass/memshare/page_ranges.h"
#include "bypass/memshare/service.h"
#include "bypass/memshare/shadow_region.h"

using namespace bypass::memshare;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// The fastest of the repetitions: the machine is shared (2 cores, other builds running), and
// the fastest run is the one least disturbed by neighbours; both sides of a ratio use it.
double best(const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); }

[[noreturn]] void die(const std::string& what, const Error& error) {
  std::fprintf(stderr, "memshare_bench: %s: %s\n", what.c_str(), error.message.c_str());
  std::exit(1);
}

template <typename T>
T must(Result<T> r, const char* what) {
  if (!r) die(what, r.error());
  return std::move(r).value();
}

void must(Result<void> r, const char* what) {
  if (!r) die(what, r.error());
}

// Defeats dead-store elimination of benchmark writes.
void touch(void* p) { asm volatile("" : : "r"(p) : "memory"); }

struct TransferFigures {
  double memcpy_gbps = 0;
  double transfer_gbps = 0;
  double ratio = 0;
};

// One big transfer at a time vs one memcpy of the same bytes, interleaved, best of reps.
TransferFigures measure_transfer(unsigned workers, uint64_t chunk, uint64_t size, int reps) {
  ServiceOptions options;
  options.workers = workers;
  options.chunk_bytes = chunk;
  Service service(options);
  Client client = must(service.connect_local("bench"), "connect_local");
  Region src = must(Region::create(size), "region");
  Region dst = must(Region::create(size), "region");
  std::memset(src.data(), 1, size);
  std::memset(dst.data(), 2, size);
  const Name src_name = must(client.name(src), "name");
  const Name dst_name = must(client.name(dst), "name");
  std::vector<double> copy_times;
  std::vector<double> transfer_times;
  // Warm-up: both paths touch every page once.
  std::memcpy(dst.data(), src.data(), size);
  must(must(client.transfer(src_name, dst_name, CopyRange{0, 0, size}), "transfer").wait(), "wait");
  for (int i = 0; i < reps; ++i) {
    auto t0 = Clock::now();
    std::memcpy(dst.data(), src.data(), size);
    touch(dst.data());
    copy_times.push_back(seconds_since(t0));
    t0 = Clock::now();
    auto handle = must(client.transfer(src_name, dst_name, CopyRange{0, 0, size}), "transfer");
    const uint64_t bytes = must(handle.wait(), "wait");
    transfer_times.push_back(seconds_since(t0));
    if (bytes != size) die("transfer", make_error(Errc::kIo, "short transfer"));
  }
  TransferFigures f;
  f.memcpy_gbps = static_cast<double>(size) / best(copy_times) / 1e9;
  f.transfer_gbps = static_cast<double>(size) / best(transfer_times) / 1e9;
  f.ratio = f.transfer_gbps / f.memcpy_gbps;
  return f;
}

// Many 1 MiB transfers in flight at once (a stream of readbacks).
double measure_transfer_stream(uint64_t size, int reps) {
  Service service;
  Client client = must(service.connect_local("bench"), "connect_local");
  Region src = must(Region::create(size), "region");
  Region dst = must(Region::create(size), "region");
  std::memset(src.data(), 1, size);
  std::memset(dst.data(), 2, size);
  const Name src_name = must(client.name(src), "name");
  const Name dst_name = must(client.name(dst), "name");
  std::vector<double> times;
  constexpr uint64_t kPiece = 1 << 20;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = Clock::now();
    std::vector<TransferHandle> handles;
    for (uint64_t off = 0; off + kPiece <= size; off += kPiece) {
      handles.push_back(must(client.transfer(src_name, dst_name, CopyRange{off, off, kPiece}), "transfer"));
    }
    for (auto& h : handles) must(h.wait(), "wait");
    times.push_back(seconds_since(t0));
  }
  return static_cast<double>(size) / best(times) / 1e9;
}

struct BarrierFigures {
  uint64_t dirty_bytes = 0;
  uint64_t barrier_bytes = 0;
  uint64_t read_dirty_bytes = 0;
  uint64_t read_barrier_bytes = 0;
  double barrier_gbps = 0;
};

// A guest shadow over the daemon path: random scattered writes (single bytes, partial pages,
// multi-page runs), a write barrier per round; then the owner changes pages and a read barrier.
BarrierFigures measure_barriers(uint64_t size, int rounds) {
  Service service;
  Client owner = must(service.connect_local("owner"), "connect_local");
  Client guest = must(service.connect_local("guest"), "connect_local");
  Region region = must(Region::create(size), "region");
  std::memset(region.data(), 0, size);
  const Name name = must(owner.name(region), "name");
  must(owner.grant(name, guest.domain(), Access::kReadWrite), "grant");
  Shadow shadow = must(guest.open_shadow(name, Access::kReadWrite), "shadow");
  const uint64_t pages = size / kPageSize;
  std::mt19937_64 rng(42);
  BarrierFigures f;
  double barrier_seconds = 0;
  for (int round = 0; round < rounds; ++round) {
    std::set<uint64_t> dirty;
    const uint64_t writes = pages / 20;
    for (uint64_t i = 0; i < writes; ++i) {
      const uint64_t page = rng() % pages;
      switch (rng() % 3) {
        case 0:  // a single byte
          shadow.data()[page * kPageSize + rng() % kPageSize] = std::byte{1};
          dirty.insert(page);
          break;
        case 1: {  // a partial page
          const uint64_t at = rng() % (kPageSize - 256);
          std::memset(shadow.data() + page * kPageSize + at, 2, 256);
          dirty.insert(page);
          break;
        }
        default: {  // a run of up to 8 pages
          const uint64_t n = std::min<uint64_t>(1 + rng() % 8, pages - page);
          std::memset(shadow.data() + page * kPageSize, 3, n * kPageSize);
          for (uint64_t p = page; p < page + n; ++p) dirty.insert(p);
        }
      }
    }
    const auto t0 = Clock::now();
    const BarrierStats stats = must(guest.barrier(shadow, BarrierDirection::kWrite), "barrier");
    barrier_seconds += seconds_since(t0);
    f.dirty_bytes += dirty.size() * kPageSize;
    f.barrier_bytes += stats.bytes;
    // The owner changes some pages; a read barrier brings them back.
    std::set<uint64_t> host_dirty;
    for (uint64_t i = 0; i < pages / 50; ++i) {
      const uint64_t page = rng() % pages;
      region.data()[page * kPageSize + rng() % kPageSize] ^= std::byte{0x5a};
      host_dirty.insert(page);
    }
    const BarrierStats back = must(guest.barrier(shadow, BarrierDirection::kRead), "read barrier");
    f.read_dirty_bytes += host_dirty.size() * kPageSize;
    f.read_barrier_bytes += back.bytes;
  }
  if (std::memcmp(shadow.data(), region.data(), size) != 0) {
    die("barrier", make_error(Errc::kIo, "shadow and buffer differ after barriers"));
  }
  f.barrier_gbps = static_cast<double>(f.barrier_bytes) / barrier_seconds / 1e9;
  return f;
}

struct TrackingFigures {
  double write_slowdown = 0;  // tracked writes / untracked writes
  double collect_ms = 0;      // per collect
  double cycle_slowdown = 0;  // (tracked writes + collect) / untracked writes
};

enum class Pattern { kFullPages, kSparse, kSequential };

// One cycle: the guest writes `pattern` into the buffer, then (tracked only) collect().
TrackingFigures measure_tracking(TrackingMethod method, Pattern pattern, uint64_t size, int cycles) {
  const uint64_t pages = size / kPageSize;
  auto make = [&] { return must(Region::create(size), "region"); };
  Region plain = make();
  Region tracked = make();
  std::memset(plain.data(), 0, size);
  std::memset(tracked.data(), 0, size);
  std::unique_ptr<DirtyTracker> tracker;
  if (method != TrackingMethod::kAuto) tracker = must(make_dirty_tracker(tracked.data(), size, method), "tracker");
  std::vector<uint64_t> order;
  std::mt19937_64 rng(1);
  switch (pattern) {
    case Pattern::kFullPages:  // a quarter of the pages, random order, whole pages
      for (uint64_t p = 0; p < pages; ++p) order.push_back(p);
      std::shuffle(order.begin(), order.end(), rng);
      order.resize(pages / 4);
      break;
    case Pattern::kSparse:  // 1% of pages, 64 bytes each
      for (uint64_t i = 0; i < pages / 100; ++i) order.push_back(rng() % pages);
      break;
    case Pattern::kSequential:  // every page, in order
      for (uint64_t p = 0; p < pages; ++p) order.push_back(p);
      break;
  }
  const uint64_t bytes_per_page = pattern == Pattern::kSparse ? 64 : kPageSize;
  std::vector<std::byte> source(kPageSize, std::byte{7});
  auto write_all = [&](std::byte* base, uint8_t value) {
    source[0] = std::byte{value};
    for (uint64_t p : order) std::memcpy(base + p * kPageSize, source.data(), bytes_per_page);
    touch(base);
  };
  std::vector<double> plain_times;
  std::vector<double> tracked_times;
  std::vector<double> collect_times;
  std::vector<PageRange> runs;
  if (tracker) must(tracker->collect(Range::whole(), runs), "collect");
  for (int c = 0; c < cycles; ++c) {
    auto t0 = Clock::now();
    write_all(plain.data(), static_cast<uint8_t>(c));
    plain_times.push_back(seconds_since(t0));
    t0 = Clock::now();
    write_all(tracked.data(), static_cast<uint8_t>(c));
    tracked_times.push_back(seconds_since(t0));
    runs.clear();
    t0 = Clock::now();
    if (tracker) must(tracker->collect(Range::whole(), runs), "collect");
    collect_times.push_back(seconds_since(t0));
  }
  TrackingFigures f;
  const double plain_s = best(plain_times);
  f.write_slowdown = best(tracked_times) / plain_s;
  f.collect_ms = best(collect_times) * 1e3;
  f.cycle_slowdown = (best(tracked_times) + best(collect_times)) / plain_s;
  return f;
}

// Whether /proc/self/pagemap soft-dirty bits work here: clear, write one page, look at bit 55.
bool soft_dirty_works() {
  void* mem = ::mmap(nullptr, 4 * kPageSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return false;
  std::memset(mem, 1, 4 * kPageSize);
  bool works = false;
  FILE* clear = std::fopen("/proc/self/clear_refs", "w");
  if (clear != nullptr) {
    const bool cleared = std::fputs("4", clear) >= 0;
    std::fclose(clear);
    static_cast<volatile char*>(mem)[2 * kPageSize] = 2;
    FILE* pagemap = std::fopen("/proc/self/pagemap", "rb");
    if (cleared && pagemap != nullptr) {
      uint64_t entries[4] = {};
      const long at = static_cast<long>(reinterpret_cast<uintptr_t>(mem) / kPageSize * 8);
      if (std::fseek(pagemap, at, SEEK_SET) == 0 && std::fread(entries, 8, 4, pagemap) == 4) {
        works = ((entries[2] >> 55) & 1) == 1 && ((entries[1] >> 55) & 1) == 0;
      }
    }
    if (pagemap != nullptr) std::fclose(pagemap);
  }
  ::munmap(mem, 4 * kPageSize);
  return works;
}

const char* pattern_name(Pattern p) {
  switch (p) {
    case Pattern::kFullPages:
      return "25% of pages, whole pages, random";
    case Pattern::kSparse:
      return "1% of pages, 64 B each";
    case Pattern::kSequential:
      return "every page, sequential";
  }
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  bool json = false;
  uint64_t size_mib = 64;
  int reps = 7;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--json") {
      json = true;
    } else if (arg == "--size-mib" && i + 1 < argc) {
      size_mib = std::max(1ul, std::strtoul(argv[++i], nullptr, 10));
    } else if (arg == "--reps" && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: memshare_bench [--json] [--size-mib N] [--reps N]\n");
      return 2;
    }
  }
  const uint64_t size = size_mib << 20;

  std::printf("# memshare_bench: buffers of %llu MiB, best of %d reps\n", static_cast<unsigned long long>(size_mib),
              reps);
  std::printf("# transfers (one transfer of the whole buffer vs one memcpy):\n");
  TransferFigures chosen{};
  const ServiceOptions defaults;
  for (unsigned workers : {1u, 2u, 4u}) {
    for (uint64_t chunk : {uint64_t{256} << 10, uint64_t{1} << 20, uint64_t{4} << 20}) {
      const TransferFigures f = measure_transfer(workers, chunk, size, reps);
      const bool is_default = workers == defaults.workers && chunk == defaults.chunk_bytes;
      if (is_default) chosen = f;
      std::printf("#   workers %u chunk %5llu KiB: memcpy %6.2f GB/s, transfer %6.2f GB/s, ratio %.2f%s\n", workers,
                  static_cast<unsigned long long>(chunk >> 10), f.memcpy_gbps, f.transfer_gbps, f.ratio,
                  is_default ? "  (default)" : "");
    }
  }
  std::printf("#   stream of 1 MiB transfers, default pool: %.2f GB/s\n", measure_transfer_stream(size, reps));

  const BarrierFigures b = measure_barriers(size, 8);
  const double barrier_ratio = static_cast<double>(b.barrier_bytes) / static_cast<double>(b.dirty_bytes);
  std::printf(
      "# barriers (%s tracking): write: %llu dirty bytes, %llu copied (ratio %.3f, %.2f GB/s); "
      "read: %llu changed, %llu copied (ratio %.3f)\n",
      std::string(tracking_method_name(default_tracking_method())).c_str(),
      static_cast<unsigned long long>(b.dirty_bytes), static_cast<unsigned long long>(b.barrier_bytes), barrier_ratio,
      b.barrier_gbps, static_cast<unsigned long long>(b.read_dirty_bytes),
      static_cast<unsigned long long>(b.read_barrier_bytes),
      static_cast<double>(b.read_barrier_bytes) / static_cast<double>(b.read_dirty_bytes));

  std::printf("# dirty tracking (write slowdown = tracked writes / plain writes; cycle adds collect):\n");
  if (tracking_available(TrackingMethod::kAdaptive)) {
    const TrackingCosts& costs = tracking_costs();
    std::printf("#   adaptive weighs: a write fault %.2f us, hashing a page %.2f us\n", costs.fault_us, costs.hash_us);
  }
  double default_overhead = 0;
  for (Pattern pattern : {Pattern::kFullPages, Pattern::kSparse, Pattern::kSequential}) {
    for (TrackingMethod m :
         {TrackingMethod::kUffdAsync, TrackingMethod::kMprotect, TrackingMethod::kHash, TrackingMethod::kAdaptive}) {
      if (!tracking_available(m)) {
        std::printf("#   %-14s unavailable on this kernel\n", std::string(tracking_method_name(m)).c_str());
        continue;
      }
      const TrackingFigures f = measure_tracking(m, pattern, size, reps);
      if (m == default_tracking_method() && pattern == Pattern::kFullPages) default_overhead = f.write_slowdown;
      std::printf("#   %-34s %-14s write slowdown %6.2f, collect %7.3f ms, cycle slowdown %6.2f\n",
                  pattern_name(pattern), std::string(tracking_method_name(m)).c_str(), f.write_slowdown, f.collect_ms,
                  f.cycle_slowdown);
    }
  }
  std::printf(
      "# soft-dirty bits: %s; not offered either way (clearing them is process-wide and would disturb "
      "every other tracker)\n",
      soft_dirty_works() ? "work on this kernel" : "do not work on this kernel");

  if (json) {
    std::printf(
        "{\"transfer_vs_memcpy\": %.3f, \"barrier_bytes_over_dirty_bytes\": %.3f, \"dirty_tracking_overhead\": %.3f}\n",
        chosen.ratio, barrier_ratio, default_overhead);
  } else {
    std::printf("transfer_vs_memcpy %.3f\nbarrier_bytes_over_dirty_bytes %.3f\ndirty_tracking_overhead %.3f\n",
                chosen.ratio, barrier_ratio, default_overhead);
  }
  return 0;
}
