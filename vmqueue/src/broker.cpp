#include "bypass/vmqueue/broker.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <immintrin.h>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "bypass/base/mapping.h"
#include "bypass/base/memfd.h"
#include "bypass/base/text.h"
#include "bypass/base/unix_socket.h"
#include "bypass/transport/doorbell.h"
#include "bypass/transport/doors.h"
#include "bypass/transport/kick.h"
#include "bypass/transport/session.h"
#include "bypass/transport/vm.h"
#include "device.h"
#include "page_pool.h"
#include "wire.h"

namespace bypass::vmqueue {

namespace {

using wire::Kind;
using wire::Record;
using Clock = std::chrono::steady_clock;

// How long the broker polls its rings before sleeping. Zero: on a 2-core machine a spinning
// broker steals the core the sender or receiver needs (measured: 30 us halves throughput);
// the domains spin while they wait for a reply instead.
constexpr auto kSpin = std::chrono::microseconds(0);

enum class Tag : uint32_t { kListen = 1, kStop, kKick, kTimer, kDomain, kDoorbell, kArrival };

uint64_t epoll_key(Tag tag, uint32_t id = 0) { return (uint64_t(tag) << 32) | id; }

struct Parked {
  uint32_t sender;
  Record rec;
};

struct LazyMessage {
  uint32_t dest;
  Record rec;
  Clock::time_point deadline;
};

struct ControlDevice;

struct DomainEntry {
  uint32_t id = 0;
  std::string name;
  base::PeerCredentials cred;
  bool claimed = false;                       // cred is what a VM guest wrote, not the kernel's
  std::optional<transport::Channel> channel;  // set-up messages and fds; its socket tells death
  base::Mapping region;                       // a process domain's memfd (a VM domain's is its device slot)
  // A VM domain: the control device and slot it attached in, the generation it attached with,
  // and its heartbeat as last seen and when that changed.
  ControlDevice* vm_control = nullptr;
  int vm_slot = -1;
  uint32_t vm_generation = 0;
  uint64_t vm_beat = 0;
  Clock::time_point vm_beat_moved;
  SlotRing<Record> requests;  // broker consumes
  SlotRing<Record> replies;   // broker produces
  SlotRing<Record> queue;     // broker produces: this domain's inbound VM queue
  transport::Kick kick;       // wakes the domain
  base::UniqueFd doorbell;    // a VM domain's slot doorbell (wakes it, and the broker), if both hold it
  QueueOptions options;
  std::set<uint32_t> introduced;          // may send to / hear from these
  std::map<std::string, uint32_t> wants;  // pending introductions: name -> req_id
  std::deque<Record> reply_backlog;       // replies waiting for room in `replies`
  uint32_t lazy_reserved = 0;             // lazy messages accepted for this queue
  std::deque<Parked> parked;              // sends waiting for room in this queue
  uint32_t parked_out = 0;                // this domain's own sends parked on some queue
  std::deque<LazyMessage> lazy_out;       // lazy messages this domain sent, in order
  bool kick_owed = false;                 // a publish asked for a kick; sent once per pass

  wire::WireIdentity wire_identity() const {
    wire::WireIdentity w{};
    w.pid = cred.pid;
    w.uid = cred.uid;
    w.gid = cred.gid;
    w.flags = claimed ? uint32_t{wire::kClaimed} : 0u;
    wire::copy_name(w.name, name);
    return w;
  }
  // Messages the queue holds or has promised to hold.
  uint64_t occupancy() { return (queue.capacity() - queue.producer_free()) + lazy_reserved; }
  // Whether its requests are read: not while the broker owes it wire::kMaxOwed answers.
  bool servable() const { return reply_backlog.size() + parked_out < wire::kMaxOwed; }
};

// Where VM domains attach: the shared device's own slots, or a VM's control device of its own
// (BrokerOptions::vms). Its header and slot regions are mapped here.
struct ControlDevice {
  std::string vm;                         // the VM's name; empty for the shared device's slots
  base::UniqueFd fd;                      // a VM's own file (the shared device's fd is the broker's)
  transport::DoorbellListener doorbells;  // the slots' doorbell sockets
  base::Mapping mapping;                  // header and slots
  device::Geometry geom;
  uint32_t slots = 0;
  // Per slot, what the event loop saw: the domain attached there (0: none), or a claim that
  // never became a request (a guest that died half way): its state, generation and since when.
  struct SlotSeen {
    uint32_t domain = 0;
    uint32_t state = device::kSlotFree, generation = 0;
    Clock::time_point since;
  };
  SlotSeen seen[device::kMaxSlots];

  device::Header* header() { return reinterpret_cast<device::Header*>(mapping.data()); }
  std::byte* slot_region(uint32_t i) { return mapping.data() + geom.slots_offset + i * geom.slot_bytes; }
  // "slot 3" or "VM 'a' slot 3", for the log.
  std::string where(uint32_t i) const {
    return vm.empty() ? base::str_printf("slot %u", i) : base::str_printf("VM '%s' slot %u", vm.c_str(), i);
  }
};

}  // namespace

struct Broker::Impl {
  BrokerOptions options;
  PagePool pools[2];
  base::UniqueFd pool_fds[2];
  base::Mapping huge_reservation;  // keeps the hugetlb pages reserved for the pool's lifetime
  bool hugetlb = false;
  std::optional<transport::Listener> listener;
  base::UniqueFd epoll;
  transport::Kick stop_kick;
  transport::Kick broker_kick;  // every domain holds this fd; kicked when we announced sleep
  base::UniqueFd timer;
  std::map<uint32_t, std::unique_ptr<DomainEntry>> domains;
  std::map<std::string, uint32_t> by_name;
  uint32_t next_id = 1;
  bool lazy_dirty = false;
  std::atomic<bool> stopping{false};  // set by stop() (any thread), read by run()

  // The VM device (options.device_path): the pools are its file (offsets in geom), its header
  // (and slot regions, when it has any) are mapped in controls; the pools never are.
  base::UniqueFd device_fd;
  device::Geometry geom;
  // Where VM domains attach: the shared device itself, or each VM's own control device.
  std::vector<std::unique_ptr<ControlDevice>> controls;
  Clock::time_point next_serve;
  uint32_t vm_live = 0;
  uint32_t vm_polled = 0;                           // VM domains without a doorbell: their rings are polled
  std::chrono::nanoseconds vm_nap = device::kPoll;  // how long the loop sleeps between polls

  struct Counters {
    std::atomic<uint64_t> connected{0}, live{0}, messages{0}, pages{0}, timer_flushes{0}, protocol{0}, silent{0},
        free_pages{0};
  } counters;

  // A connection's handshake (the transport's, then the domain's queue options) runs on a door
  // thread (transport::Doors), so that a client that connects and says nothing holds up no
  // domain's traffic: the event loop only accepts, and admits what a door hands it. At most
  // kMaxDoors at once; one more connection is refused at once.
  static constexpr size_t kMaxDoors = 16;
  struct Arrival {
    transport::Channel channel;
    wire::Hello hello;
  };
  transport::Doors<Arrival> doors;

