#include "bypass/crossover/port.h"

#include "bypass/crossover/device.h"
#include "bypass/transport/doorbell.h"

#include <sys/epoll.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <utility>
#include <vector>

namespace bypass::crossover {

namespace {
void kick(int fd) {
  if (fd < 0) return;  // a port in a VM device: the switch polls
  uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(fd, &one, sizeof one);
}
constexpr int kBatch = 32;  // frames per direction per pass, so neither direction starves the other
}  // namespace

bool vnet_header_acceptable(const VnetHeader& h, size_t frame_bytes) {
  // linux/virtio_net.h: VIRTIO_NET_HDR_F_NEEDS_CSUM, _F_DATA_VALID; VIRTIO_NET_HDR_GSO_NONE,
  // _TCPV4, _TCPV6, _ECN.
  constexpr uint8_t kNeedsCsum = 1, kDataValid = 2;
  constexpr uint8_t kGsoNone = 0, kGsoTcp4 = 1, kGsoTcp6 = 4, kGsoEcn = 0x80;
  if (h.flags & ~(kNeedsCsum | kDataValid)) return false;
  const uint8_t gso = h.gso_type & ~kGsoEcn;
  if (gso != kGsoNone && gso != kGsoTcp4 && gso != kGsoTcp6) return false;
  if (gso == kGsoNone && h.gso_type != kGsoNone) return false;  // ECN without segmentation
  if (gso != kGsoNone && h.gso_size == 0) return false;
  if (h.hdr_len > frame_bytes) return false;
  if ((h.flags & kNeedsCsum) && size_t{h.csum_start} + h.csum_offset + sizeof(uint16_t) > frame_bytes) return false;
  return true;
}

PortDriver::PortDriver(uint32_t port, int tap_fd, PortMemory memory, int host_kick_fd, int tx_done_kick_fd,
                       int rx_kick_fd, int stop_fd, int doorbell_fd)
    : port_(port),
      tap_(tap_fd),
      mem_(memory),
      host_kick_(host_kick_fd),
      tx_done_kick_(tx_done_kick_fd),
      rx_kick_(rx_kick_fd),
      stop_(stop_fd),
      doorbell_(doorbell_fd) {}

void PortDriver::run() {
  SlotRing<Desc> tx = open_ring(mem_.rings, kTx);
  SlotRing<Desc> tx_done = open_ring(mem_.rings, kTxDone);
  SlotRing<Desc> rx = open_ring(mem_.rings, kRx);
  SlotRing<Desc> rx_done = open_ring(mem_.rings, kRxDone);
  const uint32_t first = port_ * mem_.buffers_per_port;
  const uint32_t total = kPorts * mem_.buffers_per_port;
  std::vector<uint32_t> free_bufs;
  for (uint32_t i = mem_.buffers_per_port; i-- > 0;) free_bufs.push_back(first + i);
  // One epoll set for the thread's life: registering four fds with poll() on every sleep
  // costs more than the sleep's bookkeeping itself at tens of thousands of sleeps a second.
  enum : uint32_t { kKeyTap, kKeyRxKick, kKeyTxDoneKick, kKeyStop, kKeyDoorbell };
  base::UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
  if (!ep) return;
  // Without kicks or a doorbell (a port in a VM device: no fd crosses) the rings are polled
  // every kDevicePoll.
  const bool polled = rx_kick_ < 0 && doorbell_ < 0;
  const timespec poll_interval{0, static_cast<long>(std::chrono::nanoseconds(kDevicePoll).count())};
  for (auto [fd, key] : {std::pair{tap_, kKeyTap},
                         {rx_kick_, kKeyRxKick},
                         {tx_done_kick_, kKeyTxDoneKick},
                         {stop_, kKeyStop},
                         {doorbell_, kKeyDoorbell}}) {
    if (fd < 0) continue;
    epoll_event ev{};
    // The kick eventfds are edge-triggered: every write to an eventfd wakes its waiters, so
    // they need no read() to re-arm (their counters just grow; 2^64 kicks are far away).
    ev.events = EPOLLIN | (key == kKeyRxKick || key == kKeyTxDoneKick ? uint32_t{EPOLLET} : 0u);
    ev.data.u32 = key;
    if (::epoll_ctl(ep.get(), EPOLL_CTL_ADD, fd, &ev) != 0) return;
  }
  bool tap_armed = true;  // the TAP is in the set with EPOLLIN (we have buffers to read into)
  for (;;) {
    Desc d;
    bool unused = false;
    while (tx_done.pop(&d, &unused)) {
      if (d.buf >= first && d.buf < first + mem_.buffers_per_port) free_bufs.push_back(d.buf);
    }
    bool did = false;
    bool kick_host = false;
    bool rx_empty = false, tap_empty = false;  // a pass ended because there was nothing left

    // rx first: writing a frame into the TAP runs the stack's receive path in this thread,
    // which usually queues an answer (a TCP ACK, or the next segments once an ACK opened the
    // window) on the same TAP; the tx pass below picks it up without a wake-up.
    for (int i = 0; i < kBatch; ++i) {
      const Desc* slot = rx.consumer_slot();
      if (slot == nullptr) {
        if (rx.corrupt()) return;
        rx_empty = true;
        break;
      }
      did = true;
      Desc r = *slot;
      uint32_t owner = r.buf / mem_.buffers_per_port;
      if (r.buf < total && mem_.pools[owner] != nullptr && r.len >= kVnetHdrLen + 14 && r.len <= kBufferStride) {
        const std::byte* at = mem_.pools[owner] + size_t{r.buf % mem_.buffers_per_port} * kBufferStride;
        // The header goes to the TAP from our own checked copy: the owner can still write its
        // buffer, and a check of the shared bytes would not hold until the kernel reads them.
        VnetHeader header;
        std::memcpy(&header, at, sizeof header);
        iovec parts[2] = {{&header, sizeof header}, {const_cast<std::byte*>(at + kVnetHdrLen), r.len - kVnetHdrLen}};
        ssize_t n = vnet_header_acceptable(header, r.len - kVnetHdrLen) ? ::writev(tap_, parts, 2) : -1;
        if (n == static_cast<ssize_t>(r.len)) {
          counters_.rx_frames.fetch_add(1, std::memory_order_relaxed);
          counters_.rx_bytes.fetch_add(r.len - kVnetHdrLen, std::memory_order_relaxed);
        } else {
          counters_.rx_errors.fetch_add(1, std::memory_order_relaxed);
        }
      } else {
        counters_.rx_errors.fetch_add(1, std::memory_order_relaxed);
      }
      // Hand the buffer back before freeing the rx slot: the host always sees it in one of
      // the two rings.
      Desc* done = rx_done.producer_slot();
      if (done != nullptr) {
        *done = Desc{r.buf, 0};
        kick_host |= rx_done.publish();
      }
      rx.release();
    }

    // tx: frames the stack queued on the TAP, read straight into our own buffers.
    for (int i = 0; i < kBatch && !free_bufs.empty(); ++i) {
      uint32_t buf = free_bufs.back();
      std::byte* at = mem_.own_pool + size_t{buf - first} * kBufferStride;
      ssize_t n = ::read(tap_, at, kBufferStride);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) {
          tap_empty = true;
          break;
        }
        return;  // the device is gone
      }
      did = true;
      if (static_cast<size_t>(n) < kVnetHdrLen + 14) continue;
      Desc* slot = tx.producer_slot();
      if (slot == nullptr) continue;  // cannot happen: no more buffers than slots; drop the frame
      *slot = Desc{buf, static_cast<uint32_t>(n)};
      free_bufs.pop_back();
      counters_.tx_frames.fetch_add(1, std::memory_order_relaxed);
      counters_.tx_bytes.fetch_add(static_cast<uint64_t>(n) - kVnetHdrLen, std::memory_order_relaxed);
      // Publish each frame at once so the switch can forward it while we read the next; the
      // kick (a system call) happens only while the switch sleeps, once per batch.
      kick_host |= tx.publish();
    }
    if (kick_host) {
      kick(host_kick_);
      if (doorbell_ >= 0) transport::ring_doorbell(doorbell_);
    }
    // Another pass only when a batch limit cut this one short; otherwise straight to the
    // sleep announcement below, whose re-check covers the rx ring, and epoll the TAP.
    if (did && !(rx_empty && (tap_empty || free_bufs.empty()))) continue;

    // Nothing to do: announce the sleep on every ring we wait for, re-check, then block on
    // the TAP (when we have a buffer to read into), the rx kick, or the tx_done kick (when we
    // have none).
    const bool want_tap = !free_bufs.empty();
    bool work = rx.consumer_prepare_wait();
    if (!want_tap) work |= tx_done.consumer_prepare_wait();
    if (work) continue;
    if (want_tap != tap_armed) {
      epoll_event ev{};
      ev.events = want_tap ? uint32_t{EPOLLIN} : 0u;
      ev.data.u32 = kKeyTap;
      if (::epoll_ctl(ep.get(), EPOLL_CTL_MOD, tap_, &ev) != 0) return;
      tap_armed = want_tap;
    }
    epoll_event events[5];
    int n = ::epoll_pwait2(ep.get(), events, 5, polled ? &poll_interval : nullptr, nullptr);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return;
    for (int i = 0; i < n; ++i) {
      if (events[i].data.u32 == kKeyStop) return;
      // The doorbell is level-triggered: read what the switch rang. Its end: the host is gone.
      if (events[i].data.u32 == kKeyDoorbell && !transport::drain_doorbell(doorbell_)) return;
    }
  }
}

}  // namespace bypass::crossover
