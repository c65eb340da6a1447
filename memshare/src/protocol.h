// Messages between a domain and the service on a SOCK_SEQPACKET socket. One message per
// request; requests marked one-way get no reply. Every message starts with a MessageHeader;
// bodies are fixed-layout structs, some followed by an array whose length the body states
// and the receiver checks against the message size.
#pragma once

#include <cstdint>
#include <type_traits>

#include "bypass/memshare/types.h"

namespace bypass::memshare::wire {

inline constexpr size_t kMaxMessageBytes = 64 * 1024;
inline constexpr size_t kMaxErrorText = 512;

enum class Op : uint32_t {
  kRegister = 1,
  kName = 2,  // + fd
  kGrant = 3,
  kRevoke = 4,
  kRelease = 5,
  kQuery = 6,
  kMap = 7,           // reply + fd
  kUnmap = 8,         // one-way
  kRebind = 9,        // + fd
  kShadowOpen = 10,   // reply + fd
  kShadowClose = 11,  // one-way
  kBarrier = 12,      // + PageRange[count]
  kTransfer = 13,     // one-way, + CopyRange[count]; result in the completion slot
};

struct MessageHeader {
  uint32_t op;
  uint32_t error;  // replies: Errc; requests: 0. An error reply's body is the message text.
};

struct WireName {
  uint64_t hi;
  uint64_t lo;
};
inline WireName to_wire(const Name& n) { return WireName{n.hi, n.lo}; }
inline Name from_wire(const WireName& n) { return Name{n.hi, n.lo}; }

struct RegisterRequest {
  uint32_t version;
  uint32_t reserved;
  char label[48];
};
struct RegisterReply {  // + control page fd
  uint64_t domain;
  uint64_t control_bytes;
  uint32_t completion_slots;
  uint32_t mapping_slots;
};

struct NameRequest {  // + buffer fd
  uint64_t offset;
  uint64_t size;
};
struct NameReply {
  WireName name;
};

struct GrantRequest {
  WireName name;
  uint64_t domain;
  uint32_t access;
  uint32_t reserved;
};
struct RevokeRequest {
  WireName name;
  uint64_t domain;
};
struct ReleaseRequest {
  WireName name;
};
struct QueryRequest {
  WireName name;
};
struct QueryReply {
  uint64_t size;
  uint64_t owner;
  uint32_t generation;
  uint32_t access;  // what the asking domain may do
  uint32_t is_image;
  uint32_t reserved;
};

struct MapRequest {
  WireName name;
  uint32_t access;
  uint32_t reserved;
};
struct MapReply {  // + fd (read-only file description for read access)
  uint64_t offset;
  uint64_t size;
  uint32_t slot;
  uint32_t generation;
};
struct UnmapRequest {
  uint32_t slot;
  uint32_t reserved;
};

struct RebindRequest {  // + new buffer fd
  WireName name;
  uint64_t offset;
  uint64_t size;
};
struct RebindReply {
  uint32_t generation;
  uint32_t reserved;
};

struct ShadowOpenRequest {
  WireName name;
  uint32_t access;
  uint32_t reserved;
};
struct ShadowOpenReply {  // + shadow memfd
  uint64_t size;
  uint32_t shadow;
  uint32_t reserved;
};
struct ShadowCloseRequest {
  uint32_t shadow;
  uint32_t reserved;
};

struct BarrierRequest {  // + PageRange[count] for writes
  uint32_t shadow;
  uint32_t direction;
  uint64_t offset;
  uint64_t size;
  uint32_t count;
  uint32_t reserved;
};
struct BarrierReply {
  uint64_t bytes;
  uint64_t pages;
  uint64_t ranges;
};

struct TransferRequest {  // + CopyRange[count]
  WireName src;
  WireName dst;
  uint64_t ticket;
  uint32_t slot;
  uint32_t count;
};

inline constexpr size_t kMaxBarrierRuns =
    (kMaxMessageBytes - sizeof(MessageHeader) - sizeof(BarrierRequest)) / sizeof(PageRange);
inline constexpr size_t kMaxTransferRanges =
    (kMaxMessageBytes - sizeof(MessageHeader) - sizeof(TransferRequest)) / sizeof(CopyRange);

static_assert(std::is_trivially_copyable_v<PageRange> && sizeof(PageRange) == 16);
static_assert(std::is_trivially_copyable_v<CopyRange> && sizeof(CopyRange) == 24);
static_assert(sizeof(MessageHeader) == 8);
static_assert(sizeof(BarrierRequest) % 8 == 0 && sizeof(TransferRequest) % 8 == 0);

}  // namespace bypass::memshare::wire