  explicit Impl(BrokerOptions o) : options(std::move(o)) {}

  // Creates the pools, binds the socket and sets up the event loop.
  base::Result<void> init() {
    if (options.pages_4k == 0 && options.pages_2m == 0) {
      return base::make_error(base::Errc::kInvalidArgument, "vmqueue broker: empty page pools");
    }
    pools[0] = PagePool(options.pages_4k);
    pools[1] = PagePool(options.pages_2m);
    if (!options.vms.empty() && options.device_path.empty()) {
      return base::make_error(
          base::Errc::kInvalidArgument,
          "vmqueue broker: VMs with control devices of their own need the shared device (--device)");
    }
    if (!options.device_path.empty()) {
      if (auto made = make_device(); !made) return made;
    } else if (auto made = make_pools(); !made) {
      return made;
    }
    return init_loop();
  }

  base::Result<void> make_pools() {
    auto pool_4k = base::make_memfd("vmq-pool-4k", size_t{options.pages_4k} * 4096);
    if (!pool_4k) return pool_4k.error();
    pool_fds[0] = std::move(pool_4k).value();
    size_t huge_size = size_t{options.pages_2m} * page_bytes(PageSize::k2M);
    if (options.hugetlb && huge_size > 0) {
      // Mapping the whole file reserves its huge pages now, so a domain's later mmap of any
      // part cannot fail for lack of them. The broker never touches the bytes. Without huge
      // pages reserved either step fails, and the fallback below takes over.
      if (auto fd = base::make_memfd("vmq-pool-2m", huge_size, true)) {
        if (auto reservation = base::Mapping::map_shared(fd->get(), 0, huge_size, /*writable=*/true)) {
          huge_reservation = std::move(reservation).value();
          pool_fds[1] = std::move(fd).value();
          hugetlb = true;
        }
      }
    }
    if (!hugetlb) {
      auto fallback = base::make_memfd("vmq-pool-2m-fallback", std::max<size_t>(huge_size, 4096));
      if (!fallback) return fallback.error();
      pool_fds[1] = std::move(fallback).value();
    }
    return {};
  }

  // The VM device: a file QEMU maps as each guest's ivshmem BAR, holding both pools and, unless
  // each VM has a control device of its own, the slots. Headers are written before the magic,
  // so a guest that maps a device early waits.
  base::Result<void> make_device() {
    const bool own_controls = !options.vms.empty();
    const uint32_t shared_slots = own_controls ? 0 : options.vm_slots;
    if (!own_controls && (options.vm_slots == 0 || options.vm_slots > device::kMaxSlots)) {
      return base::make_error(base::Errc::kInvalidArgument,
                              "vmqueue broker: a VM device has 1 to " + std::to_string(device::kMaxSlots) + " slots");
    }
    geom = device::geometry(shared_slots, options.pages_4k, options.pages_2m);
    auto fd = transport::create_vm_device_file(options.device_path, geom.size);
    if (!fd) return base::make_error(base::Errc::kIo, "vmqueue broker: " + fd.error().message);
    device_fd = std::move(fd).value();
    auto shared = std::make_unique<ControlDevice>();
    shared->geom = geom;
    shared->slots = shared_slots;
    // No doorbells for the shared device's slots: every VM maps them, so no one QEMU's stream
    // can be a slot's (and whichever connected last would hold it). A VM's own control device
    // is that VM's alone.
    if (auto mapped = map_control(device_fd.get(), geom, shared_slots, 0, shared->doorbells); mapped) {
      shared->mapping = std::move(mapped).value();
    } else {
      return mapped.error();
    }
    controls.push_back(std::move(shared));
    std::set<std::string> names, paths{options.device_path};
    for (const BrokerOptions::Vm& vm : options.vms) {
      if (vm.slots == 0 || vm.slots > device::kMaxSlots || vm.name.empty() || !names.insert(vm.name).second ||
          !paths.insert(vm.path).second) {
        return base::make_error(
            base::Errc::kInvalidArgument,
            base::str_printf("vmqueue broker: VM '%s' at %s: each VM needs a name and a file of its "
                             "own, and 1 to %u slots",
                             vm.name.c_str(), vm.path.c_str(), device::kMaxSlots));
      }
      auto control = std::make_unique<ControlDevice>();
      control->vm = vm.name;
      control->geom = device::control_geometry(vm.slots);
      control->slots = vm.slots;
      auto made = transport::create_vm_device_file(vm.path, control->geom.size);
      if (!made) return base::make_error(base::Errc::kIo, "vmqueue broker: " + made.error().message);
      control->fd = std::move(made).value();
      auto listening = listen_doorbells(vm.path, vm.slots);
      if (!listening) return listening.error();
      control->doorbells = std::move(listening).value();
      auto mapped =
          map_control(control->fd.get(), control->geom, vm.slots, device::kFlagSeparatePools, control->doorbells);
      if (!mapped) return mapped.error();
      control->mapping = std::move(mapped).value();
      controls.push_back(std::move(control));
    }
    next_serve = Clock::now();
    return {};
  }

  // Maps a device's header and slots and writes the header: every slot starts free (a guest
  // still attached to an earlier broker sees its slot gone); the pools' offsets are always
  // the shared device's.
  base::Result<transport::DoorbellListener> listen_doorbells(const std::string& path, uint32_t slots) {
    if (!options.doorbells) return transport::DoorbellListener();
    auto listening = transport::DoorbellListener::listen(path, slots);
    if (!listening) return base::make_error(base::Errc::kIo, "vmqueue broker: " + listening.error().message);
    return std::move(listening).value();
  }

  base::Result<base::Mapping> map_control(int fd, const device::Geometry& g, uint32_t slots, uint32_t flags,
                                          const transport::DoorbellListener& doorbells) {
    auto mapped = base::Mapping::map_shared(fd, 0, g.control_bytes, /*writable=*/true);
    if (!mapped) return mapped.error();
    std::memset(mapped->data(), 0, g.control_bytes);
    auto* h = reinterpret_cast<device::Header*>(mapped->data());
    h->version = device::kVersion;
    h->size = g.size;
    h->schema_hash = wire::kSchemaHash;
    h->slot_count = slots;
    h->max_queue_capacity = device::kMaxQueueCapacity;
    h->slots_offset = g.slots_offset;
    h->slot_bytes = g.slot_bytes;
    for (int k = 0; k < 2; ++k) {
      h->pool_offset[k] = geom.pool_offset[k];
      h->pool_pages[k] = pools[k].size();
    }
    h->flags = flags;
    h->pool_device_size = geom.size;
    doorbells.tag(&h->doorbells);
    // Release: pairs with a guest's acquire load of the magic before it reads the rest.
    std::atomic_ref(h->magic).store(device::kMagic, std::memory_order_release);
    return std::move(mapped).value();
  }

