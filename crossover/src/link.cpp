#include "bypass/crossover/link.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "bypass/base/json.h"
#include "bypass/base/mapping.h"
#include "bypass/base/memfd.h"
#include "bypass/base/socket_path.h"
#include "bypass/base/unix_socket.h"
#include "bypass/crossover/device.h"
#include "bypass/crossover/port.h"
#include "bypass/crossover/switch.h"
#include "bypass/crossover/tap.h"
#include "bypass/transport/doors.h"
#include "bypass/transport/kick.h"
#include "bypass/transport/session.h"
#include "bypass/transport/vm.h"

namespace bypass::crossover {

namespace {

// The control protocol runs on transport sessions (link.h: kControlVersion, kControlSchema):
// handshake with version check, fd passing, peer death from the session socket's hang-up.
const transport::SessionOptions kControlSession{.ring_bytes = 64 << 10, .max_message = 4 << 20};

// Messages on a control session. The first one from the client says what it wants.
enum MessageKind : uint32_t {
  kMsgAttach = 1,   // endpoint -> host: AttachRequest
  kMsgAttachReply,  // host -> endpoint: AttachReply, then (if accepted) the fds with kAttachFdTag
  kMsgCommand,      // CLI -> host: CommandRequest
  kMsgText,         // host -> CLI: the answer, text
};
enum Command : uint32_t { kCmdStatus = 1, kCmdStatusJson, kCmdShutdown };
constexpr uint64_t kAttachFdTag = 0x78617474;  // "xatt"

struct AttachRequest {
  uint32_t side = 0;
  uint8_t mac[6] = {};
  uint8_t pad[2] = {};
};
static_assert(sizeof(AttachRequest) == 12);

struct CommandRequest {
  uint32_t command = 0;
};

struct AttachReply {
  uint32_t status = 0;  // 0 ok, else 1 = side taken / bad side
  uint32_t buffers_per_port = 0;
  uint32_t port_mask = 0;  // pools present; their fds follow in port order
  uint32_t reserved = 0;
};
static_assert(sizeof(AttachReply) == 16);
// Fds after an accepted AttachReply: rings, host kick, tx_done kick, rx kick, then one pool per
// port in port_mask (the endpoint's own read/write, the others read-only).
enum AttachFd { kFdRings = 0, kFdHostKick, kFdTxDoneKick, kFdRxKick, kFdFirstPool };

template <class T>
std::span<const std::byte> bytes_of(const T& value) {
  return std::as_bytes(std::span(&value, 1));
}

// Reads a fixed-size record out of a message, refusing any other size.
template <class T>
bool record_from(const transport::Message& msg, uint32_t kind, T* out) {
  if (msg.kind != kind || msg.payload.size() != sizeof(T)) return false;
  std::memcpy(out, msg.payload.data(), sizeof(T));
  return true;
}

struct HostPort {
  bool present = false;
  base::UniqueFd rings_fd, pool_fd;
  base::Mapping rings, pool;
  std::byte* rings_at = nullptr;  // this port's rings and pool: in the memfds above, or in the VM device
  std::byte* pool_at = nullptr;
  // A port in the VM device: the endpoint's generation and heartbeat as last seen, and when it
  // last moved.
  uint32_t generation = 0;
  uint64_t heartbeat = 0;
  std::chrono::steady_clock::time_point heartbeat_moved;
  transport::Kick tx_done_kick, rx_kick;
  bool attached = false;
  std::optional<transport::Channel> session;  // the endpoint's control session (its death is the port's)
  pid_t pid = -1;                             // endpoint process we spawned
};

// The two eventfd kicks the switch and a port's endpoint wake each other with (not for a VM's
// ports, which poll).
base::Result<void> make_kicks(HostPort& hp) {
  auto tx_done_kick = transport::Kick::create();
  if (!tx_done_kick) return tx_done_kick.error();
  hp.tx_done_kick = std::move(tx_done_kick).value();
  auto rx_kick = transport::Kick::create();
  if (!rx_kick) return rx_kick.error();
  hp.rx_kick = std::move(rx_kick).value();
  return {};
}

// Pins the calling thread (and the threads it starts later) to `cpu`; kCpuNone leaves it be.
// A failure (the CPU is not in our cpuset) is not fatal: it only costs throughput.
void pin_to_cpu(int cpu) {
  if (cpu < 0 || cpu >= CPU_SETSIZE) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  ::sched_setaffinity(0, sizeof set, &set);
}

int resolve_cpu(int cpu) {
  if (cpu != kCpuAuto) return cpu;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) != 0) return kCpuNone;
  // The last one: CPU 0 usually takes more of the interrupts and housekeeping.
  for (int c = CPU_SETSIZE - 1; c >= 0; --c)
    if (CPU_ISSET(c, &set)) return c;
  return kCpuNone;
}

class LinkDaemon {
 public:
  LinkDaemon(const LinkOptions& o) : opt_(o) {}

  int run(int ready_fd) {
    ready_fd_ = ready_fd;
    if (auto ready = setup(); !ready) {
      report_ready("error: " + ready.error().message);
      teardown();
      return 1;
    }
    int rc = loop();
    teardown();
    return rc;
  }

 private:
  void log(const std::string& s) {
    if (opt_.verbose) std::fprintf(stderr, "bypass-xover[%s]: %s\n", opt_.name.c_str(), s.c_str());
  }

  void report_ready(const std::string& msg) {
    if (ready_fd_ < 0) return;
    std::string line = msg + "\n";
    [[maybe_unused]] ssize_t n = ::write(ready_fd_, line.data(), line.size());
    ::close(ready_fd_);
    ready_fd_ = -1;
  }

