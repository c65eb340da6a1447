// The shared session region: the one place that says what lives where in the memfd both
// processes map. Everything here is read by a process that does not trust the writer, so
// every field is validated by the reader (see region.cpp and ring.cpp) before use.
//
//   offset 0                      RegionHeader (written once by the host before the fd is sent)
//   offset kControlOffset         RingControl for the command ring (guest -> host)
//   offset kControlOffset + 256   RingControl for the reply ring   (host -> guest)
//   offset kControlOffset + 512   SchedulingHints (where each side last ran)
//   offset kFeedbackOffset        Feedback (completions the host publishes for the guest)
//   offset kDataOffset            command ring data (capacity bytes, power of two)
//   offset kDataOffset + cap0     reply ring data   (capacity bytes, power of two)
//
// A ring is a byte array indexed by two monotonically growing 64-bit counters: `head` (bytes
// ever published by the producer) and `tail` (bytes ever consumed). head - tail is the fill
// level; position = index & (capacity - 1). Records are [RecordHeader][payload][pad to 8].
// A record may straddle the end of the array (it is copied in two pieces); a header never
// does, since every record starts 8-byte aligned and the capacity is a multiple of 8.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace bypass::transport::layout {

inline constexpr uint32_t kRegionMagic = 0x52505942;  // "BYPR" in memory order
inline constexpr uint32_t kLayoutVersion = 2;
inline constexpr size_t kCacheLine = 64;
inline constexpr size_t kPageSize = 4096;

inline constexpr uint64_t kMinRingBytes = 256;
inline constexpr uint64_t kMaxRingBytes = uint64_t{1} << 30;

inline constexpr uint32_t kCommandRing = 0;  // written by the guest, read by the host
inline constexpr uint32_t kReplyRing = 1;    // written by the host, read by the guest
inline constexpr uint32_t kRingCount = 2;

// Control block of one ring. Each group sits on its own cache line so that the producer's
// stores never invalidate the line the consumer writes, and the rarely written wait words do
// not share a line with either index.
struct RingControl {
  // Bytes ever published. Written only by the producer (seq_cst store after the record bytes;
  // pairs with the consumer's acquire/seq_cst load before it reads the record).
  alignas(kCacheLine) std::atomic<uint64_t> head;
  // Bytes ever consumed. Written only by the consumer (seq_cst store after it copied the
  // record out; pairs with the producer's acquire/seq_cst load before it reuses the space).
  alignas(kCacheLine) std::atomic<uint64_t> tail;
  // Consumer waiting for data. `data_seq` is the futex word the consumer sleeps on; the
  // producer bumps it and issues FUTEX_WAKE, but only after it saw `consumer_sleeping` set.
  alignas(kCacheLine) std::atomic<uint32_t> data_seq;
  std::atomic<uint32_t> consumer_sleeping;
  // Producer waiting for space: the mirror image, woken by the consumer after it frees space.
  alignas(kCacheLine) std::atomic<uint32_t> space_seq;
  std::atomic<uint32_t> producer_sleeping;
};

// Where each side's waiting thread last ran (sched_getcpu()). Only a hint for the spin
// policy: spinning while the peer waits for the very CPU we spin on only delays it. A hostile
// value costs the writer's own peer some performance, nothing else. Written only when it
// changes, each on its own line.
struct SchedulingHints {
  alignas(kCacheLine) std::atomic<uint32_t> guest_cpu;
  alignas(kCacheLine) std::atomic<uint32_t> host_cpu;
};
inline constexpr uint32_t kUnknownCpu = 0xFFFFFFFFu;

// Placement of one ring inside the region, all in bytes from the start of the region.
struct RingDescriptor {
  uint64_t control_offset;
  uint64_t data_offset;
  uint64_t capacity;
};

struct RegionHeader {
  uint32_t magic;
  uint32_t layout_version;
  uint64_t region_size;
  uint64_t max_message;  // largest reassembled message either side accepts
  RingDescriptor rings[kRingCount];
  uint64_t hints_offset;  // SchedulingHints
};