  int pool_fd(int k) const { return device_fd ? device_fd.get() : pool_fds[k].get(); }

  base::Result<void> init_loop() {
    auto listening = transport::Listener::listen(options.socket_path);
    if (!listening) return base::make_error(base::Errc::kIo, "vmqueue broker: " + listening.error().message);
    listener = std::move(listening).value();
    epoll = base::UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll) return base::errno_error(base::Errc::kIo, "epoll_create1", errno);
    auto stop = transport::Kick::create();
    if (!stop) return stop.error();
    stop_kick = std::move(stop).value();
    auto kick = transport::Kick::create();
    if (!kick) return kick.error();
    broker_kick = std::move(kick).value();
    if (auto started = doors.start(kMaxDoors); !started) return started;
    timer = base::UniqueFd(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
    if (!timer) return base::errno_error(base::Errc::kIo, "timerfd_create", errno);
    for (auto [fd, tag] : {std::pair{listener->fd(), Tag::kListen}, std::pair{stop_kick.fd(), Tag::kStop},
                           std::pair{broker_kick.fd(), Tag::kKick}, std::pair{timer.get(), Tag::kTimer},
                           std::pair{doors.fd(), Tag::kArrival}}) {
      if (auto watched = watch(fd, epoll_key(tag), EPOLLIN); !watched) return watched;
    }
    return {};
  }

  // ~Listener removes the socket file.

  base::Result<void> watch(int fd, uint64_t key, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = key;
    if (::epoll_ctl(epoll.get(), EPOLL_CTL_ADD, fd, &ev) != 0)
      return base::errno_error(base::Errc::kIo, "epoll_ctl", errno);
    return {};
  }

  // One write per line: door threads log too.
  void log(const char* fmt, auto... args) {
    if (!options.verbose) return;
    const std::string line = "vmqd: " + base::str_printf(fmt, args...) + "\n";
    std::fputs(line.c_str(), stderr);
  }

  DomainEntry* find(uint32_t id) {
    auto it = domains.find(id);
    return it == domains.end() ? nullptr : it->second.get();
  }

  // ---------------------------------------------------------------- session set-up

  void accept_one() {
    auto socket = listener->accept_connection(transport::deadline_after(std::chrono::milliseconds(0)));
    if (!socket) {
      // kTimeout: gone already, or nobody after all; else out of descriptors (that guest was
      // refused) or worse.
      if (socket.code() != transport::Status::kTimeout) log("%s", socket.error().message.c_str());
      return;
    }
    if (doors.full()) {
      log("refused a connection: %zu others are still setting up", doors.running());
      transport::reject_connection(std::move(socket).value(),
                                   "vmqd: too many domains are connecting at once; try again");
      return;
    }
    doors.open(std::move(socket).value(), [this](base::UniqueFd fd) { return handshake(std::move(fd)); });
  }

  // On a door thread: the transport handshake, then the domain's queue options. The transport
  // handshake checks transport and VM-queue versions (a mismatch is refused with a line naming
  // both); a client that connects and says nothing costs this thread at most 1 s.
  std::optional<Arrival> handshake(base::UniqueFd socket) {
    transport::Hello mine{wire::kVersion, wire::kSchemaHash, "vmqd"};
    auto deadline = transport::deadline_after(std::chrono::seconds(1));
    auto channel = transport::accept_socket(
        std::move(socket), mine, transport::SessionOptions{.ring_bytes = 4096, .max_message = 4096}, deadline);
    if (!channel) {
      log("session refused: %s", channel.error().message.c_str());
      return std::nullopt;
    }
    transport::Message msg;
    wire::Hello hello;
    if (channel->recv(msg, deadline) != transport::Status::kOk || msg.kind != wire::kSessionHello ||
        msg.payload.size() != sizeof hello) {
      log("no queue options from a new domain");
      return std::nullopt;
    }
    std::memcpy(&hello, msg.payload.data(), sizeof hello);
    return Arrival{std::move(channel).value(), hello};
  }

  // On the event loop: the domains whose handshake finished.
  void admit_arrivals() {
    for (Arrival& a : doors.take()) admit(std::move(a.channel), a.hello);
  }

  void admit(transport::Channel channel, wire::Hello hello) {
    // What is sent from here on fits the session's ring and socket buffer: no wait.
    auto deadline = transport::deadline_after(std::chrono::seconds(1));
    wire::Welcome welcome;
    std::string name;
    auto refuse = [&](Errc errc) {
      welcome.status = static_cast<uint32_t>(errc);
      // The domain is refused whether or not it hears why; a domain gone already is no news.
      if (channel.send(wire::kSessionWelcome, std::as_bytes(std::span(&welcome, 1)), deadline) !=
          transport::Status::kOk)
        log("the refusal did not reach the domain");
    };
    if (Errc errc = check_hello(hello, wire::kMaxQueueCapacity, &name); errc != Errc::kOk) return refuse(errc);
    if (domains.size() - vm_live >= options.max_domains) {
      log("refused domain '%s': %u domains connected, the limit (--max-domains)", name.c_str(), options.max_domains);
      return refuse(Errc::kFull);
    }

    auto d = new_domain(hello, name);
    d->cred = base::PeerCredentials{channel.peer_pid(), channel.peer_uid(), channel.peer_gid()};
    wire::RegionLayout layout = wire::region_layout(hello.queue_capacity);
    // This host cannot serve the domain now (memory, fds): the domain hears kNoPages, vmqd goes on.
    auto region_fd = base::make_memfd("vmq-domain", layout.size);
    auto region = region_fd ? base::Mapping::map_shared(region_fd->get(), 0, layout.size, /*writable=*/true)
                            : base::Result<base::Mapping>(region_fd.error());
    auto domain_kick = transport::Kick::create();
    if (!region || !domain_kick) {
      log("cannot set up domain '%s': %s", name.c_str(),
          std::string(!region ? region.message() : domain_kick.message()).c_str());
      return refuse(Errc::kNoPages);
    }
    d->region = std::move(region).value();
    open_rings(*d, d->region.data(), hello.queue_capacity);
    d->kick = std::move(domain_kick).value();

    welcome.domain_id = d->id;
    welcome.region_size = layout.size;
    welcome.queue_capacity = hello.queue_capacity;
    welcome.pages_4k = pools[0].size();
    welcome.pages_2m = pools[1].size();
    welcome.huge_backing =
        static_cast<uint8_t>(hugetlb ? wire::HugeBacking::kHugetlb : wire::HugeBacking::kShmemFallback);
    for (int k = 0; k < 2; ++k) welcome.pool_offset[k] = device_fd ? geom.pool_offset[k] : 0;
    int fds[wire::kWelcomeFds];
    fds[wire::kFdRegion] = region_fd->get();
    fds[wire::kFdPool4K] = pool_fd(0);
    fds[wire::kFdPool2M] = pool_fd(1);
    fds[wire::kFdBrokerKick] = broker_kick.fd();
    fds[wire::kFdDomainKick] = d->kick.fd();
    if (channel.send(wire::kSessionWelcome, std::as_bytes(std::span(&welcome, 1)), deadline) !=
            transport::Status::kOk ||
        channel.send_fds(wire::kWelcomeFdTag, fds) != transport::Status::kOk)
      return;
    d->channel = std::move(channel);
    // Only hang-ups matter: after set-up nothing more travels on the session. Unwatched, a dead
    // domain would never be noticed: refuse it instead.
    if (auto watched = watch(d->channel->socket_fd(), epoll_key(Tag::kDomain, d->id), EPOLLRDHUP); !watched) {
      log("cannot watch domain '%s': %s", name.c_str(), std::string(watched.message()).c_str());
      return;
    }
    log("domain %u '%s' connected (pid %d uid %u), queue capacity %u", d->id, name.c_str(),
        static_cast<int>(d->cred.pid), static_cast<unsigned>(d->cred.uid), hello.queue_capacity);
    add_domain(std::move(d));
  }

