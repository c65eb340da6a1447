// Shared-memory layout of a crossover link.
//
// Three ports: the two endpoints (A, B) and the host's uplink. Each port has
//   - a buffer pool (its own memfd): the frames it receives from its TAP device are read
//     straight into these buffers; the port maps its own pool read/write and every other
//     port's pool read-only (page protection, so it can write a peer's frame to its TAP but
//     never alter it);
//   - a ring memfd with four descriptor rings (transport's slot rings):
//       tx       port -> host   frames it posts (a buffer of its own pool)
//       tx_done  host -> port   its buffers handed back once every receiver is done
//       rx       host -> port   frames for it (buffers of other ports' pools)
//       rx_done  port -> host   those buffers, written to its TAP, handed back
// The host never copies a frame: it reads the destination MAC, decides, and moves
// descriptors. Each frame is copied exactly twice, by the kernel: TAP -> pool on the sending
// side and pool -> TAP on the receiving side.
#pragma once

#include <cstddef>
#include <cstdint>

#include "bypass/transport/slot_ring.h"

namespace bypass::crossover {

using transport::SlotRing;

enum Port : uint32_t { kPortA = 0, kPortB = 1, kPortUplink = 2, kPorts = 3 };

inline const char* port_name(uint32_t p) {
  static const char* names[] = {"a", "b", "uplink"};
  return p < kPorts ? names[p] : "?";
}

struct Desc {
  uint32_t buf;  // global buffer id: port * buffers_per_port + index
  uint32_t len;  // bytes in the buffer: virtio-net header + Ethernet frame
};
static_assert(sizeof(Desc) == 8);

// Each buffer starts with the virtio-net header the TAP device exchanges with IFF_VNET_HDR
// (checksum and GSO/TSO metadata), then the frame. 64 KiB frames (GSO) plus the header fit.
// struct virtio_net_hdr (linux/virtio_net.h, which does not compile as C++): flags, gso_type,
// hdr_len, gso_size, csum_start, csum_offset.
constexpr size_t kVnetHdrLen = 10;
constexpr size_t kBufferStride = 65536 + 4096;
constexpr uint32_t kDefaultBuffers = 256;
constexpr uint32_t kRingSlots = 512;  // >= buffers of the two other ports that may be in flight

enum RingIndex { kTx = 0, kTxDone, kRx, kRxDone, kRingsPerPort };

constexpr size_t ring_stride() { return transport::slot_ring_bytes<Desc>(kRingSlots); }
constexpr size_t ring_region_bytes() { return (ring_stride() * kRingsPerPort + 4095) / 4096 * 4096; }
inline size_t pool_bytes(uint32_t buffers) { return size_t{buffers} * kBufferStride; }

inline SlotRing<Desc> open_ring(std::byte* region, int which, bool initialize = false) {
  return SlotRing<Desc>(region + ring_stride() * which, kRingSlots, initialize);
}

}  // namespace bypass::crossover
