#include "bypass/vmqueue/domain.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <immintrin.h>
#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "bypass/base/mapping.h"
#include "bypass/base/text.h"
#include "bypass/transport/doorbell.h"
#include "bypass/transport/kick.h"
#include "bypass/transport/session.h"
#include "bypass/transport/vm.h"
#include "device.h"
#include "page_pool.h"
#include "wire.h"

namespace bypass::vmqueue {

using wire::Kind;
using wire::Record;
using Clock = std::chrono::steady_clock;

namespace {
// How long a waiting domain spins on its rings before it sleeps in poll(): long enough to
// catch a reply from a busy broker, short enough not to starve it on a small machine.
constexpr auto kSpin = std::chrono::microseconds(20);
// Pages a domain keeps unmapped in its local cache before giving the excess back to the host.
constexpr uint32_t kCacheLimit[2] = {2048, 4};
// Extra 4 KiB pages asked for on a cache miss, so small allocations rarely need the host.
constexpr uint32_t kRefill4K = 256;
constexpr uint32_t kNotCached = 1;
}  // namespace

namespace detail {

struct DomainState : std::enable_shared_from_this<DomainState> {
  Identity self;
  std::optional<transport::Channel> channel;  // the session with the broker (set-up, death)
  int sock = -1;                              // its socket, polled for the broker's death
  base::Mapping region;
  base::UniqueFd pool_fds[2];
  uint64_t pool_offset[2] = {0, 0};  // where each pool starts in its fd (a VM device: the BAR)
  uint32_t pool_pages[2] = {0, 0};
  transport::Kick broker_kick;
  transport::Kick kick;
  std::unique_ptr<transport::Doorbell> doorbell;  // a VM domain's slot doorbell, if both hold it
  SlotRing<Record> requests;                      // produced here
  SlotRing<Record> replies;                       // consumed here
  SlotRing<Record> queue;                         // consumed here
  bool hugetlb = false;
  bool lost = false;    // broker gone
  bool closed = false;  // Domain destroyed; Pages left over just unmap
  uint32_t next_req = 1;
  std::map<uint32_t, Record> answers;  // replies by req_id
  std::map<uint32_t, Identity> peers;
  std::vector<Identity> dead;
  size_t dead_reported = 0;
  PagePool cache[2];  // "free" = owned by this domain, unmapped, ready for alloc()

  // A domain inside a VM (connect("ivshmem:...")): the device's header and slots (`region` is
  // this mapping; the pools are mapped per message from pool_fds), our slot and the generation
  // we claimed it with, the broker's heartbeat as last seen, and our heartbeat thread.
  device::Header* vm_header = nullptr;
  device::Slot* vm_slot = nullptr;
  uint32_t vm_generation = 0;
  uint64_t host_beat = 0;
  Clock::time_point host_beat_moved;
  std::thread beat_thread;
  std::mutex beat_mu;
  std::condition_variable beat_cv;
  bool beat_stop = false;  // guarded by beat_mu

  bool vm() const { return vm_slot != nullptr; }
  // Whether the broker can wake this domain: a process domain's kick, a VM domain's doorbell.
  bool kicked() const { return !vm() || doorbell != nullptr; }
  ~DomainState() { stop_beating(); }

  // ---- waking the broker ----

  // A process domain kicks the broker's eventfd, a VM domain rings its doorbell; without one
  // nobody kicks (the broker polls its rings: the ring already bumped the word it watches).
  void kick_broker() {
    if (broker_kick) {
      broker_kick.signal();
    } else if (doorbell) {
      doorbell->ring();
    }
  }

  // A VM domain's view of the broker: gone when it took our slot away (or gave it to another
  // guest) or its heartbeat stood still for kHostTimeout.
  void check_broker() {
    if (!vm() || lost) return;
    // Acquire: pairs with the broker's release store of the state.
    if (vm_slot->state.load(std::memory_order_acquire) != device::kSlotActive ||
        vm_slot->generation.load(std::memory_order_relaxed) != vm_generation) {
      lost = true;
      return;
    }
    const uint64_t beat = vm_header->host_heartbeat.load(std::memory_order_relaxed);
    const auto now = Clock::now();
    if (beat != host_beat) {
      host_beat = beat;
      host_beat_moved = now;
    } else if (now - host_beat_moved > device::kHostTimeout) {
      lost = true;
    }
  }

  // Sleeps until `ready()`, at most `timeout` and one liveness slice, then looks at the broker.
  // On the doorbell the caller announced its sleep on the rings first (the broker rings only a
  // sleeper); its end is the broker's death (the stream lives as long as vmqd).
  template <class Ready>
  void vm_wait(Ready ready, std::chrono::nanoseconds timeout) {
    constexpr std::chrono::nanoseconds kSlice = std::chrono::milliseconds(50);
    const std::chrono::nanoseconds slice = std::clamp(timeout, std::chrono::nanoseconds(0), kSlice);
    if (!doorbell) {
      transport::vm_poll_until(ready, slice);
    } else if (doorbell->sleep_until(ready, Clock::now() + slice) == transport::Doorbell::Woke::kEnded) {
      lost = true;
      return;
    }
    check_broker();
  }

  void start_beating() {
    beat_thread = std::thread([this] {
      std::unique_lock lock(beat_mu);
      while (!beat_stop) {
        // Relaxed: only its change matters, read by the broker's serve_device().
        vm_slot->guest_heartbeat.fetch_add(1, std::memory_order_relaxed);
        beat_cv.wait_for(lock, device::kGuestBeat, [this] { return beat_stop; });
      }
    });
  }

  void stop_beating() {
    if (!beat_thread.joinable()) return;
    {
      std::lock_guard lock(beat_mu);
      beat_stop = true;
    }
    beat_cv.notify_all();
    beat_thread.join();
  }

