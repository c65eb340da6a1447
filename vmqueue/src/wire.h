// The VM-queue wire: the socket handshake, the layout of a domain's shared region and the
// fixed-size records on its rings. Shared by the broker and the domain library only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "bypass/transport/slot_ring.h"
#include "bypass/vmqueue/types.h"

namespace bypass::vmqueue {
// The data path's rings are transport's slot rings.
using transport::SlotRing;
}  // namespace bypass::vmqueue

namespace bypass::vmqueue::wire {

constexpr uint32_t kMagic = 0x51514d56;  // "VMQQ"
constexpr uint32_t kVersion = 3;  // 2: pools at offsets (a VM device), claimed identities; 3: withdrawn introductions
constexpr size_t kNameMax = 63;
constexpr uint32_t kMaxRuns = 28;
constexpr uint32_t kRequestSlots = 128;
constexpr uint32_t kReplySlots = 128;
// Requests a domain keeps outstanding at once (Domain::send_batch): the broker owes it at most
// this many answers, which its reply ring always has room for.
constexpr uint32_t kMaxInFlight = kRequestSlots / 2;
// Answers the broker owes one domain beyond its reply ring (its sends parked on full queues,
// replies the ring had no room for): past this the broker reads no more of that domain's
// requests until the domain reads its replies, so a domain that writes requests and never reads
// the answers costs the broker a bounded amount of memory. A domain that keeps to kMaxInFlight
// never gets near it.
constexpr uint32_t kMaxOwed = kReplySlots;
// Introductions one domain may have waiting for their peer at once; one more is refused
// (kFull). An introduce() that times out withdraws its own (kCancel with its req_id).
constexpr uint32_t kMaxPendingIntroductions = 64;
constexpr uint32_t kMaxQueueCapacity = 4096;
// Checked by the transport handshake together with kVersion: changes whenever the records do.
constexpr uint64_t kSchemaHash = 0x766d710000000000ull | (uint64_t{kVersion} << 24) | (256u << 8) | kMaxRuns;
// Session messages on the transport channel (only during set-up; the data path is the rings).
enum SessionKind : uint32_t { kSessionHello = 1, kSessionWelcome = 2 };
constexpr uint64_t kWelcomeFdTag = 1;

struct Hello {
  uint32_t magic = kMagic;
  uint32_t version = kVersion;
  char name[kNameMax + 1] = {};
  uint32_t queue_capacity = 0;
  uint32_t lazy_delay_us = 0;
  uint8_t default_delivery = 0;
  uint8_t pad[7] = {};
};
static_assert(sizeof(Hello) == 88);

enum class HugeBacking : uint8_t { kHugetlb = 0, kShmemFallback = 1 };

struct Welcome {
  uint32_t magic = kMagic;
  uint32_t version = kVersion;
  uint32_t status = 0;  // Errc
  uint32_t domain_id = 0;
  uint64_t region_size = 0;
  uint32_t queue_capacity = 0;
  uint32_t pages_4k = 0;
  uint32_t pages_2m = 0;
  uint8_t huge_backing = 0;
  uint8_t pad[3] = {};
  // Where each pool starts in its fd: 0 for the broker's memfds, the pool's offset when the
  // pools live in a VM device (vmqd --device) and both fds are that file.
  uint64_t pool_offset[2] = {0, 0};
};
static_assert(sizeof(Welcome) == 56);
// Fds that follow a successful Welcome, in this order.
enum WelcomeFd { kFdRegion = 0, kFdPool4K, kFdPool2M, kFdBrokerKick, kFdDomainKick, kWelcomeFds };

struct PageRun {
  uint32_t first;  // page index in the pool of the message's page size
  uint32_t count;
};

enum class Kind : uint32_t {
  // domain -> broker (request ring)
  kAlloc = 1,  // bytes = page count; reply kAllocReply with the runs
  kSend,       // peer = destination; reply kSendReply
  kFlush,      // deliver this domain's lazy messages now; reply kFlushReply
  kFree,       // give pages back to the pool; no reply
  kIntroduce,  // identity exchange with the named domain; reply kIntroduced when mutual
  kCancel,     // req_id = a parked send or a pending introduction to give up on; its reply follows
  // broker -> domain (reply ring)
  kAllocReply = 101,
  kSendReply,
  kFlushReply,
  kIntroduced,  // peer = the other domain, body = WireIdentity
  kPeerDown,    // peer = a domain this one was introduced to, now gone
  // broker -> domain (inbound queue)
  kDeliver = 201,  // peer = sender
};

enum RecordFlags : uint8_t { kNoWait = 1 };

enum IdentityFlags : uint32_t { kClaimed = 1 };  // pid/uid/gid are what a VM guest said

struct WireIdentity {
  int32_t pid;
  uint32_t uid;
  uint32_t gid;
  uint32_t flags;
  char name[kNameMax + 1];
};

struct Record {
  uint32_t kind;
  uint32_t req_id;
  uint32_t peer;
  uint32_t tag;
  uint64_t bytes;
  uint8_t page_size;
  uint8_t delivery;
  uint8_t status;  // Errc, in replies
  uint8_t flags;
  uint32_t n_runs;
  PageRun runs[kMaxRuns];
};
static_assert(sizeof(Record) == 256);
static_assert(sizeof(WireIdentity) <= sizeof(Record::runs));

// A domain's shared region: request ring, reply ring, inbound queue, back to back.
struct RegionLayout {
  size_t request_offset;
  size_t reply_offset;
  size_t queue_offset;
  size_t size;
};

inline RegionLayout region_layout(uint32_t queue_capacity) {
  RegionLayout l{};
  l.request_offset = 0;
  l.reply_offset = l.request_offset + transport::slot_ring_bytes<Record>(kRequestSlots);
  l.queue_offset = l.reply_offset + transport::slot_ring_bytes<Record>(kReplySlots);
  size_t end = l.queue_offset + transport::slot_ring_bytes<Record>(queue_capacity);
  l.size = (end + 4095) / 4096 * 4096;
  return l;
}

inline bool valid_name(std::string_view name) {
  if (name.empty() || name.size() > kNameMax) return false;
  for (char c : name) {
    bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

inline void copy_name(char (&dst)[kNameMax + 1], std::string_view name) {
  std::memset(dst, 0, sizeof dst);
  std::memcpy(dst, name.data(), name.size() < kNameMax ? name.size() : kNameMax);
}

inline std::string_view name_of(const char (&src)[kNameMax + 1]) {
  return std::string_view(src, strnlen(src, kNameMax));
}

}  // namespace bypass::vmqueue::wire