  // Checks a domain's queue options and name, from a copy the domain can no longer change.
  Errc check_hello(wire::Hello& hello, uint32_t max_capacity, std::string* name) {
    if (hello.magic != wire::kMagic || hello.version != wire::kVersion) {
      log("refused a domain speaking version %u (host speaks %u)", hello.version, wire::kVersion);
      return Errc::kProtocol;
    }
    hello.name[wire::kNameMax] = 0;
    *name = std::string(wire::name_of(hello.name));
    if (!wire::valid_name(*name) || hello.queue_capacity == 0 || hello.queue_capacity > max_capacity ||
        hello.default_delivery > static_cast<uint8_t>(Delivery::kLazy) || hello.lazy_delay_us > 10'000'000)
      return Errc::kInvalid;
    if (by_name.count(*name) != 0) return Errc::kNameTaken;
    return Errc::kOk;
  }

  std::unique_ptr<DomainEntry> new_domain(const wire::Hello& hello, const std::string& name) {
    auto d = std::make_unique<DomainEntry>();
    d->id = next_id++;
    d->name = name;
    d->options.capacity = hello.queue_capacity;
    d->options.default_delivery = static_cast<Delivery>(hello.default_delivery);
    if (d->options.default_delivery == Delivery::kQueueDefault) d->options.default_delivery = Delivery::kImmediate;
    d->options.lazy_delay = std::chrono::microseconds(hello.lazy_delay_us);
    return d;
  }

  // Fresh rings in a domain's region: zeroed here, before the domain hears that it may use them.
  static void open_rings(DomainEntry& d, std::byte* region, uint32_t capacity) {
    wire::RegionLayout layout = wire::region_layout(capacity);
    d.requests = SlotRing<Record>(region + layout.request_offset, wire::kRequestSlots, true);
    d.replies = SlotRing<Record>(region + layout.reply_offset, wire::kReplySlots, true);
    d.queue = SlotRing<Record>(region + layout.queue_offset, capacity, true);
  }

  void add_domain(std::unique_ptr<DomainEntry> d) {
    const std::string name = d->name;
    by_name[name] = d->id;
    uint32_t id = d->id;
    domains[id] = std::move(d);
    counters.connected.fetch_add(1, std::memory_order_relaxed);
    counters.live.fetch_add(1, std::memory_order_relaxed);
    // Introductions that waited for this name.
    for (auto& [other_id, other] : domains)
      if (other_id != id && other->wants.count(name) != 0) try_introduce(*other, name);
  }

  // ---------------------------------------------------------------- VM domains

  // Every kServe while a VM device is served: our heartbeat, guests asking to attach, VM domains
  // that left, stopped beating or lost their slot, and claims nobody finished.
  void serve_device() {
    const auto now = Clock::now();
    for (auto& control : controls) {
      control->header()->host_heartbeat.fetch_add(1, std::memory_order_relaxed);
      for (uint32_t i = 0; i < control->slots; ++i) serve_slot(*control, i, now);
    }
  }

  void serve_slot(ControlDevice& control, uint32_t i, Clock::time_point now) {
    device::Slot& slot = control.header()->slots[i];
    ControlDevice::SlotSeen& seen = control.seen[i];
    const uint32_t state = slot.state.load(std::memory_order_acquire);  // pairs with the guest's release
    const uint32_t generation = slot.generation.load(std::memory_order_relaxed);
    if (seen.domain != 0) {
      DomainEntry* d = find(seen.domain);
      if (d == nullptr) {  // ended meanwhile (remove_domain freed the slot)
        seen = ControlDevice::SlotSeen{};
        return;
      }
      if (const uint64_t beat = slot.guest_heartbeat.load(std::memory_order_relaxed); beat != d->vm_beat) {
        d->vm_beat = beat;
        d->vm_beat_moved = now;
      }
      const char* why = nullptr;
      if (state == device::kSlotLeaving && generation == d->vm_generation) {
        why = "left";
      } else if (state != device::kSlotActive || generation != d->vm_generation) {
        why = "lost its slot (the guest wrote its state)";
      } else if (now - d->vm_beat_moved > device::kGuestTimeout) {
        why = "silent (its heartbeat stood still)";
        counters.silent.fetch_add(1, std::memory_order_relaxed);
      }
      if (why != nullptr) {
        log("VM domain %u '%s' in %s %s", d->id, d->name.c_str(), control.where(i).c_str(), why);
        serve_last_requests(d->id);
        remove_domain(d->id);
      }
      return;
    }
    if (state == device::kSlotRequested) {
      attach_vm(control, i, generation, now);
      return;
    }
    // A claim or refusal the guest never finished (it died half way), a leave after we
    // removed its domain, or whatever a hostile guest stored: free the slot once it stood
    // still for a guest's timeout.
    if (state == device::kSlotFree) {
      seen.state = state;
      return;
    }
    if (seen.state != state || seen.generation != generation) {
      seen.state = state;
      seen.generation = generation;
      seen.since = now;
    } else if (now - seen.since > device::kGuestTimeout) {
      uint32_t expected = state;
      // acq_rel: pairs with a guest's claim CAS.
      slot.state.compare_exchange_strong(expected, device::kSlotFree, std::memory_order_acq_rel);
      seen.state = device::kSlotFree;
    }
  }

