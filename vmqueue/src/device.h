// The VM-queue device: what a domain inside a VM reaches the broker through. File descriptors
// cannot cross a VM boundary, so what a process domain gets as fds is here instead: its rings
// (a slot region in the device), the page pools (in the device too: a domain maps a message's
// pages from the BAR at the pool's offset, so ownership still moves by remapping), wake-ups
// (a doorbell per slot, transport/doorbell.h: a virtio-serial port in the guest, a socket the
// broker listens on; without one both sides poll the rings) and peer death (heartbeat words
// instead of a session socket's hang-up, and the doorbell's end). The broker (vmqd --device FILE) makes the file; QEMU
// maps it as each guest's ivshmem-plain BAR 2.
//
//   offset 0             Header (written once by the broker before the magic, then only the
//                        host heartbeat and the slots' state words)
//   slots_offset         slot_count slot regions of slot_bytes: request, reply and queue rings
//                        (wire::region_layout of the domain's queue capacity)
//   pool_offset[0]       4 KiB pages (4 KiB aligned)
//   pool_offset[1]       2 MiB units (2 MiB aligned)
//   size                 a power of two, as a PCI BAR must be
//
// Attach, per slot (the guest claims, the broker answers):
//   kSlotFree -> (guest CAS, generation + 1) kSlotClaimed -> guest wrote its hello -> kSlotRequested
//   -> broker copied and checked the hello, zeroed the rings, set domain_id -> kSlotActive
//      or refused it (status) -> kSlotRejected (the guest reads status and stores kSlotFree)
//   kSlotActive -> (guest closes) kSlotLeaving -> broker removes the domain -> kSlotFree
//   The guest's heartbeat stood still for kVmGuestTimeout, or a hostile guest broke its rings:
//   the broker removes the domain (its pages go back to the pool) and stores kSlotFree.
// A guest maps the whole BAR: page protection cannot keep it out of pages it does not own, as
// it cannot on one kernel (the domain holds the pool fds); the broker checks ownership for every
// operation and never maps a pool page itself.
//
// A VM's own control device (vmqd --vm NAME:PATH): the same header and slots, for that VM's
// domains only, and no pools (kFlagSeparatePools): the pools stay in the shared device, whose
// offsets and size this header gives. Each VM then maps its own slots and the shared pools,
// never another VM's slots or rings; the shared device, served this way, holds no slots.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "bypass/transport/doorbell.h"
#include "bypass/transport/layout.h"
#include "wire.h"