  base::Result<void> setup() {
    using base::Errc;
    // Blocked before any thread starts (the switch, the uplink's), which inherit the mask: a
    // SIGTERM must reach the signalfd below, not kill the process from another thread before
    // teardown() removes the sockets and says goodbye to the endpoints.
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGCHLD);
    ::pthread_sigmask(SIG_BLOCK, &mask, nullptr);
    for (int s = 0; s < 2 && opt_.device.empty(); ++s)
      if (!netns_exists(opt_.netns[s]))
        return base::make_error(Errc::kInvalidArgument, "network namespace '" + opt_.netns[s] +
                                                            "' does not exist (ip netns add " + opt_.netns[s] + ")");
    if (!opt_.uplink_netns.empty() && !netns_exists(opt_.uplink_netns))
      return base::make_error(Errc::kInvalidArgument,
                              "uplink network namespace '" + opt_.uplink_netns + "' does not exist");
    if (opt_.buffers == 0 || opt_.buffers > kRingSlots / 2)
      return base::make_error(Errc::kInvalidArgument, "buffers per port must be 1.." + std::to_string(kRingSlots / 2));
    auto host_kick = transport::Kick::create();
    if (!host_kick) return host_kick.error();
    host_kick_ = std::move(host_kick).value();
    auto stop_kick = transport::Kick::create();
    if (!stop_kick) return stop_kick.error();
    stop_ = std::move(stop_kick).value();
    ports_[kPortA].present = ports_[kPortB].present = true;
    ports_[kPortUplink].present = !opt_.uplink_netns.empty();
    if (!opt_.device.empty()) {
      if (auto made = make_device(); !made) return made;
    }
    for (uint32_t p = 0; p < kPorts; ++p) {
      HostPort& hp = ports_[p];
      if (!hp.present) continue;
      if (!opt_.device.empty()) {
        hp.rings_at = device_.data() + geometry_.rings_offset[p];
        hp.pool_at = device_.data() + geometry_.pool_offset[p];
        for (int r = 0; r < kRingsPerPort; ++r) open_ring(hp.rings_at, r, true);
        if (p == kPortUplink) {
          if (auto made = make_kicks(hp); !made) return made.error();
        }
        continue;  // a VM's port is woken by polling, not kicked
      }
      std::string tag = std::string("xover-") + port_name(p);
      auto rings_fd = base::make_memfd((tag + "-rings").c_str(), ring_region_bytes());
      if (!rings_fd) return rings_fd.error();
      hp.rings_fd = std::move(rings_fd).value();
      auto rings = base::Mapping::map_shared(hp.rings_fd.get(), 0, ring_region_bytes(), /*writable=*/true);
      if (!rings) return rings.error();
      hp.rings = std::move(rings).value();
      for (int r = 0; r < kRingsPerPort; ++r) open_ring(hp.rings.data(), r, true);
      auto pool_fd = base::make_memfd((tag + "-pool").c_str(), pool_bytes(opt_.buffers));
      if (!pool_fd) return pool_fd.error();
      hp.pool_fd = std::move(pool_fd).value();
      // The host only reads endpoint frames (their destination MAC); it writes the uplink's.
      auto pool = base::Mapping::map_shared(hp.pool_fd.get(), 0, pool_bytes(opt_.buffers), p == kPortUplink);
      if (!pool) return pool.error();
      hp.pool = std::move(pool).value();
      hp.rings_at = hp.rings.data();
      hp.pool_at = hp.pool.data();
      if (auto made = make_kicks(hp); !made) return made.error();
    }
    cpu_ = resolve_cpu(opt_.cpu);
    sw_ = std::make_unique<Switch>(opt_.buffers, host_kick_.fd(), stop_.fd(), cpu_ == kCpuNone);
    switch_thread_ = std::thread([this] {
      pin_to_cpu(cpu_);
      sw_->run();
    });
    if (ports_[kPortUplink].present) {
      if (auto uplink = start_uplink(); !uplink) return uplink;
    }