  // A guest asked for a domain in `slot`: copy and check its hello, zero the rings, answer.
  void attach_vm(ControlDevice& control, uint32_t i, uint32_t generation, Clock::time_point now) {
    device::Slot& slot = control.header()->slots[i];
    wire::Hello hello;
    std::memcpy(&hello, &slot.hello, sizeof hello);  // our copy: the guest may write the slot on
    const int32_t pid = slot.claimed_pid;
    const uint32_t uid = slot.claimed_uid;
    const uint32_t gid = slot.claimed_gid;
    std::string name;
    if (Errc errc = check_hello(hello, device::kMaxQueueCapacity, &name); errc != Errc::kOk) {
      log("refused a VM domain in %s: %s", control.where(i).c_str(), to_string(errc));
      slot.status = static_cast<uint32_t>(errc);
      slot.state.store(device::kSlotRejected, std::memory_order_release);  // pairs with the guest's acquire
      control.seen[i] = ControlDevice::SlotSeen{0, device::kSlotRejected, generation, now};
      return;
    }
    auto d = new_domain(hello, name);
    d->cred = base::PeerCredentials{pid, uid, gid};
    d->claimed = true;
    d->vm_control = &control;
    d->vm_slot = static_cast<int>(i);
    d->vm_generation = generation;
    d->vm_beat = slot.guest_heartbeat.load(std::memory_order_relaxed);
    d->vm_beat_moved = now;
    open_rings(*d, control.slot_region(i), hello.queue_capacity);
    // The doorbell, if the guest holds its end too.
    if (base::UniqueFd bell = transport::doorbell_if_guest_holds(control.doorbells.take(i), slot.guest_doorbell)) {
      if (watch(bell.get(), epoll_key(Tag::kDoorbell, d->id), EPOLLIN)) d->doorbell = std::move(bell);
    }
    slot.host_doorbell = d->doorbell ? 1 : 0;
    if (!d->doorbell) ++vm_polled;
    slot.domain_id = d->id;
    slot.status = 0;
    slot.state.store(device::kSlotActive, std::memory_order_release);  // pairs with the guest's acquire
    log("VM domain %u '%s' attached in %s (claims pid %d uid %u), queue capacity %u, wake-ups: %s", d->id, name.c_str(),
        control.where(i).c_str(), static_cast<int>(pid), static_cast<unsigned>(uid), hello.queue_capacity,
        d->doorbell ? "doorbell" : "polling");
    control.seen[i] = ControlDevice::SlotSeen{d->id, device::kSlotActive, generation, now};
    ++vm_live;
    add_domain(std::move(d));
  }

  // ---------------------------------------------------------------- output to domains

  void reply(DomainEntry& d, const Record& rec) {
    if (d.reply_backlog.empty()) {
      if (Record* slot = d.replies.producer_slot()) {
        *slot = rec;
        if (d.replies.publish()) d.kick_owed = true;
        return;
      }
    }
    d.reply_backlog.push_back(rec);
  }

  bool flush_reply_backlog(DomainEntry& d) {
    bool moved = false;
    while (!d.reply_backlog.empty()) {
      Record* slot = d.replies.producer_slot();
      if (slot == nullptr) break;
      *slot = d.reply_backlog.front();
      d.reply_backlog.pop_front();
      if (d.replies.publish()) d.kick_owed = true;
      moved = true;
    }
    return moved;
  }

  Record make_reply(Kind kind, const Record& req, Errc status) {
    Record r{};
    r.kind = static_cast<uint32_t>(kind);
    r.req_id = req.req_id;
    r.peer = req.peer;
    r.status = static_cast<uint8_t>(status);
    return r;
  }

  // Puts an accepted message into dest's queue; room was checked or reserved by the caller.
  void enqueue(DomainEntry& dest, uint32_t sender, const Record& req) {
    Record* slot = dest.queue.producer_slot();
    if (slot == nullptr) return;  // cannot happen: occupancy was checked; a corrupt queue is dropped below
    Record r = req;
    r.kind = static_cast<uint32_t>(Kind::kDeliver);
    r.req_id = 0;
    r.peer = sender;
    r.status = 0;
    r.flags = 0;
    *slot = r;
    if (dest.queue.publish()) dest.kick_owed = true;
    counters.messages.fetch_add(1, std::memory_order_relaxed);
  }

  // ---------------------------------------------------------------- requests

  Errc check_send(DomainEntry& s, const Record& req, DomainEntry** dest_out) {
    if (req.page_size > 1 || req.n_runs == 0 || req.n_runs > wire::kMaxRuns) return Errc::kInvalid;
    if (s.introduced.count(req.peer) == 0) return Errc::kNotIntroduced;
    DomainEntry* dest = find(req.peer);
    if (dest == nullptr) return Errc::kPeerDead;
    uint64_t pages = 0;
    for (uint32_t i = 0; i < req.n_runs; ++i) pages += req.runs[i].count;
    if (req.bytes > pages * page_bytes(static_cast<PageSize>(req.page_size))) return Errc::kInvalid;
    *dest_out = dest;
    return Errc::kOk;
  }

  // Accepts (or parks, or refuses) one send. Returns true when it was decided now.
  void handle_send(DomainEntry& s, const Record& req) {
    DomainEntry* dest = nullptr;
    Errc errc = check_send(s, req, &dest);
    if (errc != Errc::kOk) return reply(s, make_reply(Kind::kSendReply, req, errc));
    Delivery delivery = static_cast<Delivery>(req.delivery);
    if (delivery != Delivery::kImmediate && delivery != Delivery::kLazy) delivery = dest->options.default_delivery;
    // An immediate send is a flush point: this sender's lazy messages go first, so that the
    // order between any two domains is the order of the sends.
    if (delivery == Delivery::kImmediate) flush_lazy(s);
    if (!dest->parked.empty() || dest->occupancy() >= dest->options.capacity) {
      if (req.flags & wire::kNoWait) return reply(s, make_reply(Kind::kSendReply, req, Errc::kFull));
      Record parked = req;
      parked.delivery = static_cast<uint8_t>(delivery);
      dest->parked.push_back(Parked{s.id, parked});
      ++s.parked_out;
      return;
    }
    accept_send(s, *dest, req, delivery);
  }

  void accept_send(DomainEntry& s, DomainEntry& dest, const Record& req, Delivery delivery) {
    PagePool& pool = pools[req.page_size];
    if (!pool.transfer(std::span(req.runs, req.n_runs), s.id, dest.id))
      return reply(s, make_reply(Kind::kSendReply, req, Errc::kInvalid));
    uint64_t pages = 0;
    for (uint32_t i = 0; i < req.n_runs; ++i) pages += req.runs[i].count;
    counters.pages.fetch_add(pages, std::memory_order_relaxed);
    if (delivery == Delivery::kLazy) {
      dest.lazy_reserved++;
      s.lazy_out.push_back(LazyMessage{dest.id, req, Clock::now() + dest.options.lazy_delay});
      lazy_dirty = true;
    } else {
      enqueue(dest, s.id, req);
    }
    reply(s, make_reply(Kind::kSendReply, req, Errc::kOk));
  }

  void flush_lazy(DomainEntry& s, bool only_expired = false) {
    auto now = Clock::now();
    for (auto it = s.lazy_out.begin(); it != s.lazy_out.end();) {
      if (only_expired && it->deadline > now) {
        ++it;
        continue;
      }
      if (DomainEntry* dest = find(it->dest)) {
        dest->lazy_reserved--;
        enqueue(*dest, s.id, it->rec);
        if (only_expired) counters.timer_flushes.fetch_add(1, std::memory_order_relaxed);
      }
      it = s.lazy_out.erase(it);
      lazy_dirty = true;
    }
  }