namespace bypass::vmqueue::device {

inline constexpr uint32_t kMagic = 0x44514d56;  // "VMQD" in memory order
inline constexpr uint32_t kVersion = 3;
inline constexpr uint64_t kHeaderBytes = 64 * 1024;
inline constexpr uint64_t kAlign = 64 * 1024;
inline constexpr uint32_t kMaxSlots = 32;
// The largest queue a VM domain may ask for: it sizes every slot.
inline constexpr uint32_t kMaxQueueCapacity = 256;
// Header::flags: the pools are not in this device but in the shared one (pool_device_size
// bytes); this one is a VM's own control device.
inline constexpr uint32_t kFlagSeparatePools = 1;

// The slot states are the transport's (transport::layout::kSlot*), shared with the Vulkan and
// crossover devices.
using transport::layout::kSlotActive;
using transport::layout::kSlotClaimed;
using transport::layout::kSlotFree;
using transport::layout::kSlotLeaving;
using transport::layout::kSlotRejected;
using transport::layout::kSlotRequested;

// How often the broker looks at the slots (attach requests, heartbeats) and beats, how often a
// guest beats, and how long each side gives a silent peer (a TCG guest can stall for a while).
inline constexpr std::chrono::milliseconds kServe{5};
inline constexpr std::chrono::milliseconds kGuestBeat{50};
inline constexpr std::chrono::milliseconds kHostTimeout{2000};   // a domain's view of the broker
inline constexpr std::chrono::milliseconds kGuestTimeout{4000};  // the broker's view of a domain
// The longest the broker sleeps between looks at live VM domains' request rings: after work it
// looks again after transport's kVmPollMin, doubling while it finds nothing.
inline constexpr std::chrono::microseconds kPoll{200};

struct Slot {
  // k*: the guest CASes Free -> Claimed, writes `hello` and `claimed_*`, stores Requested
  // (release; pairs with the broker's acquire load before it copies them). The broker writes
  // `status` and `domain_id` and stores Active or Rejected (release; pairs with the guest's
  // acquire load), and Free once the domain is gone.
  alignas(64) std::atomic<uint32_t> state;
  // Bumped by the guest when it claims (relaxed): a guest that sees another generation lost
  // the slot.
  std::atomic<uint32_t> generation;
  wire::Hello hello;  // the guest's queue options and name
  // What the guest says about its process: no SO_PEERCRED crosses a VM boundary.
  int32_t claimed_pid;
  uint32_t claimed_uid;
  uint32_t claimed_gid;
  uint32_t status;  // Errc, the broker's answer
  uint32_t domain_id;
  // 1 if that side holds this slot's doorbell: the guest's written before Requested, the
  // broker's before Active. Both 1: the two kick each other through it; else they poll.
  uint32_t guest_doorbell;
  uint32_t host_doorbell;
  // Bumped by the guest every kGuestBeat while it is attached (relaxed; read by the broker).
  alignas(64) std::atomic<uint64_t> guest_heartbeat;
};

struct Header {
  uint32_t magic;  // stored last (release), after everything else
  uint32_t version;
  uint64_t size;
  uint64_t schema_hash;  // wire::kSchemaHash of the broker's build
  uint32_t slot_count;
  uint32_t max_queue_capacity;
  uint64_t slots_offset;
  uint64_t slot_bytes;
  uint64_t pool_offset[2];  // in the device that holds the pools
  uint32_t pool_pages[2];
  uint32_t flags;
  uint32_t reserved;
  uint64_t pool_device_size;                 // the size of the device that holds the pools
  transport::layout::DoorbellTag doorbells;  // the slots' doorbells, if the broker listens
  // Bumped by the broker every kServe (relaxed; read by guests).
  alignas(64) std::atomic<uint64_t> host_heartbeat;
  Slot slots[kMaxSlots];
};

static_assert(std::atomic<uint32_t>::is_always_lock_free && std::atomic<uint64_t>::is_always_lock_free);
static_assert(std::is_standard_layout_v<Header>);
static_assert(sizeof(Slot) == 192);
static_assert(sizeof(Header) <= kHeaderBytes);

inline constexpr uint64_t align_up(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }

struct Geometry {
  uint64_t slots_offset = 0;
  uint64_t slot_bytes = 0;
  uint64_t pool_offset[2] = {0, 0};
  uint64_t control_bytes = 0;  // header and slots: what the broker maps
  uint64_t size = 0;
};

inline Geometry geometry(uint32_t slots, uint32_t pages_4k, uint32_t pages_2m) {
  Geometry g;
  g.slots_offset = kHeaderBytes;
  g.slot_bytes = align_up(wire::region_layout(kMaxQueueCapacity).size, kAlign);
  g.control_bytes = g.slots_offset + uint64_t{slots} * g.slot_bytes;
  g.pool_offset[0] = align_up(g.control_bytes, page_bytes(PageSize::k2M));
  g.pool_offset[1] =
      align_up(g.pool_offset[0] + uint64_t{pages_4k} * page_bytes(PageSize::k4K), page_bytes(PageSize::k2M));
  const uint64_t end = g.pool_offset[1] + uint64_t{pages_2m} * page_bytes(PageSize::k2M);
  g.size = uint64_t{1} << 22;  // 4 MiB at least
  while (g.size < end) g.size <<= 1;
  return g;
}

// A VM's own control device: the header and `slots` slots, no pools.
inline Geometry control_geometry(uint32_t slots) {
  Geometry g;
  g.slots_offset = kHeaderBytes;
  g.slot_bytes = align_up(wire::region_layout(kMaxQueueCapacity).size, kAlign);
  g.control_bytes = g.slots_offset + uint64_t{slots} * g.slot_bytes;
  g.size = uint64_t{1} << 20;
  while (g.size < g.control_bytes) g.size <<= 1;
  return g;
}

}  // namespace bypass::vmqueue::device
