// The shared session region: the one place that says what lives where in the memfd both
// processes map. Everything here is read by a process that does not trust the writer, so
// every field is validated by the reader (see region.cc and ring.cc) before use.
//
//   offset 0                      RegionHeader (written once by the host before the fd is sent)
//   offset kControlOffset         RingControl for the command ring (guest -> host)
//   offset kControlOffset + 256   RingControl for the reply ring   (host -> guest)
//   offset kControlOffset + 512   SchedulingHints (where each side last ran)
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
inline constexpr uint32_t kLayoutVersion = 1;
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
static_assert(sizeof(RecordHeader) == 8 && alignof(RecordHeader) == 4);
static_assert(sizeof(ChunkStart) == 16);
static_assert(std::is_trivially_copyable_v<RegionHeader> && std::is_trivially_copyable_v<RecordHeader> &&
              std::is_trivially_copyable_v<ChunkStart>);
static_assert(max_record_payload(kMinRingBytes) > sizeof(ChunkStart), "a chunk must carry data");

}  // namespace bypass::transport::layout