  // Parked sends into `dest` that now fit, oldest first.
  bool unpark(DomainEntry& dest) {
    bool moved = false;
    while (!dest.parked.empty() && dest.occupancy() < dest.options.capacity) {
      Parked p = dest.parked.front();
      dest.parked.pop_front();
      DomainEntry* s = find(p.sender);
      if (s == nullptr) continue;  // the sender died while waiting; its pages were freed
      --s->parked_out;
      accept_send(*s, dest, p.rec, static_cast<Delivery>(p.rec.delivery));
      moved = true;
    }
    return moved;
  }

  void handle_alloc(DomainEntry& d, const Record& req) {
    Record r = make_reply(Kind::kAllocReply, req, Errc::kOk);
    r.page_size = req.page_size;
    if (req.page_size > 1 || req.bytes == 0 || req.bytes > pools[req.page_size].size()) {
      r.status = static_cast<uint8_t>(req.page_size > 1 || req.bytes == 0 ? Errc::kInvalid : Errc::kNoPages);
      return reply(d, r);
    }
    std::vector<wire::PageRun> runs;
    Errc errc = pools[req.page_size].allocate(static_cast<uint32_t>(req.bytes), d.id, wire::kMaxRuns, &runs);
    r.status = static_cast<uint8_t>(errc);
    r.n_runs = static_cast<uint32_t>(runs.size());
    std::copy(runs.begin(), runs.end(), r.runs);
    reply(d, r);
  }

  void handle_free(DomainEntry& d, const Record& req) {
    if (req.page_size > 1 || req.n_runs > wire::kMaxRuns) return end_session(d, "bad free request");
    if (!pools[req.page_size].transfer(std::span(req.runs, req.n_runs), d.id, PagePool::kFree))
      return end_session(d, "freed pages it does not own");
    scrub(req.page_size, std::span(req.runs, req.n_runs));
  }

  // Freed pages are zeroed before another domain can be given them: what a page's last owner
  // left there must not reach the next one. A hole punched in the pool's file does it without
  // mapping the pages here (the next owner faults in fresh zero pages, the kernel's own zeroing,
  // as for any new memory). Where the file cannot have holes that small (hugetlbfs), the bytes
  // are overwritten through a mapping: the hugetlb pool's own reservation, or one made for it.
  void scrub(int k, std::span<const wire::PageRun> runs) {
    const uint64_t unit = page_bytes(k == 0 ? PageSize::k4K : PageSize::k2M);
    const uint64_t base = device_fd ? geom.pool_offset[k] : 0;
    for (const wire::PageRun& r : runs) {
      const uint64_t offset = base + uint64_t{r.first} * unit;
      const uint64_t bytes = uint64_t{r.count} * unit;
      if (k == 1 && hugetlb && !device_fd) {
        std::memset(huge_reservation.data() + offset, 0, bytes);
        continue;
      }
      if (::fallocate(pool_fd(k), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                      static_cast<off_t>(bytes)) == 0)
        continue;
      struct stat st;
      const uint64_t align = ::fstat(pool_fd(k), &st) == 0 && st.st_blksize > 0 ? uint64_t(st.st_blksize) : unit;
      const uint64_t start = offset / align * align;
      auto mapped = base::Mapping::map_shared(pool_fd(k), start, offset + bytes - start, /*writable=*/true);
      if (!mapped) {
        // Never hand out what could not be cleared: the pages stay out of the pool.
        log("cannot clear %u freed pages (%s): they are withheld from the pool", r.count,
            mapped.error().message.c_str());
        pools[k].withhold(r);
        continue;
      }
      std::memset(mapped->data() + (offset - start), 0, bytes);
    }
  }

  void handle_introduce(DomainEntry& d, const Record& req) {
    wire::WireIdentity w;
    std::memcpy(&w, req.runs, sizeof w);
    w.name[wire::kNameMax] = 0;
    std::string name(wire::name_of(w.name));
    if (!wire::valid_name(name) || name == d.name) {
      Record r = make_reply(Kind::kIntroduced, req, Errc::kInvalid);
      return reply(d, r);
    }
    if (d.wants.size() >= wire::kMaxPendingIntroductions && d.wants.count(name) == 0)
      return reply(d, make_reply(Kind::kIntroduced, req, Errc::kFull));
    d.wants[name] = req.req_id;
    try_introduce(d, name);
  }

  // Completes the identity exchange between `d` and the domain called `name` when both asked.
  void try_introduce(DomainEntry& d, const std::string& name) {
    auto it = by_name.find(name);
    if (it == by_name.end()) return;
    DomainEntry* other = find(it->second);
    if (other == nullptr) return;
    auto mine = d.wants.find(name);
    auto theirs = other->wants.find(d.name);
    if (mine == d.wants.end() || theirs == other->wants.end()) return;
    d.introduced.insert(other->id);
    other->introduced.insert(d.id);
    auto send_identity = [&](DomainEntry& to, uint32_t req_id, const DomainEntry& about) {
      Record r{};
      r.kind = static_cast<uint32_t>(Kind::kIntroduced);
      r.req_id = req_id;
      r.peer = about.id;
      wire::WireIdentity w = about.wire_identity();
      std::memcpy(r.runs, &w, sizeof w);
      reply(to, r);
    };
    send_identity(d, mine->second, *other);
    send_identity(*other, theirs->second, d);
    log("introduced %u '%s' <-> %u '%s'", d.id, d.name.c_str(), other->id, other->name.c_str());
    d.wants.erase(mine);
    other->wants.erase(theirs);
  }

  void handle_cancel(DomainEntry& d, const Record& req) {
    for (auto& [id, dest] : domains) {
      for (auto it = dest->parked.begin(); it != dest->parked.end(); ++it) {
        if (it->sender == d.id && it->rec.req_id == req.req_id) {
          reply(d, make_reply(Kind::kSendReply, it->rec, Errc::kFull));
          dest->parked.erase(it);
          --d.parked_out;
          return;
        }
      }
    }
    // An introduction still waiting for its peer (the domain's introduce() timed out).
    for (auto it = d.wants.begin(); it != d.wants.end(); ++it) {
      if (it->second == req.req_id) {
        reply(d, make_reply(Kind::kIntroduced, req, Errc::kTimedOut));
        d.wants.erase(it);
        return;
      }
    }
    // Neither any more: its reply was already sent.
  }