  // ---- waiting ----

  // Pulls every reply-ring record into `answers` / `peers` / `dead`.
  void drain_replies() {
    Record r;
    bool kick_broker = false;
    while (replies.pop(&r, &kick_broker)) {
      switch (static_cast<Kind>(r.kind)) {
        case Kind::kIntroduced:
          if (r.status == 0) {
            wire::WireIdentity w;
            std::memcpy(&w, r.runs, sizeof w);
            w.name[wire::kNameMax] = 0;
            peers[r.peer] = Identity{r.peer, std::string(wire::name_of(w.name)), w.pid, w.uid,
                                     w.gid,  (w.flags & wire::kClaimed) != 0};
          }
          answers[r.req_id] = r;
          break;
        case Kind::kPeerDown: {
          auto it = peers.find(r.peer);
          if (it != peers.end()) {
            dead.push_back(it->second);
            peers.erase(it);
          }
          break;
        }
        default:
          answers[r.req_id] = r;
          break;
      }
    }
    if (kick_broker) this->kick_broker();
  }

  // Sleeps until the broker kicks this domain, the deadline passes or the broker dies.
  // `ready` is re-checked after announcing sleep so no kick is missed.
  template <class Ready>
  void wait(Clock::time_point deadline, bool forever, Ready ready) {
    auto spin_until = Clock::now() + kSpin;
    while (Clock::now() < spin_until) {
      if (ready()) return;
      _mm_pause();
    }
    // Announce the sleep where the broker can wake us (a kick, a doorbell); a VM domain without
    // a doorbell polls, and announces no sleep the broker would have to serve.
    if (kicked()) {
      queue.consumer_prepare_wait();
      replies.consumer_prepare_wait();
      if (ready()) return;
    }
    if (vm()) {
      vm_wait(ready, forever ? std::chrono::nanoseconds::max() : deadline - Clock::now());
      return;
    }
    int timeout_ms = -1;
    if (!forever) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      timeout_ms = static_cast<int>(std::clamp<long long>(left + 1, 0, 1'000'000));
    }
    if (transport::wait_kick_or_hangup(kick, sock, timeout_ms) == transport::KickWait::kPeerGone) lost = true;
  }

  bool push(const Record& r) {
    for (;;) {
      if (lost) return false;
      if (Record* slot = requests.producer_slot()) {
        *slot = r;
        if (requests.publish()) kick_broker();
        return true;
      }
      if (requests.corrupt()) {
        lost = true;
        return false;
      }
      if (kicked() && requests.producer_prepare_wait()) continue;
      if (vm()) {
        vm_wait([&] { return requests.producer_slot() != nullptr; }, std::chrono::milliseconds(100));
        continue;
      }
      if (transport::wait_kick_or_hangup(kick, sock, 100) == transport::KickWait::kPeerGone) lost = true;
    }
  }

  // Waits for the reply to req_id. Returns false on timeout or broker loss (see `lost`).
  bool await(uint32_t req_id, Clock::time_point deadline, bool forever, Record* out) {
    for (;;) {
      drain_replies();
      auto it = answers.find(req_id);
      if (it != answers.end()) {
        *out = it->second;
        answers.erase(it);
        return true;
      }
      if (lost) return false;
      if (!forever && Clock::now() >= deadline) return false;
      wait(deadline, forever, [&] { return replies.consumer_slot() != nullptr; });
    }
  }

  // Gives up on request `req_id` (a parked send, an introduction waiting for its peer) and
  // takes its answer: the withdrawal's, or the one the broker sent just before it saw it.
  bool withdraw(uint32_t req_id, Record* answer) {
    Record cancel{};
    cancel.kind = static_cast<uint32_t>(Kind::kCancel);
    cancel.req_id = req_id;
    return push(cancel) && await(req_id, {}, true, answer);
  }

  Errc call(Record req, Record* answer) {
    req.req_id = next_req++;
    if (!push(req)) return Errc::kBrokerLost;
    if (!await(req.req_id, {}, true, answer)) return Errc::kBrokerLost;
    return static_cast<Errc>(answer->status);
  }

  // ---- page mappings ----

  // Address ranges of earlier messages, PROT_NONE, by page size and length: a message's pages
  // are mapped into one of these (MAP_FIXED) and put back the same way, so a stream of messages
  // of one size reserves and unmaps no address space per message.
  std::multimap<std::pair<int, size_t>, std::byte*> spare_ranges;
  static constexpr size_t kSpareRanges = 256;  // each is a mapping the kernel counts (vm.max_map_count)