struct RecordHeader {
  uint32_t size;  // payload bytes, not counting this header or the padding
  uint32_t kind;  // user kinds are < kReservedKindBase
};

// Record kinds the transport uses itself.
inline constexpr uint32_t kReservedKindBase = 0xFFFF0000u;
// First piece of a message too large for one record. Payload: ChunkStart, then data.
inline constexpr uint32_t kKindChunkStart = 0xFFFF0001u;
// Following pieces: payload is data only.
inline constexpr uint32_t kKindChunkMore = 0xFFFF0002u;
// The producer gave up on a chunked message half way (its deadline passed); drop the partial.
inline constexpr uint32_t kKindChunkAbort = 0xFFFF0003u;
// Orderly close: nothing follows. Lets the reader tell a clean exit from a crash.
inline constexpr uint32_t kKindGoodbye = 0xFFFF0004u;

struct ChunkStart {
  uint32_t kind;      // the kind of the reassembled message
  uint32_t reserved;  // 0
  uint64_t total;     // payload bytes of the reassembled message
};

inline constexpr uint64_t kControlOffset = kPageSize;
inline constexpr uint64_t kDataOffset = 2 * kPageSize;

// Completion feedback, in the rest of the control page: the host writes what it learned of the
// guest's submissions, so a guest can answer fence status and waits on finished work without
// a round trip. The transport only places it and zeroes it when it writes a region; what the
// words mean is the session's (host-server/src/feedback.cpp publishes, guest-icd/src/sync.cpp
// reads). The host never reads back what it wrote here (it keeps its own copy), so a guest
// that scribbles on this block misleads only itself.
inline constexpr uint32_t kFeedbackSlots = 256;
struct Feedback {
  // Bumped by the host after every batch of completions it published (seq_cst RMW after the
  // slot stores; pairs with the guest's load before it re-checks the slots and sleeps): the
  // futex word a waiting guest sleeps on.
  alignas(kCacheLine) std::atomic<uint32_t> seq;
  // Set once by the host when a submission went untracked or the session ends: from then on
  // the slots may miss a completion, and the guest asks the host instead (release; pairs with
  // the guest's acquire load).
  std::atomic<uint32_t> stopped;
  // The highest serial the host has published in `done` so far, on any queue (release store
  // before the `seq` bump, acquire load). A guest answers a zero-timeout poll of a pending
  // submission itself only when that submission is later than this (guest-icd/src/sync.cpp):
  // a later one published may mean, through a semaphore, that the earlier one is done too.
  std::atomic<uint64_t> highest;
  // Guest threads asleep on `seq`, written by the guest (seq_cst RMW before it re-checks the
  // slots; pairs with the host's seq_cst load after it bumped `seq`): the host wakes only when
  // it is not zero. A hostile value costs the guest its own wake-ups, nothing else.
  alignas(kCacheLine) std::atomic<uint32_t> sleepers;
  // done[s % kFeedbackSlots] = the highest guest submission serial s (1, 2, ... in the order the
  // host ran the guest's vkQueueSubmit records) known complete among those with that residue;
  // release stores, acquire loads.
  alignas(kCacheLine) std::atomic<uint64_t> done[kFeedbackSlots];
};
inline constexpr uint64_t kFeedbackOffset = kControlOffset + 1024;

constexpr uint64_t record_bytes(uint64_t payload) { return sizeof(RecordHeader) + ((payload + 7) & ~uint64_t{7}); }

// Largest payload one record may carry. A quarter of the ring keeps producer and consumer
// working on different records at once (pipelining) while big messages are chunked.
constexpr uint64_t max_record_payload(uint64_t capacity) { return capacity / 4 - sizeof(RecordHeader); }

