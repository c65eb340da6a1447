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

constexpr size_t kWritePiece = size_t{1} << 20;
constexpr uint64_t kReadWindow = uint64_t{8} << 20;

void write_one(Device* dev, uint64_t id, memshare::ShadowRegion& shadow, memshare::Range range) {
  Connection* conn = dev->conn;
  std::vector<uint8_t> record;
  auto sent = shadow.write_barrier(
      [&](uint64_t offset, std::span<const std::byte> bytes) -> memshare::Result<void> {
        // In records of at most kWritePiece: the batch goes out every 256 KiB, so a large dirty
        // run costs neither side a copy of its size (a 256 MiB upload over the network moves as
        // ~1 MiB messages; docs/network.md).
        while (!bytes.empty()) {
          const size_t n = std::min(bytes.size(), kWritePiece);
          wire::MemoryRange r{id, offset, n};
          record.resize(sizeof(r) + n);
          std::memcpy(record.data(), &r, sizeof(r));
          std::memcpy(record.data() + sizeof(r), bytes.data(), n);
          conn->send_raw(wire::kCtlMemoryWrite, record.data(), record.size());
          offset += n;
          bytes = bytes.subspan(n);
        }
        return memshare::ok_result();
      },
      range);
  if (!sent) conn->protocol_error("shadow write barrier: " + sent.error().message);
}

void read_window(Connection* conn, uint64_t id, memshare::ShadowRegion& shadow, uint64_t offset, uint64_t size);

void read_one(Device* dev, uint64_t id, memshare::ShadowRegion& shadow, memshare::Range range) {
  Connection* conn = dev->conn;
  // Pages written here but not yet sent go first, so the read does not discard them.
  write_one(dev, id, shadow, range);
  const uint64_t offset = range.offset;
  const uint64_t size = range.size == memshare::Range::kWhole ? shadow.size() - offset : range.size;
  // In windows of kReadWindow (aligned, so pages are not split where they need not be): no reply
  // is larger than that, whatever the memory's size.
  for (uint64_t at = offset, end = offset + size; at < end && conn->alive();) {
    const uint64_t next = std::min(end, (at / kReadWindow + 1) * kReadWindow);
    read_window(conn, id, shadow, at, next - at);
    at = next;
  }
}

void read_window(Connection* conn, uint64_t id, memshare::ShadowRegion& shadow, uint64_t offset, uint64_t size) {
  wire::MemoryRange r{id, offset, size};
  Reply& reply = thread_reply();
  if (!conn->call_raw(wire::kCtlMemoryRead, &r, sizeof(r), reply)) return;
  // The host sends only the runs that differ from our copy (host-server/include/bypass/host/guest_view.h).
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
  // After a wait: shadows from the host, then, while a submission that reaches imports may not
  // have been read back, what the application wrote into every import, and only then what the
  // device wrote back into the application's pages (imports may overlap).
  void read_barrier(Object* first) override {
    each(first, read_one);
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

 private:
  template <class Fn>
  void each(Object* first, Fn fn) {
    Device* dev = device_of(first);
    if (!dev) return;
    std::vector<std::pair<uint64_t, std::shared_ptr<memshare::ShadowRegion>>> shadows;
    {
      std::lock_guard lock(dev->mu);
      for (auto& [id, m] : dev->memory)
        if (m.shadow) shadows.emplace_back(id, m.shadow);
    }
    for (auto& [id, s] : shadows) fn(dev, id, *s, memshare::Range::whole());
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
  if (auto s = find_part(dev, memory_id, &Mapping::shadow)) read_one(dev, memory_id, *s, range);
  if (auto m = find_part(dev, memory_id, &Mapping::host_pointer)) {
    host_pointer_write(*m);  // what the application wrote since the last barrier stays
    host_pointer_read(*m);
  }
}

}  // namespace bypass::icd
