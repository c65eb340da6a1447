// Shadow memory (BYPASS_MEMORY=shadow): for a host the guest cannot share pages with (another
// machine, a driver without host-pointer import), host-visible memory is a guest-side copy.
// memshare's ShadowRegion tracks which pages the guest wrote; a write barrier (before each
// submission, at vkFlushMappedMemoryRanges) sends only those pages to the host; a read barrier
// (after a fence, semaphore or idle wait succeeds, at vkInvalidateMappedMemoryRanges) fetches
// the host's pages and writes only the ones that differ.
//
// The same barriers move memory imported from the application's own pages
// (VK_EXT_external_memory_host, HostPointerMirror in objects.h): the application's changed bytes
// into the allocation before a submission, the allocation's changed bytes back after a wait.
#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "config.h"
#include "objects.h"

namespace bypass::icd {

namespace {

Device* device_of(Object* o) {
  switch (o->type) {
    case VK_OBJECT_TYPE_DEVICE:
      return static_cast<Device*>(o);
    case VK_OBJECT_TYPE_QUEUE:
      return static_cast<Queue*>(o)->device;
    default:
      return nullptr;
  }
}

// A write barrier's record: whole pages (bypassd's view of the guest's copy trusts only whole
// pages), and with its headers within one network frame (net::kChunkBytes, 1 MiB), so that the
// relay passes it on without reassembling it.
constexpr size_t kWritePiece = (size_t{1} << 20) - 4096;
constexpr uint64_t kReadWindow = uint64_t{8} << 20;

void write_one(Device* dev, uint64_t id, memshare::ShadowRegion& shadow, memshare::Range range) {
  Connection* conn = dev->conn;
  auto sent = shadow.write_barrier(
      [&](uint64_t offset, std::span<const std::byte> bytes) -> memshare::Result<void> {
        // In records of at most kWritePiece: the batch goes out every 256 KiB, so a large dirty
        // run costs neither side a copy of its size (a 256 MiB upload over the network moves as
        // ~1 MiB messages; docs/network.md). The pages go straight into the batch.
        while (!bytes.empty()) {
          const size_t n = std::min(bytes.size(), kWritePiece);
          const wire::MemoryRange r{id, offset, n};
          conn->send_raw(wire::kCtlMemoryWrite, &r, sizeof(r), bytes.data(), n);
          offset += n;
          bytes = bytes.subspan(n);
        }
        return memshare::ok_result();
      },
      range);
  if (!sent) conn->protocol_error("shadow write barrier: " + sent.error().message);
}

// Calls fn(offset, size) for each read window of [offset, offset + size), while it returns true:
// aligned to kReadWindow, so pages are not split where they need not be, and no reply is larger
// than that whatever the memory's size.
template <class Fn>
void each_window(uint64_t offset, uint64_t size, Fn fn) {
  for (uint64_t at = offset, end = offset + size; at < end;) {
    const uint64_t next = std::min(end, (at / kReadWindow + 1) * kReadWindow);
    if (!fn(at, next - at)) return;
    at = next;
  }
}

// Applies a read barrier's reply for [offset, offset + size): the host sends only the runs that
// differ from our copy (host-server/include/bypass/host/guest_view.h).
void apply_read(Connection* conn, memshare::ShadowRegion& shadow, Reply& reply, uint64_t offset, uint64_t size) {
  const auto* data = reinterpret_cast<const std::byte*>(reply.data());
  wire::MemoryReadReply header;
  if (reply.size() < sizeof(header)) return conn->protocol_error("shadow read barrier: short reply");
  std::memcpy(&header, data, sizeof(header));
  const size_t table = sizeof(header) + size_t{header.runs} * sizeof(wire::MemoryRun);
  if (header.runs > reply.size() / sizeof(wire::MemoryRun) || table > reply.size())
    return conn->protocol_error("shadow read barrier: bad run count");
  const std::byte* bytes = data + table;
  size_t left = reply.size() - table;
  for (uint32_t i = 0; i < header.runs; ++i) {
    wire::MemoryRun run;
    std::memcpy(&run, data + sizeof(header) + i * sizeof(run), sizeof(run));
    if (run.offset < offset || run.size > left || run.offset - offset > size || run.size > size - (run.offset - offset))
      return conn->protocol_error("shadow read barrier: run out of range");
    auto read = shadow.read_barrier(bytes - run.offset, memshare::Range{run.offset, run.size});
    if (!read) return conn->protocol_error("shadow read barrier: " + read.error().message);
    bytes += run.size;
    left -= run.size;
  }
  if (left != 0) conn->protocol_error("shadow read barrier: trailing bytes");
}

uint64_t size_of(memshare::ShadowRegion& shadow, memshare::Range range) {
  return range.size == memshare::Range::kWhole ? shadow.size() - range.offset : range.size;
}

// A read of one window as a record wanting a reply: kCtlMemoryRead, or kCtlMemoryReadAfter riding
// `calls_back` calls behind a wait. Both payloads begin with the MemoryRange.
Follower read_record(uint64_t id, std::shared_ptr<memshare::ShadowRegion> shadow, uint64_t offset, uint64_t size,
                     uint64_t calls_back) {
  Follower f;
  f.owner = std::move(shadow);
  const wire::MemoryReadAfter a{{id, offset, size}, calls_back};
  const auto* bytes = reinterpret_cast<const uint8_t*>(&a);
  if (calls_back == 0) {
    f.command = wire::kCtlMemoryRead;
    f.payload.assign(bytes, bytes + sizeof(wire::MemoryRange));
  } else {
    f.command = wire::kCtlMemoryReadAfter;
    f.payload.assign(bytes, bytes + sizeof(a));
  }
  return f;
}

// Takes the replies of `reads`, in order, and applies each. A read bypassd skipped (only a
// kCtlMemoryReadAfter is) goes into *skipped as a plain read of the same window.
void take_reads(Connection* conn, std::span<Follower> reads, std::vector<Follower>* skipped) {
  for (Follower& f : reads) {
    Reply& reply = thread_reply();
    if (!conn->take_reply(f.seq, reply)) return;
    wire::MemoryRange r;
    std::memcpy(&r, f.payload.data(), sizeof(r));
    auto shadow = std::static_pointer_cast<memshare::ShadowRegion>(f.owner);
    wire::MemoryReadReply header{};
    if (reply.size() >= sizeof(header)) std::memcpy(&header, reply.data(), sizeof(header));
    if (header.flags & wire::kMemoryReadSkipped) {
      if (skipped) skipped->push_back(read_record(r.memory_id, shadow, r.offset, r.size, 0));
    } else {
      apply_read(conn, *shadow, reply, r.offset, r.size);
    }
  }
}

// Sends `reads` in one batch and applies their replies: one round trip for every window.
void read_all(Connection* conn, std::span<Follower> reads) {
  if (reads.empty() || !conn->send_calls(reads)) return;
  take_reads(conn, reads, nullptr);
}

// Adds a read of each window of `range` of the memory to `reads`.
void add_reads(uint64_t id, const std::shared_ptr<memshare::ShadowRegion>& shadow, memshare::Range range,
               uint64_t calls_back_base, std::vector<Follower>& reads) {
  each_window(range.offset, size_of(*shadow, range), [&](uint64_t at, uint64_t n) {
    reads.push_back(read_record(id, shadow, at, n, calls_back_base ? calls_back_base + reads.size() : 0));
    return true;
  });
}

void read_one(Device* dev, uint64_t id, const std::shared_ptr<memshare::ShadowRegion>& shadow, memshare::Range range) {
  // Pages written here but not yet sent go first, so the read does not discard them.
  write_one(dev, id, *shadow, range);
  std::vector<Follower> reads;
  add_reads(id, shadow, range, 0, reads);
  read_all(dev->conn, reads);
}

constexpr size_t kPage = 4096;

// Copies into `to` the bytes of `from` that differ from what both held at the last barrier
// (`synced`), and notes them there. Byte by byte, so that two imports of overlapping pages
// (ffmpeg imports each plane of a frame, and the planes share a page) merge what the device wrote
// through each instead of one page overwriting the other's.
void copy_changed(HostPointerMirror& m, const std::byte* from, std::byte* to) {
  std::byte* synced = m.synced.data();
  for (size_t at = 0; at < m.size; at += kPage) {
    const size_t n = std::min(kPage, m.size - at);
    if (std::memcmp(from + at, synced + at, n) == 0) continue;
    for (size_t i = at; i < at + n; ++i) {
      if (from[i] == synced[i]) continue;
      to[i] = from[i];
      synced[i] = from[i];
    }
  }
}

class ShadowHooks final : public MemoryHooks {
 public:
  // Before a submission: the application's pages into imported memory (when the submission may
  // reach it: ImportTracker), then shadows to the host.
  void write_barrier(Object* first, bool imports) override {
    if (imports)
      for (auto& m : mirrors(first)) host_pointer_write(*m);
    each(first, write_one);
  }
  // After a wait: shadows from the host (all in one batch), then the imports (read_imports).
  void read_barrier(Object* first) override {
    Device* dev = device_of(first);
    if (!dev) return;
    std::vector<Follower> reads;
    const WaitReads wanted = wait_reads(dev);
    for (auto& [id, s] : wanted.shadows) {
      write_one(dev, id, *s, memshare::Range::whole());  // so the read does not discard them
      add_reads(id, s, memshare::Range::whole(), 0, reads);
    }
    count(dev, wanted, reads.size());
    read_all(dev->conn, reads);
    read_imports(first);
  }
  // Before a wait through bypassd: the guest's writes, then a read of every window of every
  // shadow behind the call (kCtlMemoryReadAfter), which bypassd answers only if the wait
  // succeeded at once. None when there are more than kMaxReadAhead windows: read after.
  void read_ahead(Object* first, std::vector<Follower>& followers) override {
    Device* dev = device_of(first);
    if (!dev) return;
    const WaitReads wanted = wait_reads(dev);
    size_t windows = 0;
    for (auto& [id, s] : wanted.shadows)
      each_window(0, s->size(), [&](uint64_t, uint64_t) { return ++windows <= kMaxReadAhead; });
    if (windows > kMaxReadAhead) return;
    const size_t before = followers.size();
    for (auto& [id, s] : wanted.shadows) {
      write_one(dev, id, *s, memshare::Range::whole());
      add_reads(id, s, memshare::Range::whole(), 1, followers);
    }
    count(dev, wanted, followers.size() - before);
  }
  // After it: each read's reply applied; what bypassd skipped (the wait went on on one of its
  // waiter threads) is read now, in one batch, if the wait succeeded. Then the imports.
  void finish_read_ahead(Object* first, std::vector<Follower>& followers, bool succeeded) override {
    Device* dev = device_of(first);
    if (!dev) return;
    std::vector<Follower> skipped;
    take_reads(dev->conn, followers, &skipped);
    if (!succeeded) return;
    if (followers.empty()) return read_barrier(first);  // read_ahead sent none
    uint64_t written = 0;  // what the application wrote meanwhile goes first, as in read_one
    for (Follower& f : skipped) {
      wire::MemoryRange r;
      std::memcpy(&r, f.payload.data(), sizeof(r));
      if (r.memory_id == written) continue;
      write_one(dev, r.memory_id, *std::static_pointer_cast<memshare::ShadowRegion>(f.owner), memshare::Range::whole());
      written = r.memory_id;
    }
    read_all(dev->conn, skipped);
    read_imports(first);
  }