    if (auto dir = base::secure_socket_dir(opt_.socket_path, 0755); !dir) return dir;
    auto listening = transport::Listener::listen(opt_.socket_path);
    if (!listening) return base::make_error(Errc::kIo, listening.error().message);
    listen_.emplace(std::move(listening).value());
    epoll_ = base::UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_) return base::errno_error(Errc::kIo, "epoll_create1", errno);
    signals_ = base::UniqueFd(::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!signals_) return base::errno_error(Errc::kIo, "signalfd", errno);
    if (auto watched = watch(listen_->fd(), kKeyListen, EPOLLIN); !watched) return watched;
    if (auto watched = watch(signals_.get(), kKeySignals, EPOLLIN); !watched) return watched;
    if (auto started = doors_.start(kMaxDoors); !started) return started;
    if (auto watched = watch(doors_.fd(), kKeyDoors, EPOLLIN); !watched) return watched;
    for (uint32_t s = 0; s < 2 && opt_.device.empty(); ++s) {
      if (auto spawned = spawn_endpoint(s); !spawned) return spawned;
    }
    return {};
  }

  // The VM device: a file of geometry_.size bytes that QEMU maps as each guest's ivshmem BAR.
  base::Result<void> make_device() {
    using base::Errc;
    geometry_ = device_geometry(opt_.buffers);
    base::UniqueFd fd(::open(opt_.device.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd) return base::errno_error(Errc::kIo, "cannot create the device " + opt_.device, errno);
    if (::ftruncate(fd.get(), static_cast<off_t>(geometry_.size)) != 0)
      return base::errno_error(Errc::kIo, "cannot size the device " + opt_.device, errno);
    auto mapped = base::Mapping::map_shared(fd.get(), 0, geometry_.size, /*writable=*/true);
    if (!mapped) return mapped.error();
    device_ = std::move(mapped).value();
    auto* h = device_header();
    h->version = kDeviceVersion;
    h->size = geometry_.size;
    h->control_schema = kControlSchema;
    h->buffers_per_port = opt_.buffers;
    for (uint32_t p = 0; p < kPorts; ++p) {
      if (ports_[p].present) h->port_mask |= 1u << p;
      h->rings_offset[p] = geometry_.rings_offset[p];
      h->pool_offset[p] = geometry_.pool_offset[p];
    }
    if (opt_.doorbells) {
      // A doorbell per endpoint port, each for one VM: the two VMs map the same device, so each
      // QEMU must be given its own side's socket only (scripts/vm.sh --doorbell-slots).
      auto listening = transport::DoorbellListener::listen(opt_.device, 2);
      if (!listening) return base::make_error(Errc::kIo, listening.error().message);
      doorbells_ = std::move(listening).value();
      doorbells_.tag(&h->doorbells);
    }
    // Release: pairs with a guest's acquire load of the magic before it reads the rest.
    std::atomic_ref(h->magic).store(kDeviceMagic, std::memory_order_release);
    log("VM device " + opt_.device + ": " + std::to_string(geometry_.size >> 20) + " MiB");
    return {};
  }

  DeviceHeader* device_header() { return reinterpret_cast<DeviceHeader*>(device_.data()); }

  // Every kDeviceBeat while a VM device is served: our heartbeat, endpoints asking to attach,
  // endpoints whose heartbeat stood still.
  void serve_device() {
    auto* h = device_header();
    h->host_heartbeat.fetch_add(1, std::memory_order_relaxed);
    const auto now = std::chrono::steady_clock::now();
    for (uint32_t side = 0; side < 2; ++side) {
      HostPort& hp = ports_[side];
      DevicePort& dp = h->ports[side];
      const uint32_t state = dp.state.load(std::memory_order_acquire);  // pairs with the guest's release
      if (state == kSlotRequested && !hp.attached) {
        // Fresh rings for a fresh endpoint: the last one may have died half way through a frame.
        for (int r = 0; r < kRingsPerPort; ++r) open_ring(hp.rings_at, r, true);
        Mac mac;
        std::memcpy(mac.data(), dp.mac, 6);
        // The doorbell if the endpoint holds its end too.
        base::UniqueFd bell = transport::doorbell_if_guest_holds(doorbells_.take(side), dp.guest_doorbell);
        dp.host_doorbell = bell ? 1 : 0;
        const bool rings = static_cast<bool>(bell);
        sw_->attach(side, hp.rings_at, hp.pool_at, -1, -1, mac, std::move(bell));
        hp.attached = true;
        hp.generation = dp.generation.load(std::memory_order_relaxed);
        hp.heartbeat = dp.guest_heartbeat.load(std::memory_order_relaxed);
        hp.heartbeat_moved = now;
        dp.state.store(kSlotActive, std::memory_order_release);  // pairs with the guest's acquire
        log(std::string("VM endpoint ") + port_name(side) + " attached, mac " + mac_to_string(mac) +
            ", wake-ups: " + (rings ? "doorbell" : "polling"));
        continue;
      }
      if (!hp.attached) continue;
      const uint64_t beat = dp.guest_heartbeat.load(std::memory_order_relaxed);
      if (beat != hp.heartbeat) {
        hp.heartbeat = beat;
        hp.heartbeat_moved = now;
      }
      const bool silent = now - hp.heartbeat_moved > kDeviceGuestTimeout;
      // Its doorbell's end: the VM is gone (the switch took the port down already).
      const bool bell_ended = sw_->doorbell_ended(side);
      if (silent || bell_ended || state != kSlotActive ||
          dp.generation.load(std::memory_order_relaxed) != hp.generation) {
        log(std::string("VM endpoint ") + port_name(side) +
            (bell_ended ? " gone (its doorbell closed)"
             : silent   ? " silent"
                        : " left") +
            ": link down on that side");
        sw_->detach(side);
        hp.attached = false;
        dp.state.store(kSlotFree, std::memory_order_release);
      }
    }
  }

  base::Result<void> start_uplink() {
    HostPort& hp = ports_[kPortUplink];
    Mac mac{};
    {
      // The TAP device is created in the uplink namespace and stays there; this thread goes
      // back to the host's namespace at the end of the scope.
      auto in = NetnsScope::enter(opt_.uplink_netns);
      if (!in) return in.error();
      TapConfig c;
      c.name = opt_.uplink_ifname;
      c.address = opt_.uplink_address;
      c.mac = opt_.uplink_mac;
      c.mtu = opt_.endpoint[0].mtu;
      c.offload = opt_.endpoint[0].offload;
      auto tap = create_tap(c);
      if (!tap) return tap.error();
      uplink_tap_ = std::move(tap).value();
      auto tap_address = tap_mac(c.name);
      if (!tap_address) return tap_address.error();
      mac = *tap_address;
    }
    ::fcntl(uplink_tap_.get(), F_SETFL, ::fcntl(uplink_tap_.get(), F_GETFL) | O_NONBLOCK);
    PortMemory mem;
    mem.rings = hp.rings_at;
    mem.own_pool = hp.pool_at;
    for (uint32_t p = 0; p < kPorts; ++p)
      if (ports_[p].present) mem.pools[p] = ports_[p].pool_at;
    mem.buffers_per_port = opt_.buffers;
    uplink_ = std::make_unique<PortDriver>(kPortUplink, uplink_tap_.get(), mem, host_kick_.fd(), hp.tx_done_kick.fd(),
                                           hp.rx_kick.fd(), stop_.fd());
    sw_->attach(kPortUplink, hp.rings_at, hp.pool_at, hp.tx_done_kick.fd(), hp.rx_kick.fd(), mac);
    hp.attached = true;
    uplink_threads_.emplace_back([this] {
      pin_to_cpu(cpu_);
      uplink_->run();
    });
    log("uplink " + opt_.uplink_ifname + " in namespace " + opt_.uplink_netns + " mac " + mac_to_string(mac));
    return {};
  }

  base::Result<void> spawn_endpoint(uint32_t side) {
    const EndpointOptions& e = opt_.endpoint[side];
    std::vector<std::string> args = {"bypass-xover", "endpoint",      "--control", opt_.socket_path,
                                     "--side",       port_name(side), "--ifname",  e.ifname};
    if (!e.address.empty()) args.insert(args.end(), {"--addr", e.address});
    bool has_mac = false;
    for (auto b : e.mac) has_mac |= b != 0;
    if (has_mac) args.insert(args.end(), {"--mac", mac_to_string(e.mac)});
    if (e.mtu > 0) args.insert(args.end(), {"--mtu", std::to_string(e.mtu)});
    if (!e.offload) args.push_back("--no-offload");
    if (cpu_ >= 0) args.insert(args.end(), {"--cpu", std::to_string(cpu_)});
    if (opt_.verbose) args.push_back("--verbose");
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    auto netns = open_netns(opt_.netns[side]);
    if (!netns) return netns.error();
    const base::UniqueFd ns = std::move(netns).value();
    pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) return base::errno_error(base::Errc::kIo, "fork", errno);
    if (pid == 0) {
      // Only system calls between fork and exec: the daemon has threads.
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != parent) ::_exit(126);
      sigset_t none;
      sigemptyset(&none);
      ::pthread_sigmask(SIG_SETMASK, &none, nullptr);
      if (::setns(ns.get(), CLONE_NEWNET) != 0) ::_exit(125);
      ::execv("/proc/self/exe", argv.data());
      ::_exit(127);
    }
    ports_[side].pid = pid;
    return {};
  }

  enum : uint64_t { kKeyListen = 1ull << 40, kKeySignals = 2ull << 40, kKeyDoors = 3ull << 40 };

  base::Result<void> watch(int fd, uint64_t key, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = key;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0)
      return base::errno_error(base::Errc::kIo, "epoll_ctl", errno);
    return {};
  }

  int loop() {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    const bool vm = !opt_.device.empty();
    for (;;) {
      if (vm) serve_device();
      // A VM link is up once its device is: the guests attach when they boot, and again after a reset.
      if (!ready_ && (vm || (ports_[kPortA].attached && ports_[kPortB].attached))) {
        ready_ = true;
        report_ready("ok");
        log("ready");
      }
      int timeout = vm ? static_cast<int>(kDeviceBeat.count()) : -1;
      if (!ready_) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
          report_ready("error: endpoints did not attach in time");
          return 1;
        }
        timeout = static_cast<int>(left.count());
      }
      epoll_event events[8];
      int n = ::epoll_wait(epoll_.get(), events, 8, timeout);
      if (n < 0 && errno != EINTR) return 1;
      for (int i = 0; i < n; ++i) {
        uint64_t key = events[i].data.u64;
        if (key == kKeyListen) {
          accept_one();
        } else if (key == kKeyDoors) {
          serve_control();
        } else if (key == kKeySignals) {
          signalfd_siginfo si;
          while (::read(signals_.get(), &si, sizeof si) == sizeof si) {
            if (si.ssi_signo == SIGCHLD) {
              reap();
            } else {
              log("signal " + std::to_string(si.ssi_signo) + ": shutting down");
              return 0;
            }
          }
          if (!ready_ && endpoint_failed_) {
            report_ready("error: an endpoint exited before attaching (see its stderr)");
            return 1;
          }
        } else {
          auto side = static_cast<uint32_t>(key);
          if (side < 2 && ports_[side].attached) {
            log(std::string("endpoint ") + port_name(side) + " gone: link down on that side");
            sw_->detach(side);
            ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, ports_[side].session->socket_fd(), nullptr);
            ports_[side].session.reset();
          }
        }
        if (shutdown_) return 0;
      }
    }
  }

  void reap() {
    int status;
    pid_t pid;
    while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
      for (auto& hp : ports_) {
        if (hp.pid != pid) continue;
        hp.pid = -1;
        if (!hp.attached) endpoint_failed_ = true;
      }
    }
  }

  // One control session: the transport handshake (versions, schema), then one request, on a
  // door thread (transport::Doors), so that a client that says nothing holds up neither the
  // other control clients nor the event loop's own work (a VM link's heartbeat, an endpoint's
  // death): the loop only accepts, and answers what a door hands it. A client that says nothing
  // in 2 s, speaks another version or sends a malformed request is dropped with a log line; one
  // more than kMaxDoors connecting at once is refused at once; the link goes on.
  struct ControlRequest {
    transport::Channel channel;
    transport::Message msg;
  };

  void accept_one() {
    auto socket = listen_->accept_connection(transport::deadline_after(std::chrono::milliseconds(0)));
    if (!socket) {
      if (socket.code() != transport::Status::kTimeout) log(socket.error().message);
      return;
    }
    if (doors_.full()) {
      log("refused a control connection: " + std::to_string(doors_.running()) + " others are still connecting");
      transport::reject_connection(std::move(socket).value(),
                                   "bypass-xover: too many control clients are connecting at once; try again");
      return;
    }
    doors_.open(std::move(socket).value(), [this](base::UniqueFd fd) { return control_request(std::move(fd)); });
  }

  // On a door thread: the handshake and the request.
  std::optional<ControlRequest> control_request(base::UniqueFd socket) {
    const transport::Hello mine{kControlVersion, kControlSchema, "bypass-xover " + opt_.name};
    const auto deadline = transport::deadline_after(std::chrono::seconds(2));
    auto channel = transport::accept_socket(std::move(socket), mine, kControlSession, deadline);
    if (!channel) {
      log("control session refused: " + channel.error().message);
      return std::nullopt;
    }
    ControlRequest request{std::move(channel).value(), {}};
    if (const auto got = request.channel.recv(request.msg, deadline); got != transport::Status::kOk) {
      log("control client sent no request: " + std::string(transport::to_string(got)));
      return std::nullopt;
    }
    return request;
  }

  // On the event loop: the requests the doors received. Answers are small and fit the session's
  // socket buffer, so a client that does not read them holds up nothing.
  void serve_control() {
    for (ControlRequest& request : doors_.take()) serve_one(std::move(request.channel), request.msg);
  }

  void serve_one(transport::Channel channel, const transport::Message& msg) {
    const auto deadline = transport::deadline_after(std::chrono::seconds(1));
    CommandRequest command;
    if (record_from(msg, kMsgCommand, &command)) {
      std::string text;
      if (command.command == kCmdShutdown) {
        text = "shutting down";
        shutdown_ = true;
      } else if (command.command == kCmdStatus || command.command == kCmdStatusJson) {
        text = command.command == kCmdStatusJson ? status_json() : status_text();
      } else {
        text = "error: unknown command " + std::to_string(command.command);
      }
      // A CLI that hung up before its answer misses only that answer; shutdown happens anyway.
      if (channel.send(kMsgText, std::as_bytes(std::span(text.data(), text.size())), deadline) !=
          transport::Status::kOk)
        log("a control client left before its answer");
      return;
    }
    AttachRequest hello;
    if (!record_from(msg, kMsgAttach, &hello)) {
      log("malformed control request (kind " + std::to_string(msg.kind) + ", " + std::to_string(msg.payload.size()) +
          " bytes) from pid " + std::to_string(channel.peer_pid()));
      return;
    }
    AttachReply reply;
    reply.buffers_per_port = opt_.buffers;
    const uint32_t side = hello.side;
    // A VM link's endpoints attach through the device, not the socket.
    if (side > kPortB || ports_[side].attached || !opt_.device.empty()) {
      reply.status = 1;
      // Refused either way; an endpoint gone already needs no reason.
      if (channel.send(kMsgAttachReply, bytes_of(reply), deadline) != transport::Status::kOk)
        log("refused endpoint left");
      return;
    }
    HostPort& hp = ports_[side];
    std::vector<base::UniqueFd> read_only;  // kept alive until sent
    std::vector<int> fds = {hp.rings_fd.get(), host_kick_.fd(), hp.tx_done_kick.fd(), hp.rx_kick.fd()};
    for (uint32_t p = 0; p < kPorts; ++p) {
      if (!ports_[p].present) continue;
      reply.port_mask |= 1u << p;
      if (p == side) {
        fds.push_back(ports_[p].pool_fd.get());
      } else {
        auto ro = base::reopen_read_only(ports_[p].pool_fd.get());
        if (!ro) {
          log(std::string("cannot attach endpoint ") + port_name(side) + ": " + ro.error().message);
          return;  // the endpoint sees the session end and exits with an error
        }
        read_only.push_back(std::move(ro).value());
        fds.push_back(read_only.back().get());
      }
    }
    if (channel.send(kMsgAttachReply, bytes_of(reply), deadline) != transport::Status::kOk ||
        channel.send_fds(kAttachFdTag, fds, deadline) != transport::Status::kOk) {
      log(std::string("endpoint ") + port_name(side) + " left during its attach: " + channel.error_text());
      return;
    }
    Mac mac;
    std::memcpy(mac.data(), hello.mac, 6);
    sw_->attach(side, hp.rings_at, hp.pool_at, hp.tx_done_kick.fd(), hp.rx_kick.fd(), mac);
    hp.attached = true;
    hp.session.emplace(std::move(channel));
    // Nothing more travels on the session: only its hang-up (the peer death SocketLink reads)
    // matters. Unwatched, it would go unnoticed: treat the endpoint as gone now.
    if (auto watched = watch(hp.session->socket_fd(), side, EPOLLRDHUP); !watched) {
      log(std::string("endpoint ") + port_name(side) + ": " + watched.error().message);
      sw_->detach(side);
      hp.session.reset();
      return;
    }
    log(std::string("endpoint ") + port_name(side) + " attached (pid " + std::to_string(hp.session->peer_pid()) +
        "), mac " + mac_to_string(mac));
  }

  std::string status_json() {
    SwitchStats s = sw_->stats();
    std::string j = "{\"name\":\"" + base::json_escape(opt_.name) + "\",\"ports\":{";
    for (uint32_t p = 0; p < kPorts; ++p) {
      const auto& ps = s.ports[p];
      if (p) j += ",";
      j += "\"" + std::string(port_name(p)) + "\":{\"present\":" + (ports_[p].present ? "true" : "false") +
           ",\"live\":" + (ps.live ? "true" : "false") + ",\"frames_in\":" + std::to_string(ps.frames_in) +
           ",\"bytes_in\":" + std::to_string(ps.bytes_in) + ",\"frames_out\":" + std::to_string(ps.frames_out) +
           ",\"bytes_out\":" + std::to_string(ps.bytes_out) + ",\"dropped_full\":" + std::to_string(ps.dropped_full) +
           "}";
    }
    j += "},\"crossover\":" + std::to_string(s.crossover) + ",\"to_uplink\":" + std::to_string(s.to_uplink) +
         ",\"from_uplink\":" + std::to_string(s.from_uplink) + ",\"flooded\":" + std::to_string(s.flooded) +
         ",\"dropped\":" + std::to_string(s.dropped) + ",\"mac_moves\":" + std::to_string(s.mac_moves) + ",\"macs\":[";
    bool first = true;
    for (const auto& e : sw_->detector().table()) {
      if (!first) j += ",";
      first = false;
      char age[32];
      std::snprintf(age, sizeof age, "%.1f", e.age_s);
      j += "{\"mac\":\"" + mac_to_string(e.mac) + "\",\"port\":\"" + port_name(e.port) + "\",\"age_s\":" + age + "}";
    }
    j += "]}";
    return j;
  }

  std::string status_text() {
    SwitchStats s = sw_->stats();
    const std::string sides = opt_.device.empty() ? opt_.netns[0] + " <-> " + opt_.netns[1] : "VMs on " + opt_.device;
    std::string t = "link " + opt_.name + " (" + sides +
                    (opt_.uplink_netns.empty() ? "" : ", uplink in " + opt_.uplink_netns) + ")\n";
    char line[256];
    for (uint32_t p = 0; p < kPorts; ++p) {
      if (!ports_[p].present) continue;
      const auto& ps = s.ports[p];
      std::snprintf(
          line, sizeof line, "  port %-6s %-4s in %llu frames / %llu bytes, out %llu / %llu, ring-full drops %llu\n",
          port_name(p), ps.live ? "up" : "down", (unsigned long long)ps.frames_in, (unsigned long long)ps.bytes_in,
          (unsigned long long)ps.frames_out, (unsigned long long)ps.bytes_out, (unsigned long long)ps.dropped_full);
      t += line;
    }
    std::snprintf(line, sizeof line,
                  "  crossover %llu, to uplink %llu, from uplink %llu, flooded %llu, dropped %llu, mac moves %llu\n",
                  (unsigned long long)s.crossover, (unsigned long long)s.to_uplink, (unsigned long long)s.from_uplink,
                  (unsigned long long)s.flooded, (unsigned long long)s.dropped, (unsigned long long)s.mac_moves);
    t += line;
    for (const auto& e : sw_->detector().table()) {
      std::snprintf(line, sizeof line, "  mac %s -> %s (seen %.1f s ago)\n", mac_to_string(e.mac).c_str(),
                    port_name(e.port), e.age_s);
      t += line;
    }
    return t;
  }

  void teardown() {
    if (stop_) stop_.signal();
    for (auto& hp : ports_) {
      if (hp.pid > 0) ::kill(hp.pid, SIGTERM);
    }
    if (switch_thread_.joinable()) switch_thread_.join();
    doorbells_ = transport::DoorbellListener();  // removes the sockets
    for (auto& t : uplink_threads_) t.join();
    uplink_threads_.clear();
    for (auto& hp : ports_) {
      if (hp.pid > 0) {
        int status;
        ::waitpid(hp.pid, &status, 0);
        hp.pid = -1;
      }
    }
    // Goodbye to the endpoints (they stop at once rather than when they notice the hang-up),
    // then the listener removes its socket file.
    for (auto& hp : ports_) hp.session.reset();
    listen_.reset();
  }

  LinkOptions opt_;
  // Control sessions being set up (accept_one); declared after opt_, which their threads read.
  static constexpr size_t kMaxDoors = 8;
  transport::Doors<ControlRequest> doors_;
  int cpu_ = kCpuNone;  // where the forwarding threads run (resolved opt_.cpu)
  int ready_fd_ = -1;
  bool ready_ = false;
  bool shutdown_ = false;
  bool endpoint_failed_ = false;
  transport::Kick host_kick_, stop_;
  transport::DoorbellListener doorbells_;  // a VM device's endpoint ports
  HostPort ports_[kPorts];
  base::Mapping device_;  // the VM device, when opt_.device names one
  DeviceGeometry geometry_{};
  std::unique_ptr<Switch> sw_;
  std::thread switch_thread_;
  base::UniqueFd uplink_tap_;
  std::unique_ptr<PortDriver> uplink_;
  std::vector<std::thread> uplink_threads_;
  std::optional<transport::Listener> listen_;
  base::UniqueFd epoll_, signals_;
};