static_assert(std::atomic<uint64_t>::is_always_lock_free, "ring indices must be lock-free");
static_assert(std::atomic<uint32_t>::is_always_lock_free, "futex words must be lock-free");
static_assert(sizeof(std::atomic<uint64_t>) == 8 && sizeof(std::atomic<uint32_t>) == 4,
              "shared atomics must have the size of the plain integer");
static_assert(sizeof(RingControl) == 4 * kCacheLine);
static_assert(alignof(RingControl) == kCacheLine);
static_assert(offsetof(RingControl, tail) == kCacheLine);
static_assert(offsetof(RingControl, data_seq) == 2 * kCacheLine);
static_assert(offsetof(RingControl, space_seq) == 3 * kCacheLine);
static_assert(std::is_standard_layout_v<RingControl>);
static_assert(sizeof(RingDescriptor) == 24);
static_assert(sizeof(RegionHeader) == 32 + kRingCount * sizeof(RingDescriptor));
static_assert(sizeof(SchedulingHints) == 2 * kCacheLine && alignof(SchedulingHints) == kCacheLine);
static_assert(sizeof(RegionHeader) <= kControlOffset);
static_assert(kRingCount * sizeof(RingControl) + sizeof(SchedulingHints) <= kDataOffset - kControlOffset);
static_assert(std::is_standard_layout_v<Feedback> && sizeof(Feedback) == 2 * kCacheLine + 8 * kFeedbackSlots);
static_assert(kFeedbackOffset % kCacheLine == 0 &&
              kFeedbackOffset >= kControlOffset + kRingCount * sizeof(RingControl) + sizeof(SchedulingHints) &&
              kFeedbackOffset + sizeof(Feedback) <= kDataOffset);
static_assert(sizeof(RecordHeader) == 8 && alignof(RecordHeader) == 4);
static_assert(sizeof(ChunkStart) == 16);
static_assert(std::is_trivially_copyable_v<RegionHeader> && std::is_trivially_copyable_v<RecordHeader> &&
              std::is_trivially_copyable_v<ChunkStart>);
static_assert(max_record_payload(kMinRingBytes) > sizeof(ChunkStart), "a chunk must carry data");

// ---------------------------------------------------------------------------------------------
// A VM guest's device (QEMU ivshmem BAR 2, a file bypassd maps on the host). Written by bypassd
// when it creates the file; QEMU only maps it. A device holds `slot_count` session slots: one
// guest process of the VM per slot at a time, each with its own session region and its own
// heap of host-visible memory, so no slot's guest can reach another's rings.
//
//   offset 0                          VmDeviceHeader (+ the VmSlot array), kVmHeaderBytes
//   offset kVmHeaderBytes + i * slot  slot i: a session region (RegionHeader, rings: as above),
//                                     then its heap up to the next slot
//
// Session life, per slot (`state`, the guest claims, the host answers):
//   kSlotFree -> (guest CAS) kSlotClaimed -> guest wrote its hello -> kSlotRequested
//   -> host checked it, wrote the region and its own hello -> kSlotActive
//   or host refused -> kSlotRejected (reject_text says why; the guest frees the slot)
//   A session's end (goodbye, a dead peer, bypassd's worker gone): bypassd sets kSlotFree.
// Peer death: bypassd's main process bumps host_heartbeat every kVmHeartbeatPeriod; a guest
// whose session is open bumps its slot's guest_heartbeat as often. A heartbeat that stands
// still for the peer's timeout means that side is gone (killed, VM reset, bypassd dead).
// Doorbells (optional, per slot): a byte stream beside the device that wakes a sleeping side
// (vm.h, "Doorbells"). The header names them; each side says in the slot whether it holds its
// end for this session, and the session uses them only when both do.
inline constexpr uint32_t kVmMagic = 0x56505942;  // "BYPV" in memory order
inline constexpr uint32_t kVmLayoutVersion = 2;
inline constexpr uint32_t kVmMaxSlots = 8;
inline constexpr uint64_t kVmHeaderBytes = 64 * 1024;
inline constexpr uint64_t kVmHeapAlign = 64 * 1024;  // heap start and allocation granule

