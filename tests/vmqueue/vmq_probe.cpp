// A VM-queue domain for the VM tests (it runs inside the guests, tests/vm/vmq_vm_test.py) and
// for the device tests on this machine:
//   vmq_probe send ENDPOINT NAME PEER MESSAGES PAGES HUGE   MESSAGES messages of PAGES 4 KiB
//                  pages, then HUGE messages of one 2 MiB page, then an end marker, to PEER
//   vmq_probe recv ENDPOINT NAME PEER                      everything PEER sends, to its end marker
//                  (or an error: then what came before it and the error, exit status 2)
//   vmq_probe hostile ENDPOINT NAME    attaches, writes garbage into its own request ring's index
//                  and expects the broker to end it (exit 0 when it did)
//   vmq_probe flood ENDPOINT NAME SECONDS  attaches, then for SECONDS writes flush requests into
//                  its own request ring as fast as the broker takes them and never reads a reply;
//                  prints how many the broker took (bounded when the broker stops reading a domain
//                  it owes too many answers)
//   vmq_probe flood-introductions ENDPOINT NAME COUNT  attaches, asks for COUNT introductions to
//                  domains that do not exist (raw requests, never withdrawn), reads the answers
//                  and prints how many were refused
//   vmq_probe hold ENDPOINT NAME PAGES attaches, takes PAGES pages and dies without leaving (its
//                  heartbeat stops: the broker must take them back)
//   vmq_probe freeze ENDPOINT NAME PEER  attaches, is introduced to PEER, then stops itself
//                  (SIGSTOP: every thread, the heartbeat's too)
//   vmq_probe vandal ENDPOINT SECONDS   for SECONDS, writes garbage over every slot (state words,
//                  rings) of every VM-queue device it can map, and over the header of the shared
//                  pool device; prints what it reached. It never attaches.
//   vmq_probe wait-garbage ENDPOINT SECONDS  waits until a vandal's garbage shows at the start
//                  of a device ENDPOINT reaches (exit 0), or SECONDS pass (exit 1)
// ENDPOINT: as a domain takes it ("ivshmem:", "ivshmem:/a/file", "ivshmem:CONTROL,POOLS"); hostile
// and vandal look at every device it names (every ivshmem device of the VM for "ivshmem:").
// send and recv print one line: "sent|received M messages P pages B bytes crc32 X seconds S",
// the CRC-32 over every payload byte in order; send adds the time spent inside send() and the
// sends per second that makes (one broker round trip each), recv what the broker said the peer is.
// Payloads are pseudo-random, a different length each message.
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bypass/transport/layout.h"
#include "bypass/transport/slot_ring.h"
#include "bypass/transport/vm.h"
#include "bypass/vmqueue/domain.h"
#include "device.h"
#include "wire.h"

using namespace bypass::vmqueue;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

constexpr uint32_t kData = 1;
constexpr uint32_t kEnd = 2;

double since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

int fail(const char* what, const Error& e) {
  std::fprintf(stderr, "vmq_probe: %s: %s\n", what, e.message.c_str());
  return 2;
}
int fail(const char* what, Errc errc) {
  std::fprintf(stderr, "vmq_probe: %s: %s\n", what, to_string(errc));
  return 2;
}