// A control session to the daemon at `socket_path` (`who` names the client in the handshake).
base::Result<transport::Channel> open_control(const std::string& socket_path, const std::string& who,
                                              std::chrono::seconds timeout) {
  const transport::Hello mine{kControlVersion, kControlSchema, who};
  auto channel = transport::connect(socket_path, mine, transport::deadline_after(timeout));
  if (channel) return std::move(channel).value();
  if (channel.code() == transport::Status::kRefused)
    return base::make_error(base::Errc::kInvalidArgument, channel.error().message);
  if (channel.code() == transport::Status::kIo)
    return base::make_error(base::Errc::kIo, channel.error().message + " (is the link up?)");
  return base::make_error(base::Errc::kPeerGone, channel.error().message);
}

// One CLI command, its text answer.
base::Result<std::string> run_command(const std::string& socket_path, uint32_t command) {
  auto channel = open_control(socket_path, "bypass-xover cli", std::chrono::seconds(5));
  if (!channel) return channel.error();
  const auto deadline = transport::deadline_after(std::chrono::seconds(5));
  const CommandRequest request{command};
  if (channel->send(kMsgCommand, bytes_of(request), deadline) != transport::Status::kOk)
    return base::make_error(base::Errc::kPeerGone, "daemon closed the connection: " + channel->error_text());
  transport::Message answer;
  if (const auto got = channel->recv(answer, deadline); got != transport::Status::kOk)
    return base::make_error(base::Errc::kPeerGone,
                            "no answer from the daemon: " + std::string(transport::to_string(got)));
  if (answer.kind != kMsgText) return base::make_error(base::Errc::kIo, "malformed answer from the daemon");
  return std::string(reinterpret_cast<const char*>(answer.payload.data()), answer.payload.size());
}

}  // namespace