 private:
  static constexpr size_t kMaxReadAhead = 64;  // windows: 512 MiB of mapped memory

  using Shadows = std::vector<std::pair<uint64_t, std::shared_ptr<memshare::ShadowRegion>>>;
  // Every shadow (write barriers).
  static Shadows shadows_of(Device* dev) {
    Shadows shadows;
    std::lock_guard lock(dev->mu);
    for (auto& [id, m] : dev->memory)
      if (m.shadow) shadows.emplace_back(id, m.shadow);
    return shadows;
  }
  // The shadows a wait's read barrier reads: not Mapping::explicit_reads ones, and only memory
  // the device may have written (Mapping::device_writes); and what it left out.
  struct WaitReads {
    Shadows shadows;
    uint64_t left_out = 0;
    uint64_t left_out_bytes = 0;
  };
  static WaitReads wait_reads(Device* dev) {
    WaitReads reads;
    std::lock_guard lock(dev->mu);
    for (auto& [id, m] : dev->memory) {
      if (!m.shadow || m.explicit_reads) continue;
      if (m.device_writes) {
        reads.shadows.emplace_back(id, m.shadow);
      } else {
        ++reads.left_out;
        reads.left_out_bytes += m.shadow->size();
      }
    }
    return reads;
  }
  // Counts a wait's reads that go out (Device::wait_read_windows and the left-out figures).
  static void count(Device* dev, const WaitReads& reads, size_t windows) {
    dev->wait_read_windows.fetch_add(windows, std::memory_order_relaxed);
    dev->wait_reads_left_out.fetch_add(reads.left_out, std::memory_order_relaxed);
    dev->wait_bytes_left_out.fetch_add(reads.left_out_bytes, std::memory_order_relaxed);
  }

