// The driver of one port: moves frames between a TAP device and the port's descriptor rings.
// An endpoint process runs one for its TAP inside its domain's network namespace; the host
// runs one for the uplink TAP. One thread does both directions (TAP -> pool -> tx ring, and
// rx ring -> TAP -> rx_done): a frame written into the TAP usually makes the stack queue an
// answer on it at once (a TCP ACK; new segments after an ACK), which the same pass reads
// without waking another thread.
#pragma once

#include <atomic>
#include <cstdint>

#include "bypass/base/unique_fd.h"
#include "bypass/crossover/layout.h"

namespace bypass::crossover {

struct PortMemory {
  std::byte* rings = nullptr;           // this port's ring region
  std::byte* own_pool = nullptr;        // this port's buffers (read/write)
  const std::byte* pools[kPorts] = {};  // every present port's buffers (others read-only)
  uint32_t buffers_per_port = kDefaultBuffers;
};

// struct virtio_net_hdr (linux/virtio_net.h does not compile as C++) as the TAPs exchange it
// with IFF_VNET_HDR, in the host's byte order.
struct VnetHeader {
  uint8_t flags = 0;
  uint8_t gso_type = 0;
  uint16_t hdr_len = 0, gso_size = 0, csum_start = 0, csum_offset = 0;
};
static_assert(sizeof(VnetHeader) == kVnetHdrLen);

// Whether a peer's header may go to our TAP in front of a frame of `frame_bytes` (the bytes
// after the header): only what our own TAPs produce (checksum hints, TCP segmentation over IPv4
// and IPv6 with a segment size, ECN), with every length and offset inside the frame. The kernel checks again; this
// keeps a hostile peer's fields away from its GSO and checksum code altogether.
bool vnet_header_acceptable(const VnetHeader& h, size_t frame_bytes);

struct PortCounters {
  std::atomic<uint64_t> tx_frames{0}, tx_bytes{0}, rx_frames{0}, rx_bytes{0}, rx_errors{0};
};

class PortDriver {
 public:
  // Kicks: `host` wakes the switch; `tx_done` and `rx` are this port's, kicked by the switch.
  // `stop_fd` (an eventfd) ends run() when readable. A port in a VM device has no kicks (-1),
  // and may have a doorbell (transport/doorbell.h) instead, both ways: rung for the switch,
  // readable when the switch rang; its end (the host is gone) ends run().
  PortDriver(uint32_t port, int tap_fd, PortMemory memory, int host_kick_fd, int tx_done_kick_fd, int rx_kick_fd,
             int stop_fd, int doorbell_fd = -1);
  void run();  // until stop_fd is readable, the TAP fails, or the rx ring turns out corrupt
  const PortCounters& counters() const { return counters_; }

 private:
  uint32_t port_;
  int tap_;
  PortMemory mem_;
  int host_kick_, tx_done_kick_, rx_kick_, stop_, doorbell_;
  PortCounters counters_;
};

}  // namespace bypass::crossover
