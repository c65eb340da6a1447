#include "bypass/crossover/switch.h"

#include <sys/epoll.h>
#include <unistd.h>

#include <immintrin.h>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <tuple>
#include <utility>

#include "bypass/base/unique_fd.h"
#include "bypass/crossover/device.h"
#include "bypass/transport/doorbell.h"

namespace bypass::crossover {

namespace {
void kick(int fd) {
  if (fd < 0) return;  // a port in a VM device polls its rings
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(fd, &one, sizeof one);
}
constexpr int kBudget = 64;  // descriptors per ring per pass, so one busy port cannot starve others
// run()'s epoll keys: the host kick, the stop fd, and a VM port's doorbell (plus its port).
constexpr uint64_t kKeyHostKick = 0, kKeyStop = 1, kKeyDoorbell = 2;
}  // namespace

Switch::Switch(uint32_t buffers_per_port, int host_kick_fd, int stop_fd, bool spin)
    : bpp_(buffers_per_port),
      host_kick_(host_kick_fd),
      stop_(stop_fd),
      spin_(spin),
      refs_(size_t{kPorts} * buffers_per_port, 0),
      at_port_(size_t{kPorts} * buffers_per_port, 1) {}

void Switch::attach(uint32_t port, std::byte* rings, const std::byte* pool, int tx_done_kick_fd, int rx_kick_fd,
                    const Mac& mac, base::UniqueFd doorbell) {
  std::lock_guard lock(ops_mu_);
  auto bell = doorbell ? std::make_shared<base::UniqueFd>(std::move(doorbell)) : nullptr;
  ops_.push_back([=, this] {
    PortState& s = ports_[port];
    if (s.doorbell) ::epoll_ctl(epoll_, EPOLL_CTL_DEL, s.doorbell->get(), nullptr);  // an earlier endpoint's
    s = PortState{};
    s.live = true;
    s.tx = open_ring(rings, kTx);
    s.tx_done = open_ring(rings, kTxDone);
    s.rx = open_ring(rings, kRx);
    s.rx_done = open_ring(rings, kRxDone);
    s.pool = pool;
    s.tx_done_kick = tx_done_kick_fd;
    s.rx_kick = rx_kick_fd;
    if (bell) {
      epoll_event ev{};
      ev.events = EPOLLIN;
      ev.data.u64 = kKeyDoorbell + port;
      if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, bell->get(), &ev) == 0) s.doorbell = bell;
    }
    for (uint32_t i = 0; i < bpp_; ++i) {
      refs_[port * bpp_ + i] = 0;
      at_port_[port * bpp_ + i] = 1;
    }
    out_[port] = 0;
    bool known = false;
    for (auto b : mac) known |= b != 0;
    if (known) detector_.learn(mac, port);
    live_[port].store(true, std::memory_order_relaxed);
  });
  ops_pending_.store(true, std::memory_order_release);  // pairs with run()'s acquire exchange
  kick(host_kick_);
}

void Switch::detach(uint32_t port) {
  std::lock_guard lock(ops_mu_);
  ops_.push_back([=, this] { do_detach(port); });
  ops_pending_.store(true, std::memory_order_release);  // pairs with run()'s acquire exchange
  kick(host_kick_);
}

void Switch::apply_ops() {
  if (!ops_pending_.exchange(false, std::memory_order_acquire)) return;  // pairs with attach()/detach()
  std::vector<std::function<void()>> ops;
  {
    std::lock_guard lock(ops_mu_);
    ops.swap(ops_);
  }
  for (auto& op : ops) op();
}

void Switch::do_detach(uint32_t p) {
  PortState& s = ports_[p];
  if (!s.live) return;
  s.live = false;
  live_[p].store(false, std::memory_order_relaxed);
  // Buffers of other ports it was holding go back to their owners.
  while (!s.rx_inflight.empty()) {
    uint32_t buf = s.rx_inflight.front();
    s.rx_inflight.pop_front();
    unref(buf);
  }
  // Its own buffers out with receivers: when they come back, they are dropped (owner dead).
  detector_.forget_port(p);
  if (s.doorbell) {
    ::epoll_ctl(epoll_, EPOLL_CTL_DEL, s.doorbell->get(), nullptr);
    s.doorbell.reset();
  }
}

uint32_t Switch::live_mask() const {
  uint32_t m = 0;
  for (uint32_t p = 0; p < kPorts; ++p)
    if (ports_[p].live) m |= 1u << p;
  return m;
}

