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

Result<> send_packet(int socket, const void* data, size_t size, std::span<const int> fds, Deadline deadline) {
  const std::span<const std::byte> bytes(static_cast<const std::byte*>(data), size);
  for (;;) {
    auto sent = base::send_fds(socket, bytes, fds, MSG_DONTWAIT);
    if (sent.ok()) {
      if (*sent == size) return {};
      return make_error(Status::kProtocolError, "short write on a SOCK_SEQPACKET socket");
    }
    switch (sent.code()) {
      case base::Errc::kWouldBlock:
        break;
      case base::Errc::kInvalidArgument:
        return make_error(Status::kTooLarge, str_printf("cannot send %zu fds in one message", fds.size()));
      case base::Errc::kPeerGone:
        return make_error(Status::kPeerGone, "peer closed the connection");
      default:
        return base::rebrand(sent.code() == base::Errc::kClosed ? Status::kClosed : Status::kPeerGone, sent.error());
    }
    if (Clock::now() >= deadline) {
      return make_error(Status::kTimeout, "timed out sending on the session socket");
    }
    pollfd p{socket, POLLOUT, 0};
    (void)::poll(&p, 1, poll_timeout_ms(deadline));  // any outcome: the next sendmsg tells
    if ((p.revents & (POLLHUP | POLLERR)) != 0) {
      return make_error(Status::kPeerGone, "peer closed the connection");
    }
  }
}

Result<> recv_packet(int socket, Packet* packet, Deadline deadline) {
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
            return make_error(Status::kTimeout, "timed out waiting for the peer");
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
          return make_error(Status::kPeerGone, "peer closed the connection");
        case base::Errc::kTruncated:
          return make_error(Status::kProtocolError, "peer sent an oversized packet");
        case base::Errc::kTooManyFds:
          return make_error(Status::kProtocolError, "peer attached too many file descriptors");
        default:
          return base::rebrand(n.code() == base::Errc::kClosed ? Status::kClosed : Status::kPeerGone, n.error());
      }
    }
    if (*n == 0 && packet->fds.empty()) {
      // End of stream, or an empty packet from a live peer (malformed).
      if (peer_hung_up(socket)) {
        return make_error(Status::kPeerGone, "peer closed the connection");
      }
      return make_error(Status::kProtocolError, "peer sent an empty packet");
    }
    if (*n > kMaxPacketBytes) {
      return make_error(Status::kProtocolError, "peer sent an oversized packet");
    }
    packet->size = *n;
    return {};
  }
}

}  // namespace bypass::transport::detail
