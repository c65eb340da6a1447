// A crossover link between virtual machines: every port's rings and buffer pool live in one
// shared-memory device (QEMU ivshmem-plain, backed on the host by a file the link daemon
// creates), which both guests and the host map. File descriptors cannot cross a VM boundary,
// so what a process link passes as fds is here: the memory (offsets in the header instead of
// memfds), the wake-ups (a doorbell per endpoint port, transport/doorbell.h: the guest's
// virtio-serial port "<file name>.<side>" on the socket "<file>.<side>.sock" the link daemon
// listens on; without one the endpoint and the switch poll the rings' wait words, as
// transport's VmLink does) and peer death (heartbeat words instead of a session socket's
// hang-up).
//
//   offset 0                  DeviceHeader (written once by the host before the magic)
//   offset kDeviceHeaderBytes port 0: rings (ring_region_bytes()), pool (pool_bytes(buffers))
//                             port 1, port 2 (uplink) likewise, each 64 KiB aligned
//
// Attach, per endpoint port (`state`, the guest claims, the host answers):
//   kSlotFree -> (guest CAS) kSlotClaimed -> guest wrote its MAC -> kSlotRequested
//   -> host zeroed the port's rings and attached it to the switch -> kSlotActive
//   or host refused -> kSlotRejected (the guest stores kSlotFree again)
//   The endpoint's heartbeat stood still for kDeviceGuestTimeout: the host detaches the port
//   and stores kSlotFree; the slot can be claimed again (a rebooted guest).
// The guest maps the whole device: page protection cannot keep it out of the other ports'
// pools as a read-only memfd does on one kernel; the switch still validates every descriptor.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "bypass/crossover/layout.h"
#include "bypass/transport/doorbell.h"
#include "bypass/transport/layout.h"

namespace bypass::crossover {

inline constexpr uint32_t kDeviceMagic = 0x44564f58;  // "XOVD" in memory order
inline constexpr uint32_t kDeviceVersion = 2;
inline constexpr uint64_t kDeviceHeaderBytes = 64 * 1024;
inline constexpr uint64_t kDeviceAlign = 64 * 1024;

// The slot states are the transport's (transport::layout::kSlot*), shared with the Vulkan and
// VM-queue devices.
using transport::layout::kSlotActive;
using transport::layout::kSlotClaimed;
using transport::layout::kSlotFree;
using transport::layout::kSlotRejected;
using transport::layout::kSlotRequested;

// How often each side beats, and how long a silent peer is given. The guest's is longer: a
// guest under emulation (TCG) can stall for a while.
inline constexpr std::chrono::milliseconds kDeviceBeat{5};
inline constexpr std::chrono::milliseconds kDeviceHostTimeout{3000};
inline constexpr std::chrono::milliseconds kDeviceGuestTimeout{5000};
// Polling: how long a side that found nothing sleeps before it looks at its rings again.
inline constexpr std::chrono::microseconds kDevicePoll{200};

struct DevicePort {
  // kDevice*: the guest CASes Free -> Claimed, writes `mac`, stores Requested (release; pairs
  // with the host's acquire load before it reads the MAC). The host stores Active or Rejected
  // (release; pairs with the guest's acquire load) and Free once the endpoint is gone.
  alignas(64) std::atomic<uint32_t> state;
  // Bumped by the guest when it claims: a guest that sees another generation lost the port.
  std::atomic<uint32_t> generation;
  uint8_t mac[6];
  uint8_t pad[2];
  // 1 if that side holds this port's doorbell: the guest's written before Requested, the
  // host's before Active. Both 1: the switch and the endpoint kick each other through it.
  uint32_t guest_doorbell;
  uint32_t host_doorbell;
  // Bumped by the endpoint every kDeviceBeat while it is attached (relaxed; read by the host).
  alignas(64) std::atomic<uint64_t> guest_heartbeat;
};

struct DeviceHeader {
  uint32_t magic;  // stored last (release), after everything else
  uint32_t version;
  uint64_t size;
  uint64_t control_schema;  // kControlSchema of the host's build (link.h)
  uint32_t buffers_per_port;
  uint32_t port_mask;  // ports whose memory is in the device (A, B, and the uplink if any)
  uint64_t rings_offset[kPorts];
  uint64_t pool_offset[kPorts];
  transport::layout::DoorbellTag doorbells;  // the ports' doorbells ("<name>.<side>"), if the host listens
  // Bumped by the host every kDeviceBeat (relaxed; read by guests).
  alignas(64) std::atomic<uint64_t> host_heartbeat;
  DevicePort ports[2];  // the two endpoint ports (A, B); the uplink is the host's own
};

static_assert(std::atomic<uint32_t>::is_always_lock_free && std::atomic<uint64_t>::is_always_lock_free);
static_assert(std::is_standard_layout_v<DeviceHeader>);
static_assert(sizeof(DeviceHeader) <= kDeviceHeaderBytes);
static_assert(sizeof(DevicePort) == 128);

inline constexpr uint64_t device_align(uint64_t n) { return (n + kDeviceAlign - 1) / kDeviceAlign * kDeviceAlign; }

// Where each port's memory lies, and the device size: a power of two, as a PCI BAR must be.
struct DeviceGeometry {
  uint64_t rings_offset[kPorts];
  uint64_t pool_offset[kPorts];
  uint64_t size;
};

inline DeviceGeometry device_geometry(uint32_t buffers_per_port) {
  DeviceGeometry g{};
  uint64_t at = kDeviceHeaderBytes;
  for (uint32_t p = 0; p < kPorts; ++p) {
    g.rings_offset[p] = at;
    at = device_align(at + ring_region_bytes());
    g.pool_offset[p] = at;
    at = device_align(at + pool_bytes(buffers_per_port));
  }
  g.size = uint64_t{1} << 22;  // 4 MiB at least
  while (g.size < at) g.size <<= 1;
  return g;
}

}  // namespace bypass::crossover
