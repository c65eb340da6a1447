// Packets on the session's SOCK_SEQPACKET socket: the handshake and tagged fd transfers.
// Every packet has a fixed size per type; anything else is malformed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "bypass/base/fd_passing.h"
#include "bypass/base/unique_fd.h"
#include "bypass/transport/session.h"
#include "bypass/transport/status.h"

namespace bypass::transport::detail {

inline constexpr uint32_t kPacketMagic = 0x4b505942;  // "BYPK" in memory order

enum class PacketType : uint16_t { kHello = 1, kWelcome = 2, kReject = 3, kReady = 4, kFds = 5 };

struct PacketHeader {
  uint32_t magic;
  uint16_t type;
  uint16_t reserved;
};

// Hello (guest -> host) and Welcome (host -> guest, with the region memfd) share this shape.
struct HelloPacket {
  PacketHeader header;
  uint32_t transport_version;
  uint32_t protocol_version;
  uint64_t schema_hash;
  uint32_t name_bytes;
  char name[kMaxNameBytes];
  uint32_t flags;  // kHelloFlag*: offered in Hello, agreed in Welcome
};
// Both processes registered for membarrier: the rings use asymmetric fences (see futex.h).
inline constexpr uint32_t kHelloFlagAsymmetricFences = 1;

inline constexpr size_t kMaxRejectText = 480;
struct RejectPacket {
  PacketHeader header;
  uint32_t text_bytes;
  char text[kMaxRejectText];
};

struct ReadyPacket {
  PacketHeader header;
};

struct FdsPacket {
  PacketHeader header;
  uint32_t count;  // must equal the number of fds attached
  uint32_t reserved;
  uint64_t tag;
};

static_assert(sizeof(HelloPacket) == 96);
static_assert(sizeof(RejectPacket) == 492);
static_assert(sizeof(FdsPacket) == 24);

inline constexpr size_t kMaxPacketBytes = 512;
// Room for the kernel's per-message maximum (SCM_MAX_FD), so a peer that attaches too many
// fds is detected (and they are closed) instead of truncating silently.
inline constexpr size_t kMaxReceivedFds = base::kMaxFdsPerMessage;

// One received packet; fds are owned and closed unless moved out.
struct Packet {
  std::byte bytes[kMaxPacketBytes + 8];
  size_t size = 0;
  std::vector<base::UniqueFd> fds;
};

// Sends one packet, waiting (poll) while the socket buffer is full. kPeerGone if the peer
// closed its end.
Result<> send_packet(int socket, const void* data, size_t size, std::span<const int> fds, Deadline deadline);
// Receives one packet. kTimeout at the deadline, kPeerGone at end of stream, kProtocolError
// for a truncated packet (too long or too many fds), the message saying which.
Result<> recv_packet(int socket, Packet* packet, Deadline deadline);

// Whether the peer's end of a connected socket has closed (non-blocking poll).
bool peer_hung_up(int socket);

// Milliseconds to pass to poll() for a deadline, capped so that a waiting loop wakes up now
// and then (-1 never: poll must not block forever on a dead peer's socket with no HUP).
int poll_timeout_ms(Deadline deadline);

}  // namespace bypass::transport::detail