  // Drains up to `budget` requests of one domain, while it is servable(). Returns whether it
  // did anything.
  bool process_requests(DomainEntry& d, int budget = 64) {
    const uint32_t id = d.id;  // `d` dies with the session if a request ends it
    bool did = false;
    Record req;
    bool kick_domain = false;
    while (budget-- > 0 && d.servable() && d.requests.pop(&req, &kick_domain)) {
      if (kick_domain) d.kick_owed = true;
      did = true;
      switch (static_cast<Kind>(req.kind)) {
        case Kind::kAlloc:
          handle_alloc(d, req);
          break;
        case Kind::kSend:
          handle_send(d, req);
          break;
        case Kind::kFlush:
          flush_lazy(d);
          reply(d, make_reply(Kind::kFlushReply, req, Errc::kOk));
          break;
        case Kind::kFree:
          handle_free(d, req);
          break;
        case Kind::kIntroduce:
          handle_introduce(d, req);
          break;
        case Kind::kCancel:
          handle_cancel(d, req);
          break;
        default:
          end_session(d, "unknown request kind");
          return true;
      }
      if (find(id) == nullptr) return true;  // the request ended the session
    }
    if (d.requests.corrupt() || d.queue.corrupt() || d.replies.corrupt()) {
      end_session(d, "corrupt ring indices");
      return true;
    }
    return did;
  }

  // ---------------------------------------------------------------- teardown

  void end_session(DomainEntry& d, const char* reason) {
    counters.protocol.fetch_add(1, std::memory_order_relaxed);
    log("ending domain %u '%s': %s", d.id, d.name.c_str(), reason);
    if (d.channel) ::shutdown(d.channel->socket_fd(), SHUT_RDWR);
    remove_domain(d.id);
  }

  void remove_domain(uint32_t id) {
    DomainEntry* d = find(id);
    if (d == nullptr) return;
    // What it sent before dying still counts: lazy messages are delivered.
    flush_lazy(*d);
    // Senders parked on its queue learn it is gone.
    for (auto& p : d->parked) {
      if (DomainEntry* s = find(p.sender)) {
        --s->parked_out;
        reply(*s, make_reply(Kind::kSendReply, p.rec, Errc::kPeerDead));
      }
    }
    d->parked.clear();
    // Its own parked sends elsewhere are dropped (pages still its own, freed below).
    for (auto& [oid, other] : domains) {
      std::erase_if(other->parked, [&](const Parked& p) { return p.sender == id; });
      // Lazy messages to it from others: their pages are already its own, freed below.
      std::erase_if(other->lazy_out, [&](const LazyMessage& m) { return m.dest == id; });
    }
    for (int k = 0; k < 2; ++k) {
      std::vector<wire::PageRun> freed;
      pools[k].free_all_of(id, &freed);
      scrub(k, freed);
    }
    for (uint32_t peer : d->introduced) {
      if (DomainEntry* p = find(peer)) {
        Record r{};
        r.kind = static_cast<uint32_t>(Kind::kPeerDown);
        r.peer = id;
        reply(*p, r);
      }
    }
    if (d->channel) ::epoll_ctl(epoll.get(), EPOLL_CTL_DEL, d->channel->socket_fd(), nullptr);
    if (d->vm_slot >= 0) {
      // The guest sees its slot gone (if it still looks) and the slot is free for the next one.
      // Only the generation it attached with: a newer claim is not ours to clear.
      device::Slot& slot = d->vm_control->header()->slots[d->vm_slot];
      if (slot.generation.load(std::memory_order_relaxed) == d->vm_generation)
        slot.state.store(device::kSlotFree, std::memory_order_release);  // pairs with the guest's acquire
      d->vm_control->seen[d->vm_slot] = ControlDevice::SlotSeen{};
      --vm_live;
      if (d->doorbell) {
        ::epoll_ctl(epoll.get(), EPOLL_CTL_DEL, d->doorbell.get(), nullptr);
      } else {
        --vm_polled;
      }
    }
    by_name.erase(d->name);
    log("domain %u '%s' gone", id, d->name.c_str());
    domains.erase(id);
    counters.live.fetch_sub(1, std::memory_order_relaxed);
    lazy_dirty = true;
  }

  // Requests a domain posted before it went are served first (a send is a send): what its
  // request ring holds, a few passes' worth and no more, so that whoever still writes into the
  // ring of a domain that is going (a hostile guest) cannot keep the event loop here.
  void serve_last_requests(uint32_t id) {
    for (int passes = 0; passes < 4; ++passes) {
      DomainEntry* d = find(id);
      if (d == nullptr || !process_requests(*d)) return;
    }
  }

  void on_domain_event(uint32_t id, uint32_t events) {
    DomainEntry* d = find(id);
    if (d == nullptr) return;
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
      serve_last_requests(id);
      remove_domain(id);
      return;
    }
  }

  // A VM domain rang (the pass that follows serves it), or its doorbell ended: the stream lives
  // as long as its QEMU, so the VM is gone (unless the domain left first: a guest process on
  // this kernel holds the socket itself, and closes it as it leaves).
  void on_doorbell(uint32_t id, uint32_t events) {
    DomainEntry* d = find(id);
    if (d == nullptr || !d->doorbell) return;
    if (transport::drain_doorbell(d->doorbell.get()) && !(events & (EPOLLHUP | EPOLLERR))) return;
    device::Slot& slot = d->vm_control->header()->slots[d->vm_slot];
    if (slot.state.load(std::memory_order_acquire) == device::kSlotLeaving &&
        slot.generation.load(std::memory_order_relaxed) == d->vm_generation) {
      log("VM domain %u '%s' in %s left", d->id, d->name.c_str(),
          d->vm_control->where(static_cast<uint32_t>(d->vm_slot)).c_str());
      serve_last_requests(id);
      remove_domain(id);
      return;
    }
    log("VM domain %u '%s' in %s silent (its doorbell closed: QEMU ended)", d->id, d->name.c_str(),
        d->vm_control->where(static_cast<uint32_t>(d->vm_slot)).c_str());
    counters.silent.fetch_add(1, std::memory_order_relaxed);
    serve_last_requests(id);
    remove_domain(id);
  }

  // ---------------------------------------------------------------- event loop

  bool pass() {
    bool did = false;
    std::vector<uint32_t> ids;
    ids.reserve(domains.size());
    for (auto& [id, d] : domains) ids.push_back(id);
    for (uint32_t id : ids)
      if (DomainEntry* d = find(id)) did |= process_requests(*d);
    for (uint32_t id : ids) {
      DomainEntry* d = find(id);
      if (d == nullptr) continue;
      if (!d->parked.empty()) did |= unpark(*d);
      if (!d->reply_backlog.empty()) did |= flush_reply_backlog(*d);
    }
    for (auto& [id, d] : domains) {
      if (d->kick_owed) {
        d->kick_owed = false;
        if (d->kick) {
          d->kick.signal();
        } else if (d->doorbell) {
          transport::ring_doorbell(d->doorbell.get());  // a dead one is reported by epoll
        }
      }
    }
    return did;
  }