// The broker may start after the guest: retry for a while.
Result<Domain> join(const std::string& endpoint, const std::string& name) {
  const auto give_up = Clock::now() + 60s;
  for (;;) {
    auto d = Domain::connect(endpoint, name);
    if (d.ok() || d.code() != Errc::kBrokerLost || Clock::now() > give_up) return d;
    ::usleep(100'000);
  }
}

int do_send(const std::string& endpoint, const std::string& name, const std::string& peer_name, int messages, int pages,
            int huge) {
  auto d = join(endpoint, name);
  if (!d) return fail("connect", d.error());
  // The other guest may still be booting.
  auto peer = d->introduce(peer_name, 120s);
  if (!peer) return fail("introduce", peer.error());
  const auto start = Clock::now();
  uLong crc = crc32(0, nullptr, 0);
  uint64_t bytes = 0, sent_pages = 0;
  std::mt19937_64 rng(0x766d71);
  Clock::duration in_send{};  // inside send(): the transport's share, without filling and checksumming
  for (int i = 0; i < messages + huge; ++i) {
    const bool is_huge = i >= messages;
    auto p = d->alloc(is_huge ? 1 : static_cast<size_t>(pages), is_huge ? PageSize::k2M : PageSize::k4K);
    if (!p) return fail("alloc", p.error());
    const size_t length = p->bytes().size() - static_cast<size_t>(i % 97) * 8;
    auto* words = reinterpret_cast<uint64_t*>(p->data());
    for (size_t w = 0; w < length / 8; ++w) words[w] = rng();
    crc = crc32(crc, reinterpret_cast<const Bytef*>(p->data()), static_cast<uInt>(length));
    bytes += length;
    sent_pages += p->count();
    const auto before = Clock::now();
    if (Errc e = d->send(peer->id, std::move(*p), length, {.tag = kData}); e != Errc::kOk) return fail("send", e);
    in_send += Clock::now() - before;
  }
  auto end = d->alloc(1);
  if (!end) return fail("alloc", end.error());
  if (Errc e = d->send(peer->id, std::move(*end), 0, {.tag = kEnd}); e != Errc::kOk) return fail("send", e);
  const double seconds = since(start);
  const double sending = std::chrono::duration<double>(in_send).count();
  std::printf("sent %d messages %llu pages %llu bytes crc32 %08lx seconds %.3f in-send %.3f sends/s %.0f\n",
              messages + huge, static_cast<unsigned long long>(sent_pages), static_cast<unsigned long long>(bytes), crc,
              seconds, sending, (messages + huge) / sending);
  // Stay until the receiver has everything: leaving is fine (messages sent are delivered), but
  // the test reads the receiver's identity of us while we are attached.
  auto bye = d->recv(60s);
  (void)bye;
  return 0;
}

int do_recv(const std::string& endpoint, const std::string& name, const std::string& peer_name) {
  auto d = join(endpoint, name);
  if (!d) return fail("connect", d.error());
  auto peer = d->introduce(peer_name, 120s);
  if (!peer) return fail("introduce", peer.error());
  uLong crc = crc32(0, nullptr, 0);
  uint64_t bytes = 0, pages = 0;
  int messages = 0;
  Clock::time_point start{};
  for (;;) {
    auto m = d->recv(60s);
    if (!m) {
      // What came before the error, then the error (a peer that died: kPeerDead).
      std::printf("received %d messages %llu pages %llu bytes crc32 %08lx, then: %s\n", messages,
                  static_cast<unsigned long long>(pages), static_cast<unsigned long long>(bytes), crc,
                  to_string(m.code()));
      return fail("recv", m.error());
    }
    if (m->sender != peer->id) {
      std::fprintf(stderr, "vmq_probe: a message from domain %u, not %u\n", m->sender, peer->id);
      return 3;
    }
    if (messages == 0) start = Clock::now();
    if (m->tag == kEnd) break;
    crc = crc32(crc, reinterpret_cast<const Bytef*>(m->data().data()), static_cast<uInt>(m->length));
    bytes += m->length;
    pages += m->pages.count();
    ++messages;
  }
  std::printf("received %d messages %llu pages %llu bytes crc32 %08lx seconds %.3f peer %s claimed %d pid %d\n",
              messages, static_cast<unsigned long long>(pages), static_cast<unsigned long long>(bytes), crc,
              since(start), peer->name.c_str(), peer->claimed ? 1 : 0, peer->pid);
  // Tell the sender it may go.
  auto bye = d->alloc(1);
  if (bye) (void)d->send(peer->id, std::move(*bye), 0, {.tag = kEnd});
  return 0;
}

// Every device `endpoint` reaches, as endpoints of one device each.
std::vector<std::string> reachable(const std::string& endpoint) {
  if (size_t comma = endpoint.find(','); comma != std::string::npos)
    return {endpoint.substr(0, comma), "ivshmem:" + endpoint.substr(comma + 1)};
  if (endpoint == "ivshmem:") {
    if (auto all = bypass::transport::list_vm_devices(); !all.empty()) return all;
  }
  return {endpoint};
}

// A device's header, when it is a VM-queue device whose slots fit in it.
device::Header* slots_header(bypass::base::Mapping& dev) {
  if (dev.size() < device::kHeaderBytes) return nullptr;
  auto* h = reinterpret_cast<device::Header*>(dev.data());
  if (h->magic != device::kMagic || h->slot_count == 0 || h->slot_count > device::kMaxSlots ||
      h->slots_offset > dev.size() || h->slot_bytes == 0 ||
      (dev.size() - h->slots_offset) / h->slot_bytes < h->slot_count)
    return nullptr;
  return h;
}

int do_hostile(const std::string& endpoint, const std::string& name) {
  auto d = join(endpoint, name);
  if (!d) return fail("connect", d.error());
  for (const std::string& one : reachable(endpoint)) {
    auto dev = bypass::transport::map_vm_device(one, device::kHeaderBytes);
    if (!dev) {
      std::fprintf(stderr, "vmq_probe: %s\n", dev.error().message.c_str());
      return 2;
    }
    device::Header* h = slots_header(*dev);
    if (h == nullptr) continue;
    for (uint32_t i = 0; i < h->slot_count; ++i) {
      device::Slot& slot = h->slots[i];
      if (slot.state.load(std::memory_order_acquire) != device::kSlotActive || slot.domain_id != d->self().id) continue;
      // The request ring's head, far past what the ring holds: the broker must end this domain
      // and nobody else.
      auto* control = reinterpret_cast<bypass::transport::layout::RingControl*>(dev->data() + h->slots_offset +
                                                                                uint64_t{i} * h->slot_bytes);
      control->head.store(0x0123456789abcdefull, std::memory_order_release);
      auto r = d->recv(20s);
      if (!r && r.code() == Errc::kBrokerLost) {
        std::printf("hostile: the broker ended this domain (%s)\n", to_string(r.code()));
        return 0;
      }
      std::printf("hostile: still served after garbage in the ring (%s)\n", r ? "a message" : to_string(r.code()));
      return 1;
    }
  }
  std::fprintf(stderr, "vmq_probe: found no active slot of domain %u\n", d->self().id);
  return 2;
}

// The region of `d`'s own slot in a device `endpoint` names (rings at wire::region_layout()
// offsets), mapped into `mapping`; nullptr when none was found.
std::byte* own_slot_region(const std::string& endpoint, const Domain& d, bypass::base::Mapping* mapping) {
  for (const std::string& one : reachable(endpoint)) {
    auto dev = bypass::transport::map_vm_device(one, device::kHeaderBytes);
    if (!dev) continue;
    device::Header* h = slots_header(*dev);
    if (h == nullptr) continue;
    for (uint32_t i = 0; i < h->slot_count; ++i) {
      device::Slot& slot = h->slots[i];
      if (slot.state.load(std::memory_order_acquire) != device::kSlotActive || slot.domain_id != d.self().id) continue;
      auto full = bypass::transport::map_vm_device(one, h->slots_offset + uint64_t{h->slot_count} * h->slot_bytes);
      if (!full) return nullptr;
      *mapping = std::move(full).value();
      return mapping->data() + h->slots_offset + uint64_t{i} * h->slot_bytes;
    }
  }
  std::fprintf(stderr, "vmq_probe: found no active slot of domain %u\n", d.self().id);
  return nullptr;
}

int do_flood(const std::string& endpoint, const std::string& name, int seconds) {
  auto d = join(endpoint, name);
  if (!d) return fail("connect", d.error());
  bypass::base::Mapping mapping;
  std::byte* region = own_slot_region(endpoint, *d, &mapping);
  if (region == nullptr) return 2;
  // Our own request ring, beside the Domain's view of it (which this process no longer uses).
  bypass::transport::SlotRing<wire::Record> requests(region + wire::region_layout(1).request_offset,
                                                     wire::kRequestSlots);
  uint64_t posted = 0;
  const auto end = Clock::now() + std::chrono::seconds(seconds);
  while (Clock::now() < end) {
    wire::Record* r = requests.producer_slot();
    if (r == nullptr) {
      ::usleep(1000);
      continue;
    }
    *r = wire::Record{};
    r->kind = static_cast<uint32_t>(wire::Kind::kFlush);
    r->req_id = static_cast<uint32_t>(1'000'000 + posted);
    requests.publish();
    ++posted;
  }
  std::printf("flood: posted %llu requests in %d s, %u not taken\n", static_cast<unsigned long long>(posted), seconds,
              wire::kRequestSlots - requests.producer_free());
  return 0;
}

int do_flood_introductions(const std::string& endpoint, const std::string& name, int count) {
  auto d = join(endpoint, name);
  if (!d) return fail("connect", d.error());
  bypass::base::Mapping mapping;
  std::byte* region = own_slot_region(endpoint, *d, &mapping);
  if (region == nullptr) return 2;
  const wire::RegionLayout layout = wire::region_layout(1);
  bypass::transport::SlotRing<wire::Record> requests(region + layout.request_offset, wire::kRequestSlots);
  bypass::transport::SlotRing<wire::Record> replies(region + layout.reply_offset, wire::kReplySlots);
  int posted = 0, answered = 0, refused = 0;
  const auto give_up = Clock::now() + 20s;
  while ((posted < count || answered < count - 64) && Clock::now() < give_up) {
    wire::Record r;
    bool kick = false;
    while (replies.pop(&r, &kick)) {
      ++answered;
      if (r.kind == static_cast<uint32_t>(wire::Kind::kIntroduced) && r.status == static_cast<uint8_t>(Errc::kFull))
        ++refused;
    }
    wire::Record* q = posted < count ? requests.producer_slot() : nullptr;
    if (q == nullptr) {
      ::usleep(1000);
      continue;
    }
    *q = wire::Record{};
    q->kind = static_cast<uint32_t>(wire::Kind::kIntroduce);
    q->req_id = static_cast<uint32_t>(1'000'000 + posted);
    wire::WireIdentity w{};
    wire::copy_name(w.name, "ghost-" + std::to_string(posted));
    std::memcpy(q->runs, &w, sizeof w);
    requests.publish();
    ++posted;
  }
  std::printf("flood-introductions: asked %d, %d answered, %d refused\n", posted, answered, refused);
  return 0;
}

int do_wait_garbage(const std::string& endpoint, int seconds) {
  std::vector<bypass::base::Mapping> devices;
  for (const std::string& one : reachable(endpoint)) {
    if (auto dev = bypass::transport::map_vm_device(one, 4096)) devices.push_back(std::move(dev).value());
  }
  const auto end = Clock::now() + std::chrono::seconds(seconds);
  while (Clock::now() < end) {
    for (auto& dev : devices) {
      if (std::atomic_ref(*reinterpret_cast<uint32_t*>(dev.data())).load(std::memory_order_relaxed) == 0xa5a5a5a5u) {
        std::printf("wait-garbage: seen\n");
        return 0;
      }
    }
    std::this_thread::sleep_for(10ms);
  }
  std::printf("wait-garbage: none in %d s\n", seconds);
  return 1;
}

int do_vandal(const std::string& endpoint, int seconds) {
  std::vector<bypass::base::Mapping> devices;
  for (const std::string& one : reachable(endpoint)) {
    auto dev = bypass::transport::map_vm_device(one, device::kHeaderBytes);
    if (!dev) {
      std::fprintf(stderr, "vmq_probe: %s\n", dev.error().message.c_str());
      return 2;
    }
    devices.push_back(std::move(dev).value());
  }
  // What each device is, read before the first write.
  std::vector<uint32_t> slots(devices.size(), 0);
  std::vector<uint64_t> slots_offset(devices.size(), 0), slot_bytes(devices.size(), 0);
  uint32_t total = 0;
  for (size_t k = 0; k < devices.size(); ++k) {
    if (device::Header* h = slots_header(devices[k])) {
      slots[k] = h->slot_count;
      slots_offset[k] = h->slots_offset;
      slot_bytes[k] = h->slot_bytes;
      total += h->slot_count;
    }
  }
  const auto end = Clock::now() + std::chrono::seconds(seconds);
  uint64_t passes = 0;
  std::mt19937_64 rng(42);
  do {
    for (size_t k = 0; k < devices.size(); ++k) {
      std::byte* base = devices[k].data();
      if (slots[k] == 0) {  // the shared pool device: its header
        std::memset(base, 0xa5, 4096);
        continue;
      }
      auto* h = reinterpret_cast<device::Header*>(base);
      for (uint32_t i = 0; i < slots[k]; ++i) {
        h->slots[i].state.store(static_cast<uint32_t>(rng()), std::memory_order_relaxed);
        h->slots[i].generation.store(static_cast<uint32_t>(rng()), std::memory_order_relaxed);
        h->slots[i].domain_id = static_cast<uint32_t>(rng());
        std::memset(base + slots_offset[k] + i * slot_bytes[k], static_cast<int>(rng() & 0xff), 4096);
      }
    }
    ++passes;
    std::this_thread::sleep_for(10ms);
  } while (Clock::now() < end);
  std::printf("vandal: %zu devices, %u slots overwritten, %llu passes\n", devices.size(), total,
              static_cast<unsigned long long>(passes));
  return 0;
}

int do_hold(const std::string& endpoint, const std::string& name, int pages) {
  auto d = join(endpoint, name);
  if (!d) return fail("connect", d.error());
  auto p = d->alloc(static_cast<size_t>(pages));
  if (!p) return fail("alloc", p.error());
  std::memset(p->data(), 0x5a, p->bytes().size());
  std::printf("holding %d pages, dying without leaving\n", pages);
  std::fflush(stdout);
  ::_exit(0);  // no destructors: the domain never says it leaves, its heartbeat just stops
}

int do_freeze(const std::string& endpoint, const std::string& name, const std::string& peer_name) {
  auto d = join(endpoint, name);
  if (!d) return fail("connect", d.error());
  auto peer = d->introduce(peer_name, 30s);
  if (!peer) return fail("introduce", peer.error());
  ::raise(SIGSTOP);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "send" && argc == 8)
    return do_send(argv[2], argv[3], argv[4], std::atoi(argv[5]), std::atoi(argv[6]), std::atoi(argv[7]));
  if (mode == "recv" && argc == 5) return do_recv(argv[2], argv[3], argv[4]);
  if (mode == "hostile" && argc == 4) return do_hostile(argv[2], argv[3]);
  if (mode == "flood" && argc == 5) return do_flood(argv[2], argv[3], std::atoi(argv[4]));
  if (mode == "flood-introductions" && argc == 5) return do_flood_introductions(argv[2], argv[3], std::atoi(argv[4]));
  if (mode == "hold" && argc == 5) return do_hold(argv[2], argv[3], std::atoi(argv[4]));
  if (mode == "freeze" && argc == 5) return do_freeze(argv[2], argv[3], argv[4]);
  if (mode == "vandal" && argc == 4) return do_vandal(argv[2], std::atoi(argv[3]));
  if (mode == "wait-garbage" && argc == 4) return do_wait_garbage(argv[2], std::atoi(argv[3]));
  std::fprintf(stderr,
               "usage: vmq_probe send ENDPOINT NAME PEER MESSAGES PAGES HUGE | recv ENDPOINT NAME PEER |\n"
               "       hostile ENDPOINT NAME | hold ENDPOINT NAME PAGES | freeze ENDPOINT NAME PEER |\n"
               "       vandal ENDPOINT SECONDS | wait-garbage ENDPOINT SECONDS\n");
  return 64;
}