  std::byte* reserve(size_t count, PageSize size) {
    size_t pb = page_bytes(size);
    size_t len = count * pb;
    if (auto it = spare_ranges.find({static_cast<int>(size), len}); it != spare_ranges.end()) {
      std::byte* base = it->second;
      spare_ranges.erase(it);
      return base;
    }
    size_t slack = size == PageSize::k2M ? pb : 0;
    void* p = ::mmap(nullptr, len + slack, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    auto addr = reinterpret_cast<uintptr_t>(p);
    uintptr_t aligned = (addr + pb - 1) / pb * pb;
    if (slack > 0) {
      if (aligned > addr) ::munmap(p, aligned - addr);
      uintptr_t end = addr + len + slack;
      if (end > aligned + len) ::munmap(reinterpret_cast<void*>(aligned + len), end - (aligned + len));
    }
    return reinterpret_cast<std::byte*>(aligned);
  }

  bool map_runs(std::byte* base, const std::vector<Pages::Run>& runs, PageSize size) {
    size_t pb = page_bytes(size);
    size_t pos = 0;
    for (const auto& r : runs) {
      void* want = base + pos * pb;
      const int k = static_cast<int>(size);
      void* got = ::mmap(want, r.count * pb, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, pool_fds[k].get(),
                         static_cast<off_t>(pool_offset[k] + uint64_t{r.first} * pb));
      if (got == MAP_FAILED) return false;
      pos += r.count;
    }
    return true;
  }

  // Builds Pages over `runs`: reserves a range and maps every run into it back to back.
  Result<Pages> make_pages(std::vector<Pages::Run> runs, PageSize size) {
    size_t count = 0;
    for (const auto& r : runs) count += r.count;
    std::byte* base = reserve(count, size);
    if (base == nullptr) return make_error(Errc::kNoPages);
    if (!map_runs(base, runs, size)) {
      release(base, count, size, true);
      return make_error(Errc::kNoPages);
    }
    Pages p;
    p.state_ = shared_from_this();
    p.base_ = base;
    p.count_ = count;
    p.size_ = size;
    p.runs_ = std::move(runs);
    return p;
  }

  // Replaces whatever `base` maps with an inaccessible reservation of the same range: the pages
  // are out of this domain's reach, the address stays ours.
  static bool hide(std::byte* base, size_t len) {
    return ::mmap(base, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) != MAP_FAILED;
  }

  // A message's range, done with: unmapped, or kept for the next one of its size (hidden first
  // unless it already is: `mapped`).
  void release(std::byte* base, size_t count, PageSize size, bool mapped) {
    const size_t len = count * page_bytes(size);
    if (closed || spare_ranges.size() >= kSpareRanges || (mapped && !hide(base, len))) {
      ::munmap(base, len);
      return;
    }
    spare_ranges.emplace(std::pair{static_cast<int>(size), len}, base);
  }

  // Pages dropped by their holder: unmapped, then cached (or given back) for later alloc().
  void give_back(Pages& p) {
    release(p.base_, p.count_, p.size_, true);
    if (closed || lost) return;
    int k = static_cast<int>(p.size_);
    std::vector<wire::PageRun> runs;
    for (const auto& r : p.runs_) runs.push_back(wire::PageRun{r.first, r.count});
    cache[k].transfer(runs, kNotCached, PagePool::kFree);
    trim_cache(p.size_);
  }

  void trim_cache(PageSize size) {
    int k = static_cast<int>(size);
    while (cache[k].free_pages() > kCacheLimit[k]) {
      std::vector<wire::PageRun> runs;
      uint32_t n = cache[k].take_any(cache[k].free_pages() - kCacheLimit[k], kNotCached, wire::kMaxRuns, &runs);
      if (n == 0) break;
      Record r{};
      r.kind = static_cast<uint32_t>(Kind::kFree);
      r.page_size = static_cast<uint8_t>(size);
      r.n_runs = static_cast<uint32_t>(runs.size());
      std::copy(runs.begin(), runs.end(), r.runs);
      if (!push(r)) return;
    }
  }

  // Every pool page starts "not cached" (not ours) in the local cache.
  void init_caches() {
    for (int k = 0; k < 2; ++k) {
      cache[k] = PagePool(pool_pages[k]);
      std::vector<wire::PageRun> all;
      if (pool_pages[k] > 0) cache[k].allocate(pool_pages[k], kNotCached, 1, &all);
    }
  }

  void close() {
    closed = true;
    for (const auto& [key, base] : spare_ranges) ::munmap(base, key.second);
    spare_ranges.clear();
    if (channel) channel->close();
    sock = -1;
    if (vm()) {
      stop_beating();
      // Leave: the broker serves what we posted, then frees our pages and the slot. Only our
      // own claim: a slot the broker already gave away is not ours to touch.
      uint32_t expected = device::kSlotActive;
      if (vm_slot->generation.load(std::memory_order_relaxed) == vm_generation)
        vm_slot->state.compare_exchange_strong(expected, device::kSlotLeaving, std::memory_order_acq_rel);
    }
  }
};

}  // namespace detail

// ------------------------------------------------------------------- Pages

Pages::Pages(Pages&& other) noexcept
    : state_(std::move(other.state_)),
      base_(std::exchange(other.base_, nullptr)),
      count_(std::exchange(other.count_, 0)),
      size_(other.size_),
      runs_(std::move(other.runs_)) {}

Pages& Pages::operator=(Pages&& other) noexcept {
  if (this != &other) {
    Pages dropped(std::move(*this));
    state_ = std::move(other.state_);
    base_ = std::exchange(other.base_, nullptr);
    count_ = std::exchange(other.count_, 0);
    size_ = other.size_;
    runs_ = std::move(other.runs_);
  }
  return *this;
}

Pages::~Pages() {
  if (base_ == nullptr || !state_) return;
  state_->give_back(*this);
}

// ------------------------------------------------------------------- Domain

Domain::Domain(std::shared_ptr<detail::DomainState> state) : s_(std::move(state)) {}
Domain::Domain(Domain&&) noexcept = default;
Domain& Domain::operator=(Domain&& other) noexcept {
  if (this != &other) {
    if (s_) s_->close();
    s_ = std::move(other.s_);
  }
  return *this;
}
Domain::~Domain() {
  if (s_) s_->close();
}

Result<Domain> Domain::connect(const std::string& socket_path, std::string_view name, QueueOptions options) {
  if (!wire::valid_name(name) || options.capacity == 0 || options.capacity > wire::kMaxQueueCapacity ||
      options.lazy_delay.count() < 0 || options.lazy_delay > std::chrono::seconds(10))
    return make_error(Errc::kInvalid);
  if (socket_path.starts_with("ivshmem:")) return connect_device(socket_path, name, options);
  auto s = std::make_shared<detail::DomainState>();
  // Session set-up on the transport: handshake (versions, schema hash, name), then our queue
  // options, the broker's welcome and the fds of the region, pools and kicks.
  auto deadline = transport::deadline_after(std::chrono::seconds(5));
  transport::Hello mine{wire::kVersion, wire::kSchemaHash, std::string(name)};
  auto channel = transport::connect(socket_path, mine, deadline);
  // Refused: the broker speaks another version of the queue protocol (the line names both).
  if (!channel) {
    return make_error(channel.code() == transport::Status::kRefused ? Errc::kProtocol : Errc::kBrokerLost,
                      channel.error().message);
  }
  wire::Hello hello;
  wire::copy_name(hello.name, name);
  hello.queue_capacity = options.capacity;
  hello.lazy_delay_us = static_cast<uint32_t>(options.lazy_delay.count());
  hello.default_delivery = static_cast<uint8_t>(options.default_delivery);
  wire::Welcome welcome;
  std::vector<base::UniqueFd> fds;
  transport::Message msg;
  if (channel->send(wire::kSessionHello, std::as_bytes(std::span(&hello, 1)), deadline) != transport::Status::kOk ||
      channel->recv(msg, deadline) != transport::Status::kOk)
    return make_error(Errc::kBrokerLost);
  if (msg.kind != wire::kSessionWelcome || msg.payload.size() != sizeof welcome) return make_error(Errc::kProtocol);
  std::memcpy(&welcome, msg.payload.data(), sizeof welcome);
  if (welcome.magic == wire::kMagic && welcome.status == 0) {
    uint64_t tag = 0;
    std::vector<int> raw;
    if (channel->recv_fds(tag, raw, deadline) != transport::Status::kOk) return make_error(Errc::kBrokerLost);
    for (int fd : raw) fds.emplace_back(fd);
    if (tag != wire::kWelcomeFdTag) return make_error(Errc::kProtocol);
  }
  if (welcome.magic != wire::kMagic || welcome.version != wire::kVersion) return make_error(Errc::kProtocol);
  if (welcome.status == static_cast<uint32_t>(Errc::kFull))
    return make_error(Errc::kFull, "the broker serves as many domains as it may (vmqd --max-domains)");
  if (welcome.status != 0) return make_error(static_cast<Errc>(welcome.status));
  wire::RegionLayout layout = wire::region_layout(welcome.queue_capacity);
  if (fds.size() != wire::kWelcomeFds || welcome.region_size != layout.size ||
      welcome.queue_capacity != options.capacity)
    return make_error(Errc::kProtocol);
  auto region = base::Mapping::map_shared(fds[wire::kFdRegion].get(), 0, layout.size, /*writable=*/true);
  if (!region) return make_error(Errc::kProtocol);  // not the region the welcome described
  s->region = std::move(region).value();
  s->requests = SlotRing<Record>(s->region.data() + layout.request_offset, wire::kRequestSlots);
  s->replies = SlotRing<Record>(s->region.data() + layout.reply_offset, wire::kReplySlots);
  s->queue = SlotRing<Record>(s->region.data() + layout.queue_offset, welcome.queue_capacity);
  s->pool_fds[0] = std::move(fds[wire::kFdPool4K]);
  s->pool_fds[1] = std::move(fds[wire::kFdPool2M]);
  s->pool_pages[0] = welcome.pages_4k;
  s->pool_pages[1] = welcome.pages_2m;
  s->pool_offset[0] = welcome.pool_offset[0];
  s->pool_offset[1] = welcome.pool_offset[1];
  s->init_caches();
  s->broker_kick = transport::Kick(std::move(fds[wire::kFdBrokerKick]));
  s->kick = transport::Kick(std::move(fds[wire::kFdDomainKick]));
  s->hugetlb = welcome.huge_backing == static_cast<uint8_t>(wire::HugeBacking::kHugetlb);
  s->channel = std::move(channel).value();
  s->sock = s->channel->socket_fd();
  s->self = Identity{welcome.domain_id, std::string(name), static_cast<int>(::getpid()), ::getuid(), ::getgid()};
  return Domain(std::move(s));
}

namespace {

// What a VM domain attaches through: the device with its slots (and its header, copied once),
// and, when that is a VM's own control device, the shared device with the pools.
struct VmDevices {
  transport::VmDeviceFile control;
  // The header's numbers, copied once (a guest may write the device at any time).
  struct {
    uint32_t version, slot_count, max_queue_capacity, flags;
    uint64_t size, schema_hash, slots_offset, slot_bytes, pool_device_size;
    uint64_t pool_offset[2];
    uint32_t pool_pages[2];
    std::string doorbell_name;  // empty: no doorbells (or a name no port can have)
  } header{};
  transport::VmDeviceFile pools;  // fd -1: the pools are in `control`
};

// Opens the device behind `endpoint` and copies its header, which must be a VM-queue device's
// of this version.
Result<VmDevices> open_vm_queue_device(const std::string& endpoint) {
  using base::str_printf;
  auto opened = transport::open_vm_device(endpoint, device::kHeaderBytes);
  if (!opened) return make_error(Errc::kBrokerLost, opened.error().message);
  VmDevices found;
  found.control = std::move(opened).value();
  const std::string& path = found.control.path;
  auto head = base::Mapping::map_shared(found.control.fd.get(), 0, device::kHeaderBytes, /*writable=*/false);
  if (!head) return make_error(Errc::kBrokerLost, "cannot map " + path + ": " + head.error().message);
  const auto* h = reinterpret_cast<const device::Header*>(head->data());
  // Acquire: pairs with the broker's release store of the magic after the rest of the header.
  if (std::atomic_ref(const_cast<uint32_t&>(h->magic)).load(std::memory_order_acquire) != device::kMagic)
    return make_error(Errc::kBrokerLost, path + " is not a VM-queue device (no vmqd --device serving it?)");
  auto& copy = found.header;
  copy.version = h->version;
  copy.slot_count = h->slot_count;
  copy.max_queue_capacity = h->max_queue_capacity;
  copy.flags = h->flags;
  copy.size = h->size;
  copy.schema_hash = h->schema_hash;
  copy.slots_offset = h->slots_offset;
  copy.slot_bytes = h->slot_bytes;
  copy.pool_device_size = h->pool_device_size;
  for (int k = 0; k < 2; ++k) {
    copy.pool_offset[k] = h->pool_offset[k];
    copy.pool_pages[k] = h->pool_pages[k];
  }
  copy.doorbell_name = transport::doorbell_name(h->doorbells);
  if (found.header.version != device::kVersion || found.header.schema_hash != wire::kSchemaHash) {
    return make_error(Errc::kProtocol,
                      str_printf("vmqd's device speaks version %u (schema %016llx), this domain %u (schema %016llx)",
                                 found.header.version, static_cast<unsigned long long>(found.header.schema_hash),
                                 device::kVersion, static_cast<unsigned long long>(wire::kSchemaHash)));
  }
  return found;
}

// "ivshmem:CONTROL,POOLS" names both devices. "ivshmem:" in a VM with several ivshmem devices
// takes as control device the smallest that holds slots: a VM's own control device is smaller
// than the shared pool device, whose header any guest could forge. The pools of a control
// device are the other device of the size its header gives.
Result<VmDevices> find_vm_devices(const std::string& endpoint) {
  std::string control = endpoint, pools;
  if (size_t comma = endpoint.find(','); comma != std::string::npos) {
    control = endpoint.substr(0, comma);
    pools = "ivshmem:" + endpoint.substr(comma + 1);
  }
  const std::vector<std::string> all = transport::list_vm_devices();
  std::optional<VmDevices> chosen;
  if (control == "ivshmem:" && all.size() > 1) {
    for (const std::string& candidate : all) {
      auto opened = open_vm_queue_device(candidate);
      if (!opened || opened->header.slot_count == 0) continue;
      if (!chosen || opened->control.size < chosen->control.size) chosen = std::move(opened).value();
    }
    if (!chosen) return make_error(Errc::kBrokerLost, "none of this VM's ivshmem devices holds VM-queue slots");
  } else {
    auto opened = open_vm_queue_device(control);
    if (!opened) return opened.error();
    chosen = std::move(opened).value();
  }
  if ((chosen->header.flags & device::kFlagSeparatePools) == 0) return std::move(*chosen);
  if (pools.empty()) {
    for (const std::string& candidate : all) {
      auto opened = transport::open_vm_device(candidate, device::kHeaderBytes);
      if (opened && opened->path != chosen->control.path && opened->size == chosen->header.pool_device_size) {
        chosen->pools = std::move(opened).value();
        return std::move(*chosen);
      }
    }
    return make_error(Errc::kBrokerLost, chosen->control.path +
                                             " is a VM's control device, and no ivshmem device here has the pools "
                                             "(name both: ivshmem:CONTROL,POOLS)");
  }
  auto opened = transport::open_vm_device(pools, chosen->header.pool_device_size);
  if (!opened) return make_error(Errc::kBrokerLost, "the VM-queue pools: " + opened.error().message);
  chosen->pools = std::move(opened).value();
  return std::move(*chosen);
}

}  // namespace

// A domain inside a VM: everything a process domain gets on its socket comes from the device
// (device.h). What the broker wrote is read once and checked against the device's size.
Result<Domain> Domain::connect_device(const std::string& endpoint, std::string_view name, QueueOptions options) {
  using base::str_printf;
  if (options.capacity > device::kMaxQueueCapacity) {
    return make_error(Errc::kInvalid, str_printf("a VM domain's queue holds at most %u messages (asked %u)",
                                                 device::kMaxQueueCapacity, options.capacity));
  }
  auto found = find_vm_devices(endpoint);
  if (!found) return found.error();
  VmDevices devices = std::move(found).value();
  transport::VmDeviceFile& dev = devices.control;
  const auto& h = devices.header;
  const uint64_t size = h.size;
  const uint32_t slots = h.slot_count;
  const uint64_t slots_offset = h.slots_offset;
  const uint64_t slot_bytes = h.slot_bytes;
  const uint64_t pool_offset[2] = {h.pool_offset[0], h.pool_offset[1]};
  const uint32_t pool_pages[2] = {h.pool_pages[0], h.pool_pages[1]};
  // The pools: in this device, or (a VM's own control device) in the shared one.
  const bool separate = devices.pools.fd.get() >= 0;
  const uint64_t pool_size = separate ? h.pool_device_size : size;
  const uint64_t region_bytes = wire::region_layout(options.capacity).size;
  bool sane = size <= dev.size && slots >= 1 && slots <= device::kMaxSlots &&
              h.max_queue_capacity >= options.capacity && slots_offset >= device::kHeaderBytes &&
              slots_offset % 4096 == 0 && slot_bytes % 4096 == 0 && slot_bytes >= region_bytes && slot_bytes <= size &&
              slots_offset <= size && (size - slots_offset) / slot_bytes >= slots &&
              (!separate || pool_size <= devices.pools.size);
  const uint64_t control = sane ? slots_offset + uint64_t{slots} * slot_bytes : 0;
  for (int k = 0; sane && k < 2; ++k) {
    const uint64_t pb = page_bytes(static_cast<PageSize>(k));
    sane = pool_offset[k] % pb == 0 && (separate || pool_offset[k] >= control) && pool_offset[k] <= pool_size &&
           (pool_size - pool_offset[k]) / pb >= pool_pages[k];
  }
  // The pools must not overlap: the 4 KiB pool ends before the 2 MiB pool or starts after it.
  if (sane) {
    const uint64_t end4k = pool_offset[0] + uint64_t{pool_pages[0]} * 4096;
    const uint64_t end2m = pool_offset[1] + uint64_t{pool_pages[1]} * page_bytes(PageSize::k2M);
    sane = end4k <= pool_offset[1] || end2m <= pool_offset[0] || pool_pages[0] == 0 || pool_pages[1] == 0;
  }
  if (!sane) return make_error(Errc::kProtocol, "the VM-queue device header in " + dev.path + " is inconsistent");
  auto mapped = base::Mapping::map_shared(dev.fd.get(), 0, control, /*writable=*/true);
  if (!mapped) return make_error(Errc::kBrokerLost, "cannot map " + dev.path + ": " + mapped.error().message);

  auto s = std::make_shared<detail::DomainState>();
  s->region = std::move(mapped).value();
  s->vm_header = reinterpret_cast<device::Header*>(s->region.data());
  s->host_beat = s->vm_header->host_heartbeat.load(std::memory_order_relaxed);
  s->host_beat_moved = Clock::now();
  wire::Hello hello;
  wire::copy_name(hello.name, name);
  hello.queue_capacity = options.capacity;
  hello.lazy_delay_us = static_cast<uint32_t>(options.lazy_delay.count());
  hello.default_delivery = static_cast<uint8_t>(options.default_delivery);
  // Claim a free slot, write the request, wait for the broker (it looks every kServe).
  const auto give_up = Clock::now() + std::chrono::seconds(5);
  for (;;) {
    for (uint32_t i = 0; i < slots && !s->vm(); ++i) {
      device::Slot& slot = s->vm_header->slots[i];
      uint32_t expected = device::kSlotFree;
      // acq_rel: a claim excludes every other guest; pairs with the broker's release of kFree.
      if (!slot.state.compare_exchange_strong(expected, device::kSlotClaimed, std::memory_order_acq_rel)) continue;
      s->vm_slot = &slot;
      s->vm_generation = slot.generation.fetch_add(1, std::memory_order_relaxed) + 1;
    }
    if (s->vm()) break;
    s->check_broker();
    if (s->lost) return make_error(Errc::kBrokerLost, "no vmqd serves " + dev.path + " (its heartbeat stands still)");
    if (Clock::now() > give_up)
      return make_error(Errc::kNoPages, str_printf("all %u VM-queue slots of %s are taken", slots, dev.path.c_str()));
    transport::vm_nap(std::chrono::milliseconds(1));
  }
  device::Slot& slot = *s->vm_slot;
  std::memcpy(&slot.hello, &hello, sizeof hello);
  // The slot's doorbell: a virtio-serial port in a VM, the broker's socket for a device file.
  const std::string bell_endpoint = dev.path.rfind("/sys/", 0) == 0 ? "ivshmem:" : "ivshmem:" + dev.path;
  base::UniqueFd bell =
      transport::open_doorbell(bell_endpoint, h.doorbell_name, static_cast<uint32_t>(s->vm_slot - s->vm_header->slots));
  slot.guest_doorbell = bell ? 1 : 0;
  slot.claimed_pid = static_cast<int32_t>(::getpid());
  slot.claimed_uid = ::getuid();
  slot.claimed_gid = ::getgid();
  slot.guest_heartbeat.fetch_add(1, std::memory_order_relaxed);
  // Release: the hello is written before the broker sees the request.
  slot.state.store(device::kSlotRequested, std::memory_order_release);
  uint32_t state = device::kSlotRequested;
  // Acquire: pairs with the broker's release store of Active / Rejected.
  while ((state = slot.state.load(std::memory_order_acquire)) == device::kSlotRequested) {
    const uint64_t beat = s->vm_header->host_heartbeat.load(std::memory_order_relaxed);
    if (beat != s->host_beat) {
      s->host_beat = beat;
      s->host_beat_moved = Clock::now();
    }
    if (Clock::now() > give_up || Clock::now() - s->host_beat_moved > device::kHostTimeout) {
      // Take the request back if the broker has not answered; if it just did, it sees our
      // heartbeat stand still and removes the domain.
      uint32_t expected = device::kSlotRequested;
      slot.state.compare_exchange_strong(expected, device::kSlotFree, std::memory_order_acq_rel);
      s->vm_slot = nullptr;
      return make_error(Errc::kBrokerLost, "no vmqd answered on " + dev.path);
    }
    transport::vm_nap(std::chrono::milliseconds(1));
  }
  if (state == device::kSlotRejected) {
    const auto errc = static_cast<Errc>(slot.status);
    slot.state.store(device::kSlotFree, std::memory_order_release);
    s->vm_slot = nullptr;
    const bool known = slot.status != 0 && slot.status <= static_cast<uint32_t>(Errc::kProtocol);
    return make_error(known ? errc : Errc::kProtocol,
                      std::string("vmqd refused this domain: ") + (known ? to_string(errc) : "no reason given"));
  }
  if (state != device::kSlotActive || slot.generation.load(std::memory_order_relaxed) != s->vm_generation) {
    s->vm_slot = nullptr;
    return make_error(Errc::kBrokerLost, "vmqd took the slot away before the domain began");
  }
  const uint32_t domain_id = slot.domain_id;
  if (slot.host_doorbell == 1) s->doorbell = transport::Doorbell::start(std::move(bell));
  std::byte* region = s->region.data() + slots_offset + (s->vm_slot - s->vm_header->slots) * slot_bytes;
  wire::RegionLayout layout = wire::region_layout(options.capacity);
  s->requests = SlotRing<Record>(region + layout.request_offset, wire::kRequestSlots);
  s->replies = SlotRing<Record>(region + layout.reply_offset, wire::kReplySlots);
  s->queue = SlotRing<Record>(region + layout.queue_offset, options.capacity);
  const int pool_fd = separate ? devices.pools.fd.get() : dev.fd.get();
  for (int k = 0; k < 2; ++k) {
    s->pool_fds[k] = base::UniqueFd(::fcntl(pool_fd, F_DUPFD_CLOEXEC, 0));
    if (!s->pool_fds[k]) return make_error(Errc::kNoPages, "cannot duplicate the device fd");
    s->pool_offset[k] = pool_offset[k];
    s->pool_pages[k] = pool_pages[k];
  }
  s->init_caches();
  s->self = Identity{domain_id, std::string(name), static_cast<int>(::getpid()), ::getuid(), ::getgid(), true};
  s->start_beating();
  return Domain(std::move(s));
}

const Identity& Domain::self() const { return s_->self; }
bool Domain::huge_pages_are_hugetlb() const { return s_->hugetlb; }

Result<Identity> Domain::introduce(std::string_view peer, std::chrono::milliseconds timeout) {
  if (!wire::valid_name(peer) || peer == s_->self.name) return make_error(Errc::kInvalid);
  s_->drain_replies();
  for (auto& [id, ident] : s_->peers)
    if (ident.name == peer) return ident;
  Record req{};
  req.kind = static_cast<uint32_t>(Kind::kIntroduce);
  req.req_id = s_->next_req++;
  wire::WireIdentity w{};
  wire::copy_name(w.name, peer);
  std::memcpy(req.runs, &w, sizeof w);
  if (!s_->push(req)) return make_error(Errc::kBrokerLost);
  Record answer;
  bool forever = timeout.count() < 0;
  if (!s_->await(req.req_id, Clock::now() + timeout, forever, &answer)) {
    if (s_->lost) return make_error(Errc::kBrokerLost);
    // Withdraw it, so that the broker keeps no introduction nobody waits for: it answers the
    // withdrawal (kTimedOut) or, had the peer asked just now, with the peer's identity.
    if (!s_->withdraw(req.req_id, &answer)) return make_error(Errc::kBrokerLost);
  }
  if (answer.status != 0) return make_error(static_cast<Errc>(answer.status));
  // The introduction completed: the peer's identity is in the answer itself. The peer may have
  // sent its messages and died since (its kPeerDown drained in the same pass took it out of
  // `peers`); its messages are still delivered first, then kPeerDead, as for any dead peer.
  wire::WireIdentity who;
  std::memcpy(&who, answer.runs, sizeof who);
  who.name[wire::kNameMax] = 0;
  return Identity{answer.peer, std::string(wire::name_of(who.name)), who.pid, who.uid,
                  who.gid,     (who.flags & wire::kClaimed) != 0};
}

const Identity* Domain::peer(uint32_t id) const {
  auto it = s_->peers.find(id);
  return it == s_->peers.end() ? nullptr : &it->second;
}

Result<Pages> Domain::alloc(size_t count, PageSize size) {
  auto& s = *s_;
  int k = static_cast<int>(size);
  if (s.lost) return make_error(Errc::kBrokerLost);
  if (count == 0) return make_error(Errc::kInvalid);
  if (count > s.pool_pages[k]) return make_error(Errc::kNoPages);
  auto want = static_cast<uint32_t>(count);
  std::vector<wire::PageRun> runs;
  uint32_t got = std::min(want, s.cache[k].free_pages());
  if (got > 0 && s.cache[k].allocate(got, kNotCached, wire::kMaxRuns, &runs) != Errc::kOk) {
    got = s.cache[k].take_any(got, kNotCached, wire::kMaxRuns, &runs);
  }
  if (got < want) {
    uint32_t need = want - got;
    uint32_t extra = size == PageSize::k4K ? kRefill4K : 0;
    Record req{};
    req.kind = static_cast<uint32_t>(Kind::kAlloc);
    req.page_size = static_cast<uint8_t>(size);
    req.bytes = std::min<uint64_t>(need + extra, s.pool_pages[k]);
    Record answer;
    Errc errc = s.call(req, &answer);
    if (errc == Errc::kNoPages && extra > 0) {
      req.bytes = need;
      errc = s.call(req, &answer);
    }
    if (errc != Errc::kOk || answer.n_runs > wire::kMaxRuns) {
      if (!runs.empty()) s.cache[k].transfer(runs, kNotCached, PagePool::kFree);
      return make_error(errc == Errc::kOk ? Errc::kProtocol : errc);
    }
    // Everything granted goes through the cache so the pages used come out as few runs.
    s.cache[k].transfer(std::span(answer.runs, answer.n_runs), kNotCached, PagePool::kFree);
    if (!runs.empty()) s.cache[k].transfer(runs, kNotCached, PagePool::kFree);
    Errc taken = s.cache[k].allocate(want, kNotCached, wire::kMaxRuns, &runs);
    if (taken != Errc::kOk) return make_error(taken);
  }
  std::vector<Pages::Run> mapped;
  for (const auto& r : runs) mapped.push_back(Pages::Run{r.first, r.count});
  auto pages = s.make_pages(std::move(mapped), size);
  if (!pages.ok()) {
    s.cache[k].transfer(runs, kNotCached, PagePool::kFree);
  }
  return pages;
}

Errc Domain::send(uint32_t peer, Pages&& pages, size_t length, SendOptions options) {
  Outgoing m{
      .peer = peer, .pages = std::move(pages), .length = length, .tag = options.tag, .delivery = options.delivery};
  send_batch(std::span(&m, 1), options.timeout);
  if (m.result != Errc::kOk) pages = std::move(m.pages);
  return m.result;
}

size_t Domain::send_batch(std::span<Outgoing> messages, std::chrono::milliseconds timeout) {
  auto& s = *s_;
  const bool forever = timeout.count() < 0;
  const Clock::time_point deadline = Clock::now() + timeout;
  struct Flight {
    Outgoing* m;
    uint32_t req_id;
  };
  std::deque<Flight> flights;  // posted, answer not yet taken: at most wire::kMaxInFlight
  size_t sent = 0;
  // The answer to the oldest request in flight decides its message.
  auto land = [&] {
    const Flight f = flights.front();
    flights.pop_front();
    Outgoing& m = *f.m;
    Record answer{};
    m.result = Errc::kBrokerLost;
    // A send that may not wait (timeout 0) is answered at once, never parked.
    if (s.await(f.req_id, deadline, forever || timeout.count() == 0, &answer)) {
      m.result = static_cast<Errc>(answer.status);
    } else if (!s.lost) {
      // Timed out while parked on a full queue: withdraw it. The broker answers either the
      // withdrawal (kFull) or, if it had just accepted the message, with kOk.
      if (s.withdraw(f.req_id, &answer)) m.result = static_cast<Errc>(answer.status);
    }
    Pages& pages = m.pages;
    if (m.result == Errc::kOk) {
      s.release(pages.base_, pages.count_, pages.size_, false);
      pages.base_ = nullptr;
      pages.count_ = 0;
      pages.runs_.clear();
      pages.state_.reset();
      ++sent;
      return;
    }
    if (s.lost) {
      m.result = Errc::kBrokerLost;
    } else if (!s.map_runs(pages.base_, pages.runs_, pages.size_)) {
      m.result = Errc::kNoPages;
    }
  };
  s.drain_replies();
  for (Outgoing& m : messages) {
    const Pages& pages = m.pages;
    m.result = Errc::kOk;
    if (s.lost) {
      m.result = Errc::kBrokerLost;
    } else if (!pages || pages.state_ != s_ || m.length > pages.bytes().size()) {
      m.result = Errc::kInvalid;
    } else if (pages.runs_.size() > wire::kMaxRuns) {
      m.result = Errc::kTooFragmented;
    } else if (s.peers.count(m.peer) == 0) {
      const bool died = std::any_of(s.dead.begin(), s.dead.end(), [&](const Identity& d) { return d.id == m.peer; });
      m.result = died ? Errc::kPeerDead : Errc::kNotIntroduced;
    }
    if (m.result != Errc::kOk) continue;
    // From here on this domain cannot reach the pages: the range stays reserved (PROT_NONE) so
    // a refused send can map them back at the same address.
    if (!s.hide(pages.base_, pages.count_ * page_bytes(pages.size_))) {
      m.result = Errc::kNoPages;
      continue;
    }
    Record req{};
    req.kind = static_cast<uint32_t>(Kind::kSend);
    req.req_id = s.next_req++;
    req.peer = m.peer;
    req.tag = m.tag;
    req.bytes = m.length;
    req.page_size = static_cast<uint8_t>(pages.size_);
    req.delivery = static_cast<uint8_t>(m.delivery);
    req.flags = timeout.count() == 0 ? wire::kNoWait : 0;
    req.n_runs = static_cast<uint32_t>(pages.runs_.size());
    for (size_t i = 0; i < pages.runs_.size(); ++i)
      req.runs[i] = wire::PageRun{pages.runs_[i].first, pages.runs_[i].count};
    if (flights.size() >= wire::kMaxInFlight) land();
    flights.push_back(Flight{&m, req.req_id});
    // A request that cannot be posted gets no answer: await() reports the broker lost.
    if (!s.push(req)) s.lost = true;
  }
  while (!flights.empty()) land();
  return sent;
}

Errc Domain::flush() {
  Record req{};
  req.kind = static_cast<uint32_t>(Kind::kFlush);
  Record answer;
  return s_->call(req, &answer);
}

size_t Domain::pending() { return static_cast<size_t>(s_->queue.readable()); }

Result<Message> Domain::recv(std::chrono::milliseconds timeout) {
  auto& s = *s_;
  bool forever = timeout.count() < 0;
  auto deadline = Clock::now() + timeout;
  for (;;) {
    s.drain_replies();
    if (const Record* slot = s.queue.consumer_slot()) {
      Record r = *slot;
      if (s.queue.release()) s.kick_broker();
      int k = r.page_size;
      std::vector<Pages::Run> runs;
      uint64_t pages = 0;
      bool valid =
          r.kind == static_cast<uint32_t>(Kind::kDeliver) && k <= 1 && r.n_runs >= 1 && r.n_runs <= wire::kMaxRuns;
      for (uint32_t i = 0; valid && i < r.n_runs; ++i) {
        const auto& run = r.runs[i];
        valid = run.count > 0 && run.first < s.pool_pages[k] && run.count <= s.pool_pages[k] - run.first;
        runs.push_back(Pages::Run{run.first, run.count});
        pages += run.count;
      }
      if (!valid || r.bytes > pages * page_bytes(static_cast<PageSize>(k))) return make_error(Errc::kProtocol);
      auto mapped = s.make_pages(std::move(runs), static_cast<PageSize>(k));
      if (!mapped.ok()) return mapped.error();
      Message m;
      m.sender = r.peer;
      m.tag = r.tag;
      m.length = static_cast<size_t>(r.bytes);
      m.pages = std::move(mapped).value();
      return m;
    }
    if (s.dead_reported < s.dead.size()) {
      ++s.dead_reported;
      return make_error(Errc::kPeerDead);
    }
    if (s.lost) return make_error(Errc::kBrokerLost);
    if (!forever && Clock::now() >= deadline) return make_error(Errc::kTimedOut);
    s.wait(deadline, forever,
           [&] { return s.queue.consumer_slot() != nullptr || s.replies.consumer_slot() != nullptr; });
  }
}

std::vector<Identity> Domain::dead_peers() const { return s_->dead; }

}  // namespace bypass::vmqueue
