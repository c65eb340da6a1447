#include "bypass/crossover/port.hpp"

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

namespace bypass::crossover {

namespace {
void kick(int fd) {
  std::uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(fd, &one, sizeof one);
}
void drain(int fd) {
  std::uint64_t v;
  [[maybe_unused]] ssize_t n = ::read(fd, &v, sizeof v);
}
}  // namespace

PortDriver::PortDriver(std::uint32_t port, int tap_fd, PortMemory memory, int host_kick_fd, int tx_done_kick_fd,
                       int rx_kick_fd, int stop_fd)
    : port_(port),
      tap_(tap_fd),
      mem_(memory),
      host_kick_(host_kick_fd),
      tx_done_kick_(tx_done_kick_fd),
      rx_kick_(rx_kick_fd),
      stop_(stop_fd) {}

bool PortDriver::wait(int fd, short events) {
  pollfd fds[2] = {{fd, events, 0}, {stop_, POLLIN, 0}};
  for (;;) {
    int r = ::poll(fds, 2, -1);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return false;
    if (fds[1].revents) return false;
    if (fd != tap_ && (fds[0].revents & POLLIN)) drain(fd);
    return true;
  }
}

void PortDriver::run_tx() {
  SlotRing<Desc> tx = open_ring(mem_.rings, kTx);
  SlotRing<Desc> tx_done = open_ring(mem_.rings, kTxDone);
  const std::uint32_t first = port_ * mem_.buffers_per_port;
  std::vector<std::uint32_t> free_bufs;
  for (std::uint32_t i = mem_.buffers_per_port; i-- > 0;) free_bufs.push_back(first + i);
  for (;;) {
    Desc d;
    bool unused = false;
    while (tx_done.pop(&d, &unused)) {
      if (d.buf >= first && d.buf < first + mem_.buffers_per_port) free_bufs.push_back(d.buf);
    }
    if (free_bufs.empty()) {
      // Every buffer is out with a receiver: wait for one to come back.
      if (tx_done.consumer_prepare_wait()) continue;
      if (!wait(tx_done_kick_, POLLIN)) return;
      continue;
    }
    std::uint32_t buf = free_bufs.back();
    std::byte* at = mem_.own_pool + std::size_t{buf - first} * kBufferStride;
    ssize_t n = ::read(tap_, at, kBufferStride);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) {
        if (!wait(tap_, POLLIN)) return;
        continue;
      }
      return;  // the device is gone
    }
    if (static_cast<std::size_t>(n) < kVnetHdrLen + 14) continue;
    Desc* slot = tx.producer_slot();
    if (slot == nullptr) continue;  // cannot happen: no more buffers than slots; drop the frame
    *slot = Desc{buf, static_cast<std::uint32_t>(n)};
    free_bufs.pop_back();
    counters_.tx_frames.fetch_add(1, std::memory_order_relaxed);
    counters_.tx_bytes.fetch_add(static_cast<std::uint64_t>(n) - kVnetHdrLen, std::memory_order_relaxed);
    if (tx.publish()) kick(host_kick_);
  }
}

void PortDriver::run_rx() {
  SlotRing<Desc> rx = open_ring(mem_.rings, kRx);
  SlotRing<Desc> rx_done = open_ring(mem_.rings, kRxDone);
  const std::uint32_t total = kPorts * mem_.buffers_per_port;
  for (;;) {
    const Desc* slot = rx.consumer_slot();
    if (slot == nullptr) {
      if (rx.corrupt()) return;
      if (rx.consumer_prepare_wait()) continue;
      if (!wait(rx_kick_, POLLIN)) return;
      continue;
    }
    Desc d = *slot;
    std::uint32_t owner = d.buf / mem_.buffers_per_port;
    if (d.buf < total && mem_.pools[owner] != nullptr && d.len >= kVnetHdrLen + 14 && d.len <= kBufferStride) {
      const std::byte* at = mem_.pools[owner] + std::size_t{d.buf % mem_.buffers_per_port} * kBufferStride;
      ssize_t n = ::write(tap_, at, d.len);
      if (n == static_cast<ssize_t>(d.len)) {
        counters_.rx_frames.fetch_add(1, std::memory_order_relaxed);
        counters_.rx_bytes.fetch_add(d.len - kVnetHdrLen, std::memory_order_relaxed);
      } else {
        counters_.rx_errors.fetch_add(1, std::memory_order_relaxed);
      }
    } else {
      counters_.rx_errors.fetch_add(1, std::memory_order_relaxed);
    }
    // Hand the buffer back before freeing the rx slot: the host never sees it in neither ring.
    Desc* done = rx_done.producer_slot();
    if (done != nullptr) {
      *done = Desc{d.buf, 0};
      if (rx_done.publish()) kick(host_kick_);
    }
    rx.release();
  }
}

}  // namespace bypass::crossover