std::string socket_for(const std::string& link_name) {
  return base::default_socket_path("xover-" + link_name + ".sock");
}

bool parse_cpu(const std::string& text, int* cpu) {
  if (text == "auto") {
    *cpu = kCpuAuto;
    return true;
  }
  if (text == "none") {
    *cpu = kCpuNone;
    return true;
  }
  if (text.empty() || text.size() > 4 || text.find_first_not_of("0123456789") != std::string::npos) return false;
  *cpu = std::stoi(text);
  return *cpu < CPU_SETSIZE;
}

bool valid_link_name(const std::string& name) {
  if (name.empty() || name.size() > 32) return false;
  for (char c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') return false;
  return true;
}

int run_link_daemon(const LinkOptions& options, int ready_fd) {
  LinkOptions o = options;
  if (o.socket_path.empty()) o.socket_path = socket_for(o.name);
  LinkDaemon d(o);
  return d.run(ready_fd);
}

namespace {

// The endpoint's TAP device, non-blocking, and the MAC address the kernel gave it.
struct EndpointTap {
  base::UniqueFd fd;
  Mac mac{};
};

base::Result<EndpointTap> endpoint_tap(const EndpointOptions& options) {
  TapConfig c;
  c.name = options.ifname;
  c.address = options.address;
  c.mac = options.mac;
  c.mtu = options.mtu;
  c.offload = options.offload;
  auto created = create_tap(c);
  if (!created) return created.error();
  EndpointTap out{std::move(created).value()};
  ::fcntl(out.fd.get(), F_SETFL, ::fcntl(out.fd.get(), F_GETFL) | O_NONBLOCK);
  auto mac = tap_mac(c.name);
  if (!mac) return mac.error();
  out.mac = *mac;
  return out;
}

base::Result<void> endpoint_main(const EndpointOptions& options) {
  using base::Errc;
  auto made = endpoint_tap(options);
  if (!made) return made.error();
  const base::UniqueFd tap = std::move(made->fd);
  const Mac* mac = &made->mac;
  auto opened =
      open_control(options.control, std::string("endpoint ") + port_name(options.side), std::chrono::seconds(5));
  if (!opened) return opened.error();
  transport::Channel session = std::move(opened).value();
  const auto deadline = transport::deadline_after(std::chrono::seconds(5));
  AttachRequest hello;
  hello.side = options.side;
  std::memcpy(hello.mac, mac->data(), 6);
  if (session.send(kMsgAttach, bytes_of(hello), deadline) != transport::Status::kOk)
    return base::make_error(Errc::kPeerGone, "host closed the control session: " + session.error_text());
  transport::Message msg;
  if (const auto got = session.recv(msg, deadline); got != transport::Status::kOk)
    return base::make_error(Errc::kPeerGone, "no attach reply: " + std::string(transport::to_string(got)));
  AttachReply reply;
  if (!record_from(msg, kMsgAttachReply, &reply))
    return base::make_error(Errc::kInvalidArgument, "malformed attach reply");
  if (reply.status != 0) return base::make_error(Errc::kInvalidArgument, "host refused this endpoint (side taken?)");
  uint64_t tag = 0;
  std::vector<int> raw;
  if (const auto got = session.recv_fds(tag, raw, deadline); got != transport::Status::kOk)
    return base::make_error(Errc::kPeerGone, "no attach fds: " + std::string(transport::to_string(got)));
  std::vector<base::UniqueFd> fds;
  for (int fd : raw) fds.emplace_back(fd);
  const size_t pools = static_cast<size_t>(__builtin_popcount(reply.port_mask));
  if (tag != kAttachFdTag || fds.size() != kFdFirstPool + pools || !(reply.port_mask & (1u << options.side)) ||
      reply.port_mask >= (1u << kPorts) || reply.buffers_per_port == 0 || reply.buffers_per_port > kRingSlots)
    return base::make_error(Errc::kInvalidArgument, "malformed attach reply");
  auto rings = base::Mapping::map_shared(fds[kFdRings].get(), 0, ring_region_bytes(), /*writable=*/true);
  if (!rings) return rings.error();
  base::Mapping pool_maps[kPorts];
  PortMemory mem;
  mem.rings = rings->data();
  mem.buffers_per_port = reply.buffers_per_port;
  size_t next = kFdFirstPool;
  for (uint32_t p = 0; p < kPorts; ++p) {
    if (!(reply.port_mask & (1u << p))) continue;
    auto pool = base::Mapping::map_shared(fds[next++].get(), 0, pool_bytes(reply.buffers_per_port), p == options.side);
    if (!pool) return pool.error();
    pool_maps[p] = std::move(pool).value();
    mem.pools[p] = pool_maps[p].data();
  }
  mem.own_pool = pool_maps[options.side].data();
  auto stop = transport::Kick::create();
  if (!stop) return stop.error();
  pin_to_cpu(options.cpu);  // the port thread inherits it
  PortDriver driver(options.side, tap.get(), mem, fds[kFdHostKick].get(), fds[kFdTxDoneKick].get(),
                    fds[kFdRxKick].get(), stop->fd());
  std::thread port([&] { driver.run(); });
  // The link lives as long as the host: nothing more comes on the session, so recv() returns
  // when the host says goodbye (kClosed) or dies (kPeerGone: transport's peer-death check).
  transport::Status ended;
  do {
    ended = session.recv(msg);
  } while (ended == transport::Status::kOk);
  stop->signal();
  port.join();
  return {};
}

// An endpoint inside a VM: the link's memory is the ivshmem device, attach and peer death go
// through its header (device.h), and the rings are polled.
base::Result<void> endpoint_device_main(const EndpointOptions& options) {
  using base::Errc;
  auto mapped = transport::map_vm_device(options.device, kDeviceHeaderBytes);
  if (!mapped) return base::make_error(Errc::kIo, mapped.error().message);
  base::Mapping device = std::move(mapped).value();
  auto* h = reinterpret_cast<DeviceHeader*>(device.data());
  // Acquire: pairs with the host's release store of the magic after the rest of the header.
  if (std::atomic_ref(h->magic).load(std::memory_order_acquire) != kDeviceMagic)
    return base::make_error(Errc::kInvalidArgument, options.device + " is not a crossover device (no link daemon?)");
  // Everything below is read once and checked: the host is trusted no more than it must be.
  const uint32_t version = h->version;
  const uint64_t schema = h->control_schema;
  const uint32_t buffers = h->buffers_per_port;
  const uint32_t mask = h->port_mask;
  if (version != kDeviceVersion || schema != kControlSchema)
    return base::make_error(Errc::kInvalidArgument, "the link daemon speaks device version " + std::to_string(version) +
                                                        ", this endpoint " + std::to_string(kDeviceVersion) +
                                                        " (or another schema)");
  if (buffers == 0 || buffers > kRingSlots / 2 || !(mask & (1u << options.side)) || mask >= (1u << kPorts))
    return base::make_error(Errc::kInvalidArgument, "malformed crossover device header");
  PortMemory mem;
  mem.buffers_per_port = buffers;
  for (uint32_t p = 0; p < kPorts; ++p) {
    if (!(mask & (1u << p))) continue;
    const uint64_t rings = h->rings_offset[p], pool = h->pool_offset[p];
    if (rings % 64 != 0 || rings > device.size() || device.size() - rings < ring_region_bytes() ||
        pool > device.size() || device.size() - pool < pool_bytes(buffers) || rings < kDeviceHeaderBytes ||
        pool < kDeviceHeaderBytes)
      return base::make_error(Errc::kInvalidArgument, "crossover device: port memory outside the device");
    mem.pools[p] = device.data() + pool;
    if (p == options.side) {
      mem.rings = device.data() + rings;
      mem.own_pool = device.data() + pool;
    }
  }
  DevicePort& port = h->ports[options.side];
  const std::string bell_name = transport::doorbell_name(h->doorbells);
  auto made = endpoint_tap(options);
  if (!made) return made.error();
  const base::UniqueFd tap = std::move(made->fd);
  const Mac* mac = &made->mac;

  uint32_t expected = kSlotFree;
  if (!port.state.compare_exchange_strong(expected, kSlotClaimed, std::memory_order_acq_rel))
    return base::make_error(Errc::kInvalidArgument,
                            std::string("side ") + port_name(options.side) + " of the device is taken");
  const uint32_t generation = port.generation.fetch_add(1, std::memory_order_relaxed) + 1;
  std::memcpy(port.mac, mac->data(), 6);
  // This side's doorbell: the virtio-serial port "<name>.<side>" (or, for a device file on this
  // kernel, the daemon's socket); open_doorbell() checks the name the host wrote.
  base::UniqueFd bell = transport::open_doorbell(options.device, bell_name, options.side);
  port.guest_doorbell = bell ? 1 : 0;
  port.state.store(kSlotRequested, std::memory_order_release);  // pairs with the host's acquire
  // The host looks every kDeviceBeat; give it the time a busy or emulated host needs.
  const auto give_up = std::chrono::steady_clock::now() + kDeviceHostTimeout;
  uint32_t state = kSlotRequested;
  while ((state = port.state.load(std::memory_order_acquire)) == kSlotRequested) {
    if (std::chrono::steady_clock::now() > give_up) {
      port.state.store(kSlotFree, std::memory_order_release);
      return base::make_error(Errc::kTimeout, "no link daemon answered on " + options.device);
    }
    std::this_thread::sleep_for(kDeviceBeat);
  }
  if (state != kSlotActive) {
    port.state.store(kSlotFree, std::memory_order_release);
    return base::make_error(Errc::kInvalidArgument, "the link daemon refused this endpoint");
  }
  auto stop = transport::Kick::create();
  if (!stop) return stop.error();
  pin_to_cpu(options.cpu);
  if (port.host_doorbell != 1) bell.reset();
  PortDriver driver(options.side, tap.get(), mem, -1, -1, -1, stop->fd(), bell ? bell.get() : -1);
  std::thread forward([&] { driver.run(); });
  // Our heartbeat, and the host's: a host whose beat stood still for kDeviceHostTimeout, or
  // that gave the port away, is gone.
  uint64_t host_beat = h->host_heartbeat.load(std::memory_order_relaxed);
  auto host_moved = std::chrono::steady_clock::now();
  std::string why;
  for (;;) {
    port.guest_heartbeat.fetch_add(1, std::memory_order_relaxed);
    std::this_thread::sleep_for(kDeviceBeat);
    const auto now = std::chrono::steady_clock::now();
    if (const uint64_t beat = h->host_heartbeat.load(std::memory_order_relaxed); beat != host_beat) {
      host_beat = beat;
      host_moved = now;
    } else if (now - host_moved > kDeviceHostTimeout) {
      why = "the link daemon is gone (its heartbeat stood still)";
      break;
    }
    if (port.state.load(std::memory_order_acquire) != kSlotActive ||
        port.generation.load(std::memory_order_relaxed) != generation) {
      why = "the link daemon took this port down";
      break;
    }
  }
  stop->signal();
  forward.join();
  return base::make_error(Errc::kPeerGone, why);
}

}  // namespace

int run_endpoint(const EndpointOptions& options) {
  if (!options.device.empty()) {
    auto done = endpoint_device_main(options);
    std::fprintf(stderr, "bypass-xover endpoint %s: %s\n", port_name(options.side), done.error().message.c_str());
    return 1;
  }
  if (auto done = endpoint_main(options); !done) {
    std::fprintf(stderr, "bypass-xover endpoint %s: %s\n", port_name(options.side), done.error().message.c_str());
    return 1;
  }
  return 0;
}

base::Result<std::string> request_status(const std::string& socket_path, bool json) {
  return run_command(socket_path, json ? kCmdStatusJson : kCmdStatus);
}

base::Result<void> request_shutdown(const std::string& socket_path) {
  auto ack = run_command(socket_path, kCmdShutdown);
  if (!ack) return ack.error();
  // The daemon removes its socket last; wait for that so the caller can reuse the name.
  for (int i = 0; i < 500 && ::access(socket_path.c_str(), F_OK) == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return {};
}

}  // namespace bypass::crossover