  template <class Fn>
  void each(Object* first, Fn fn) {
    Device* dev = device_of(first);
    if (!dev) return;
    for (auto& [id, s] : shadows_of(dev)) fn(dev, id, *s, memshare::Range::whole());
  }

  // While a submission that reaches imports may not have been read back: what the application
  // wrote into every import, and only then what the device wrote back into the application's
  // pages (imports may overlap).
  static void read_imports(Object* first) {
    Device* dev = device_of(first);
    if (!dev) return;
    Connection* conn = dev->conn;
    std::vector<uint64_t> settles;
    if (!conn->imports().read_due([&](uint64_t s) { return seen_by_feedback(conn, s); }, &settles)) return;
    const auto all = mirrors(first);
    for (auto& m : all) host_pointer_write(*m);
    for (auto& m : all) host_pointer_read(*m);
    conn->imports().settled(settles);
  }

  static std::vector<std::shared_ptr<HostPointerMirror>> mirrors(Object* first) {
    std::vector<std::shared_ptr<HostPointerMirror>> out;
    Device* dev = device_of(first);
    if (!dev) return out;
    std::lock_guard lock(dev->mu);
    for (auto& [id, m] : dev->memory)
      if (m.host_pointer) out.push_back(m.host_pointer);
    return out;
  }
};

// Memory `memory_id`'s shadow (&Mapping::shadow) or mirror (&Mapping::host_pointer), if any.
template <class T>
std::shared_ptr<T> find_part(Device* dev, uint64_t memory_id, std::shared_ptr<T> Mapping::*part) {
  std::lock_guard lock(dev->mu);
  auto it = dev->memory.find(memory_id);
  return it == dev->memory.end() ? nullptr : it->second.*part;
}

}  // namespace

bool shadow_memory_enabled() { return config().shadow_memory; }

void host_pointer_start(HostPointerMirror& m) {
  std::lock_guard lock(m.mu);
  m.synced.assign(m.app, m.app + m.size);
  std::memcpy(m.memory, m.app, m.size);
}

namespace {

// Whether the application's pages are still there. The spec wants them to outlive the import,
// but programs free a frame's buffer first and the memory object later (ffmpeg's downloads), and
// a barrier touches every import of the device: once gone, the mirror stops (msync finds any
// page of the range unmapped: ENOMEM).
bool app_pages_there(HostPointerMirror& m) {
  if (m.app && ::msync(m.app, m.size, MS_ASYNC) != 0) m.app = nullptr;
  return m.app != nullptr && m.memory != nullptr;
}

}  // namespace

void host_pointer_write(HostPointerMirror& m) {
  std::lock_guard lock(m.mu);
  if (app_pages_there(m)) copy_changed(m, m.app, m.memory);
}

void host_pointer_read(HostPointerMirror& m) {
  std::lock_guard lock(m.mu);
  if (app_pages_there(m)) copy_changed(m, m.memory, m.app);
}

MemoryHooks* shadow_hooks() {
  static ShadowHooks hooks;
  return &hooks;
}

void shadow_write_barrier(Device* dev, uint64_t memory_id, memshare::Range range) {
  if (auto m = find_part(dev, memory_id, &Mapping::host_pointer)) host_pointer_write(*m);
  if (auto s = find_part(dev, memory_id, &Mapping::shadow)) write_one(dev, memory_id, *s, range);
}

void shadow_read_barrier(Device* dev, uint64_t memory_id, memshare::Range range) {
  if (auto s = find_part(dev, memory_id, &Mapping::shadow)) read_one(dev, memory_id, s, range);
  if (auto m = find_part(dev, memory_id, &Mapping::host_pointer)) {
    host_pointer_write(*m);  // what the application wrote since the last barrier stays
    host_pointer_read(*m);
  }
}

}  // namespace bypass::icd
