#include "socket_io.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>

#include "bypass/base/fd_passing.h"

#include "bypass/base/text.h"

namespace bypass::transport::detail {

using base::str_printf;

int poll_timeout_ms(Deadline deadline) {
  constexpr int kMaxSliceMs = 100;
  if (deadline == kForever) return kMaxSliceMs;
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<decltype(left)>(left, 0, kMaxSliceMs));
}

bool peer_hung_up(int socket) {
  pollfd p{socket, POLLRDHUP, 0};
  if (::poll(&p, 1, 0) < 0) return false;  // EINTR etc.: no news is not bad news
  return (p.revents & (POLLHUP | POLLRDHUP | POLLERR | POLLNVAL)) != 0;
}

Status send_packet(int socket, const void* data, size_t size, std::span<const int> fds, Deadline deadline,
                   std::string* error) {
  const std::span<const std::byte> bytes(static_cast<const std::byte*>(data), size);
  for (;;) {
    auto sent = base::send_fds(socket, bytes, fds, MSG_DONTWAIT);
    if (sent.ok()) {
      if (*sent == size) return Status::kOk;
      *error = "short write on a SOCK_SEQPACKET socket";
      return Status::kProtocolError;
    }
    switch (sent.code()) {
      case base::Errc::kWouldBlock:
        break;
      case base::Errc::kInvalidArgument:
        *error = str_printf("cannot send %zu fds in one message", fds.size());
        return Status::kTooLarge;
      case base::Errc::kPeerGone:
        *error = "peer closed the connection";
        return Status::kPeerGone;
      default:
        *error = sent.error().message;
        return sent.code() == base::Errc::kClosed ? Status::kClosed : Status::kPeerGone;
    }
    if (Clock::now() >= deadline) {
      *error = "timed out sending on the session socket";
      return Status::kTimeout;
    }
    pollfd p{socket, POLLOUT, 0};
    (void)::poll(&p, 1, poll_timeout_ms(deadline));  // any outcome: the next sendmsg tells
    if ((p.revents & (POLLHUP | POLLERR)) != 0) {
      *error = "peer closed the connection";
      return Status::kPeerGone;
    }
  }
}

Status recv_packet(int socket, Packet* packet, Deadline deadline, std::string* error) {
  packet->fds.clear();
  packet->size = 0;
  bool reset_seen = false;
  for (;;) {
    // Room for kMaxReceivedFds: a peer that attaches more is detected (MSG_CTRUNC, and the
    // kernel closes the extra ones) instead of truncating silently.
    auto n = base::recv_fds(socket, packet->bytes, &packet->fds, kMaxReceivedFds, MSG_DONTWAIT);
    if (!n.ok()) {
      switch (n.code()) {
        case base::Errc::kWouldBlock: {
          if (Clock::now() >= deadline) {
            *error = "timed out waiting for the peer";
            return Status::kTimeout;
          }
          pollfd p{socket, POLLIN, 0};
          (void)::poll(&p, 1, poll_timeout_ms(deadline));  // any outcome: the next recvmsg tells
          continue;
        }
        case base::Errc::kConnectionReset:
          // A peer that closed with our packets unread leaves ECONNRESET, reported (once)
          // before what it sent us last: read on to get that (e.g. a host's reject).
          if (!reset_seen) {
            reset_seen = true;
            continue;
          }
          [[fallthrough]];
        case base::Errc::kPeerGone:
          *error = "peer closed the connection";
          return Status::kPeerGone;
        case base::Errc::kTruncated:
          *error = "peer sent an oversized packet";
          return Status::kProtocolError;
        case base::Errc::kTooManyFds:
          *error = "peer attached too many file descriptors";
          return Status::kProtocolError;
        default:
          *error = n.error().message;
          return n.code() == base::Errc::kClosed ? Status::kClosed : Status::kPeerGone;
      }
    }
    if (*n == 0 && packet->fds.empty()) {
      // End of stream, or an empty packet from a live peer (malformed).
      if (peer_hung_up(socket)) {
        *error = "peer closed the connection";
        return Status::kPeerGone;
      }
      *error = "peer sent an empty packet";
      return Status::kProtocolError;
    }
    if (*n > kMaxPacketBytes) {
      *error = "peer sent an oversized packet";
      return Status::kProtocolError;
    }
    packet->size = *n;
    return Status::kOk;
  }
}

}  // namespace bypass::transport::detail