// A buffer a receiver is done with: back to its owner once nobody holds it.
void Switch::unref(uint32_t buf) {
  if (refs_[buf] == 0 || --refs_[buf] != 0) return;
  uint32_t owner = buf / bpp_;
  PortState& o = ports_[owner];
  if (!o.live) return;
  Desc* slot = o.tx_done.producer_slot();
  if (slot == nullptr) return;  // cannot happen: tx_done has a slot per buffer
  *slot = Desc{buf, 0};
  at_port_[buf] = 1;
  --out_[owner];
  if (o.tx_done.publish()) o.kick_tx_done = true;
}

bool Switch::deliver(uint32_t to, uint32_t buf, uint32_t len) {
  PortState& t = ports_[to];
  Desc* slot = t.rx.producer_slot();
  if (slot == nullptr) {
    port_counters_[to].dropped_full.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  *slot = Desc{buf, len};
  t.rx_inflight.push_back(buf);
  ++refs_[buf];
  if (t.rx.publish()) t.kick_rx = true;
  port_counters_[to].frames_out.fetch_add(1, std::memory_order_relaxed);
  port_counters_[to].bytes_out.fetch_add(len - kVnetHdrLen, std::memory_order_relaxed);
  return true;
}

void Switch::route(uint32_t from, uint32_t buf, uint32_t len) {
  // Read the addresses once: the port may scribble on its own buffer meanwhile.
  uint8_t eth[12];
  std::memcpy(eth, ports_[from].pool + size_t{buf % bpp_} * kBufferStride + kVnetHdrLen, sizeof eth);
  Mac dst, src;
  std::memcpy(dst.data(), eth, 6);
  std::memcpy(src.data(), eth + 6, 6);
  Decision d = detector_.decide(from, dst, src, live_mask());
  at_port_[buf] = 0;
  ++out_[from];
  refs_[buf] = 1;  // held by us while fanning out, so an early rx_done cannot free it
  if (d.kind == Decision::kForward) {
    if (deliver(d.port, buf, len)) {
      if (from == kPortUplink)
        from_uplink_.fetch_add(1, std::memory_order_relaxed);
      else if (d.port == kPortUplink)
        to_uplink_.fetch_add(1, std::memory_order_relaxed);
      else
        crossover_.fetch_add(1, std::memory_order_relaxed);
    }
  } else if (d.kind == Decision::kFlood) {
    flooded_.fetch_add(1, std::memory_order_relaxed);
    for (uint32_t p = 0; p < kPorts; ++p)
      if (d.mask & (1u << p)) deliver(p, buf, len);
  } else {
    dropped_.fetch_add(1, std::memory_order_relaxed);
  }
  unref(buf);
}

bool Switch::drain_tx(uint32_t p) {
  PortState& s = ports_[p];
  bool did = false;
  Desc d;
  bool unused = false;
  for (int i = 0; i < kBudget && s.live && s.tx.pop(&d, &unused); ++i) {
    did = true;
    // A port may only post its own buffers, each once, with a sane length.
    if (d.buf / bpp_ != p || d.buf >= kPorts * bpp_ || !at_port_[d.buf] || d.len < kVnetHdrLen + 14 ||
        d.len > kBufferStride) {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    port_counters_[p].frames_in.fetch_add(1, std::memory_order_relaxed);
    port_counters_[p].bytes_in.fetch_add(d.len - kVnetHdrLen, std::memory_order_relaxed);
    route(p, d.buf, d.len);
  }
  if (s.tx.corrupt()) do_detach(p);
  return did;
}

bool Switch::drain_rx_done(uint32_t p) {
  PortState& s = ports_[p];
  bool did = false;
  Desc d;
  bool unused = false;
  for (int i = 0; i < kBudget && s.live && s.rx_done.pop(&d, &unused); ++i) {
    did = true;
    // Buffers come back in the order they were given; anything else is a broken port.
    if (s.rx_inflight.empty() || s.rx_inflight.front() != d.buf) {
      do_detach(p);
      break;
    }
    s.rx_inflight.pop_front();
    unref(d.buf);
  }
  if (s.rx_done.corrupt()) do_detach(p);
  return did;
}

void Switch::run() {
  using Clock = std::chrono::steady_clock;
  // The host kick is edge-triggered: every write to an eventfd wakes its waiters, so it needs
  // no read() per wake-up to re-arm (its counter just grows).
  base::UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
  if (!ep) return;
  epoll_ = ep.get();
  for (auto [fd, flags, key] : {std::tuple{host_kick_, uint32_t{EPOLLIN | EPOLLET}, kKeyHostKick},
                                std::tuple{stop_, uint32_t{EPOLLIN}, kKeyStop}}) {
    epoll_event ev{};
    ev.events = flags;
    ev.data.u64 = key;
    if (::epoll_ctl(ep.get(), EPOLL_CTL_ADD, fd, &ev) != 0) return;
  }
  const timespec poll_interval{0, static_cast<long>(std::chrono::nanoseconds(kDevicePoll).count())};
  for (;;) {
    apply_ops();
    bool did = false;
    for (uint32_t p = 0; p < kPorts; ++p) {
      if (!ports_[p].live) continue;
      did |= drain_rx_done(p);
      did |= drain_tx(p);
    }
    for (auto& s : ports_) {
      if (s.kick_rx) kick(s.rx_kick);
      if (s.kick_tx_done) kick(s.tx_done_kick);
      if ((s.kick_rx || s.kick_tx_done) && s.doorbell) transport::ring_doorbell(s.doorbell->get());
      s.kick_rx = s.kick_tx_done = false;
    }
    if (did) continue;
    // Spin briefly: under load the next frame is microseconds away.
    auto until = Clock::now() + std::chrono::microseconds(5);
    bool work = false;
    while (spin_ && !work && Clock::now() < until) {
      _mm_pause();
      for (auto& s : ports_)
        if (s.live && (s.tx.consumer_slot() != nullptr || s.rx_done.consumer_slot() != nullptr)) work = true;
    }
    if (work) continue;
    // Returned buffers (rx_done) only need us awake when an owner runs short of buffers;
    // otherwise they wait for the next pass a posted frame wakes us for. This halves the
    // switch's wake-ups: a receiver's rx_done no longer kicks it once per frame.
    bool short_of_buffers = false;
    for (uint32_t p = 0; p < kPorts; ++p) short_of_buffers |= ports_[p].live && out_[p] >= bpp_ / 2;
    for (auto& s : ports_) {
      if (!s.live) continue;
      work |= s.tx.consumer_prepare_wait();
      if (short_of_buffers && !s.rx_inflight.empty()) work |= s.rx_done.consumer_prepare_wait();
    }
    if (work || ops_pending_.load(std::memory_order_acquire)) continue;
    // A port in a VM device without a doorbell cannot kick us: while one is live, look at the
    // rings every kDevicePoll (as transport's VmLink polls its wait words).
    bool polled = false;
    for (const auto& s : ports_) polled |= s.live && s.rx_kick < 0 && !s.doorbell;
    epoll_event events[2 + kPorts];
    int n = ::epoll_pwait2(ep.get(), events, 2 + kPorts, polled ? &poll_interval : nullptr, nullptr);
    if (n < 0 && errno != EINTR) return;
    for (int i = 0; i < n; ++i) {
      const uint64_t key = events[i].data.u64;
      if (key == kKeyStop) return;
      if (key < kKeyDoorbell || key >= kKeyDoorbell + kPorts) continue;
      // A VM endpoint rang; or its doorbell ended, which lives as long as its QEMU: the VM is
      // gone, and its side of the link with it.
      const auto p = static_cast<uint32_t>(key - kKeyDoorbell);
      PortState& s = ports_[p];
      if (s.doorbell && (!transport::drain_doorbell(s.doorbell->get()) || (events[i].events & (EPOLLHUP | EPOLLERR)))) {
        do_detach(p);
        doorbell_ended_[p].store(true, std::memory_order_release);
      }
    }
  }
}

SwitchStats Switch::stats() const {
  SwitchStats s;
  for (uint32_t p = 0; p < kPorts; ++p) {
    s.ports[p].live = live_[p].load(std::memory_order_relaxed);
    s.ports[p].frames_in = port_counters_[p].frames_in.load(std::memory_order_relaxed);
    s.ports[p].bytes_in = port_counters_[p].bytes_in.load(std::memory_order_relaxed);
    s.ports[p].frames_out = port_counters_[p].frames_out.load(std::memory_order_relaxed);
    s.ports[p].bytes_out = port_counters_[p].bytes_out.load(std::memory_order_relaxed);
    s.ports[p].dropped_full = port_counters_[p].dropped_full.load(std::memory_order_relaxed);
  }
  s.crossover = crossover_.load(std::memory_order_relaxed);
  s.to_uplink = to_uplink_.load(std::memory_order_relaxed);
  s.from_uplink = from_uplink_.load(std::memory_order_relaxed);
  s.flooded = flooded_.load(std::memory_order_relaxed);
  s.dropped = dropped_.load(std::memory_order_relaxed);
  s.mac_moves = detector_.moves();
  return s;
}

}  // namespace bypass::crossover