// One slot handshake for every shared-memory device a VM guest attaches through: this one, the
// VM-queue device (vmqueue/src/device.h) and the crossover NIC's device
// (crossover/include/bypass/crossover/device.h) each lay out their own slots, with these states.
inline constexpr uint32_t kSlotFree = 0;
inline constexpr uint32_t kSlotClaimed = 1;
inline constexpr uint32_t kSlotRequested = 2;
inline constexpr uint32_t kSlotActive = 3;
inline constexpr uint32_t kSlotRejected = 4;
inline constexpr uint32_t kSlotLeaving = 5;  // the guest closes; its host side removes it (VM-queue)

// What a device header says of its slots' doorbells (doorbell.h), in each of the three VM
// devices: whether the host listens for them, and the ports' name (`name_bytes` long, not
// NUL-terminated; slot i's port is "<name>.<i>"). Written by the host before the header's magic.
inline constexpr uint32_t kDoorbellNameBytes = 48;
struct DoorbellTag {
  uint32_t present;
  uint32_t name_bytes;
  char name[kDoorbellNameBytes];
};
static_assert(sizeof(DoorbellTag) == 56);

// A hello across the VM boundary: what HelloPacket carries on a socket.
struct VmHello {
  uint32_t transport_version;
  uint32_t protocol_version;
  uint64_t schema_hash;
  uint32_t name_bytes;
  char name[64];
  uint32_t reserved;
};

struct VmSlot {
  // Session state (kSlot*). The guest CASes Free -> Claimed and stores Requested after its
  // hello (release; pairs with the host's acquire load before it copies the hello). The host
  // stores Active/Rejected after its reply (release; pairs with the guest's acquire load) and
  // Free when the session ended.
  alignas(kCacheLine) std::atomic<uint32_t> state;
  // Bumped by the guest when it claims the slot: a guest whose session ended sees a new
  // generation (or another state) and knows the slot is no longer its own.
  std::atomic<uint32_t> generation;
  // Bumped by the guest's heartbeat thread while its session is open (relaxed; read by the host).
  alignas(kCacheLine) std::atomic<uint64_t> guest_heartbeat;
  alignas(kCacheLine) VmHello guest_hello;  // written by the guest before kSlotRequested
  VmHello host_hello;                       // written by the host before kSlotActive
  // 1 if that side holds this slot's doorbell for the session: the guest's written before
  // kSlotRequested, the host's before kSlotActive. Both 1: wake-ups ring it; else they poll.
  uint32_t guest_doorbell;
  uint32_t host_doorbell;
  uint32_t reject_bytes;  // written by the host before kSlotRejected
  char reject_text[468];
};

struct VmDeviceHeader {
  uint32_t magic;
  uint32_t layout_version;
  uint64_t device_size;
  uint32_t slot_count;
  uint32_t reserved;
  uint64_t slot_bytes;    // slot i starts at kVmHeaderBytes + i * slot_bytes
  uint64_t region_bytes;  // the session region at the start of each slot; the heap follows
  uint64_t heap_offset;   // from the slot's start, a multiple of kVmHeapAlign
  // The slots' doorbells: the ports are named after the device file.
  DoorbellTag doorbells;
  // Bumped by bypassd's main process (relaxed; read by guests).
  alignas(kCacheLine) std::atomic<uint64_t> host_heartbeat;
  alignas(kCacheLine) VmSlot slots[kVmMaxSlots];
};

static_assert(sizeof(VmHello) == 88);
static_assert(sizeof(VmSlot) % kCacheLine == 0 && sizeof(VmSlot) <= 1024);
static_assert(sizeof(VmDeviceHeader) <= kVmHeaderBytes);
static_assert(std::is_standard_layout_v<VmDeviceHeader>);
static_assert(kVmHeaderBytes % kPageSize == 0 && kVmHeapAlign % kPageSize == 0);

}  // namespace bypass::transport::layout