  void arm_timer() {
    if (!lazy_dirty) return;
    lazy_dirty = false;
    Clock::time_point earliest = Clock::time_point::max();
    for (auto& [id, d] : domains)
      for (auto& m : d->lazy_out) earliest = std::min(earliest, m.deadline);
    itimerspec its{};
    if (earliest != Clock::time_point::max()) {
      auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(earliest.time_since_epoch()).count();
      if (ns <= 0) ns = 1;
      its.it_value.tv_sec = ns / 1'000'000'000;
      its.it_value.tv_nsec = ns % 1'000'000'000;
    }
    // steady_clock is CLOCK_MONOTONIC on Linux.
    ::timerfd_settime(timer.get(), TFD_TIMER_ABSTIME, &its, nullptr);
  }

  void on_timer() {
    uint64_t expirations;
    [[maybe_unused]] ssize_t n = ::read(timer.get(), &expirations, sizeof expirations);
    for (auto& [id, d] : domains) flush_lazy(*d, true);
    lazy_dirty = true;
  }

  // Announces that the broker sleeps on every ring it consumes or waits on, then re-checks.
  bool prepare_sleep() {
    bool work = false;
    for (auto& [id, d] : domains) {
      // A domain owed too many answers is not read (servable()): its requests are work again
      // once it reads its replies, which kicks us (the backlog's wait below) or a parked send
      // is decided (a pass that did something, which runs another).
      if (d->requests.consumer_prepare_wait() && d->servable()) work = true;
      // A parked send waits for room, which the domain makes by reading (it kicks us: the
      // prepare announces the wait) or the timer makes by delivering lazy messages. A free ring
      // slot is work only when the parked send may take it: slots promised to lazy messages
      // are not, and counting them spun this loop without ever reaching the timer.
      if (!d->parked.empty() && d->queue.producer_prepare_wait() && d->occupancy() < d->options.capacity) work = true;
      if (!d->reply_backlog.empty() && d->replies.producer_prepare_wait()) work = true;
    }
    return work;
  }

  base::Result<void> run() {
    constexpr int kMaxEvents = 32;
    epoll_event events[kMaxEvents];
    while (!stopping.load(std::memory_order_acquire)) {
      if (device_fd && Clock::now() >= next_serve) {
        serve_device();
        next_serve = Clock::now() + device::kServe;
      }
      if (pass()) {
        vm_nap = transport::kVmPollMin;
        continue;
      }
      // A short spin catches the next request of a busy domain without a sleep/wake pair.
      bool work = false;
      auto spin_until = Clock::now() + kSpin;
      while (!work && Clock::now() < spin_until) {
        _mm_pause();
        for (auto& [id, d] : domains)
          if (d->servable() && d->requests.consumer_slot() != nullptr) work = true;
      }
      if (work) continue;
      arm_timer();
      if (prepare_sleep()) continue;
      counters.free_pages.store(pools[0].free_pages() + pools[1].free_pages(), std::memory_order_relaxed);
      // A VM domain without a doorbell kicks nobody: while one is attached, poll the rings every
      // kPoll; otherwise wake for the next look at the device's slots (or a kick, a doorbell).
      timespec nap{};
      timespec* timeout = nullptr;
      if (device_fd) {
        auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(next_serve - Clock::now());
        if (vm_polled > 0) left = std::min<std::chrono::nanoseconds>(left, vm_nap);
        left = std::max<std::chrono::nanoseconds>(left, std::chrono::nanoseconds(0));
        nap.tv_sec = static_cast<time_t>(left.count() / 1'000'000'000);
        nap.tv_nsec = static_cast<long>(left.count() % 1'000'000'000);
        timeout = &nap;
      }
      int n = ::epoll_pwait2(epoll.get(), events, kMaxEvents, timeout, nullptr);
      // An idle look at VM domains' rings: the next nap is longer (transport's polling sleeper's
      // growth), up to kPoll; any work found starts it over from kVmPollMin.
      if (n == 0) vm_nap = std::min<std::chrono::nanoseconds>(vm_nap * 2, device::kPoll);
      if (n < 0) {
        if (errno == EINTR) continue;
        return base::errno_error(base::Errc::kIo, "epoll_wait", errno);
      }
      for (int i = 0; i < n; ++i) {
        auto tag = static_cast<Tag>(events[i].data.u64 >> 32);
        auto id = static_cast<uint32_t>(events[i].data.u64);
        switch (tag) {
          case Tag::kListen:
            accept_one();
            break;
          case Tag::kStop:
            stop_kick.drain();
            break;
          case Tag::kKick:
            broker_kick.drain();
            break;
          case Tag::kTimer:
            on_timer();
            break;
          case Tag::kArrival:
            admit_arrivals();
            break;
          case Tag::kDomain:
            on_domain_event(id, events[i].events);
            break;
          case Tag::kDoorbell:
            on_doorbell(id, events[i].events);
            break;
        }
      }
      arm_timer();
    }
    counters.free_pages.store(pools[0].free_pages() + pools[1].free_pages(), std::memory_order_relaxed);
    return {};
  }
};

base::Result<std::unique_ptr<Broker>> Broker::create(BrokerOptions options) {
  auto impl = std::make_unique<Impl>(std::move(options));
  if (auto ready = impl->init(); !ready) return ready.error();
  return std::unique_ptr<Broker>(new Broker(std::move(impl)));
}

Broker::Broker(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Broker::~Broker() = default;

base::Result<void> Broker::run() { return impl_->run(); }

void Broker::stop() {
  impl_->stopping.store(true, std::memory_order_release);  // pairs with run()'s acquire load
  impl_->stop_kick.signal();
}

BrokerStats Broker::stats() const {
  BrokerStats s;
  auto& c = impl_->counters;
  s.domains_connected = c.connected.load(std::memory_order_relaxed);
  s.domains_live = c.live.load(std::memory_order_relaxed);
  s.messages = c.messages.load(std::memory_order_relaxed);
  s.pages_moved = c.pages.load(std::memory_order_relaxed);
  s.lazy_flushed_by_timer = c.timer_flushes.load(std::memory_order_relaxed);
  s.sessions_ended_for_protocol = c.protocol.load(std::memory_order_relaxed);
  s.vm_domains_silent = c.silent.load(std::memory_order_relaxed);
  s.pages_free = c.free_pages.load(std::memory_order_relaxed);
  s.huge_pages_are_hugetlb = impl_->hugetlb;
  return s;
}

const char* to_string(Errc errc) {
  switch (errc) {
    case Errc::kOk:
      return "ok";
    case Errc::kFull:
      return "destination queue full";
    case Errc::kTimedOut:
      return "timed out";
    case Errc::kPeerDead:
      return "peer domain is gone";
    case Errc::kNotIntroduced:
      return "not introduced to that domain";
    case Errc::kNoPages:
      return "page pool exhausted";
    case Errc::kBrokerLost:
      return "host broker is gone";
    case Errc::kInvalid:
      return "invalid argument";
    case Errc::kNameTaken:
      return "domain name already taken";
    case Errc::kTooFragmented:
      return "too many page runs for one message";
    case Errc::kProtocol:
      return "protocol mismatch";
  }
  return "unknown error";
}

}  // namespace bypass::vmqueue
