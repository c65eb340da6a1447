#include "socket_io.h"

#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "text.h"

namespace bypass::transport::detail {

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
  iovec iov{const_cast<void*>(data), size};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) std::byte control[CMSG_SPACE(sizeof(int) * kMaxReceivedFds)];
  if (!fds.empty()) {
    if (fds.size() > kMaxReceivedFds) {
      *error = str_printf("cannot send %zu fds in one message", fds.size());
      return Status::kTooLarge;
    }
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
  }
  for (;;) {
    // MSG_NOSIGNAL: a dead peer is an error code, not a SIGPIPE that kills us.
    const ssize_t n = ::sendmsg(socket, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n == static_cast<ssize_t>(size)) return Status::kOk;
    if (n >= 0) {
      *error = "short write on a SOCK_SEQPACKET socket";
      return Status::kProtocolError;
    }
    if (errno == EINTR) continue;
    if (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN) {
      *error = "peer closed the connection";
      return Status::kPeerGone;
    }
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      *error = str_printf("sendmsg failed: %s", std::strerror(errno));
      return errno == EBADF ? Status::kClosed : Status::kPeerGone;
    }
    if (Clock::now() >= deadline) {
      *error = "timed out sending on the session socket";
      return Status::kTimeout;
    }
    pollfd p{socket, POLLOUT, 0};
    (void)::poll(&p, 1, poll_timeout_ms(deadline));
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
    iovec iov{packet->bytes, sizeof packet->bytes};
    alignas(cmsghdr) std::byte control[CMSG_SPACE(sizeof(int) * kMaxReceivedFds)];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(socket, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (Clock::now() >= deadline) {
          *error = "timed out waiting for the peer";
          return Status::kTimeout;
        }
        pollfd p{socket, POLLIN, 0};
        (void)::poll(&p, 1, poll_timeout_ms(deadline));
        continue;
      }
      // A peer that closed with our packets unread leaves ECONNRESET, reported (once) before
      // what it sent us last: read on to get that (e.g. a host's reject).
      if (errno == ECONNRESET && !reset_seen) {
        reset_seen = true;
        continue;
      }
      if (errno == ECONNRESET || errno == ENOTCONN) {
        *error = "peer closed the connection";
        return Status::kPeerGone;
      }
      *error = str_printf("recvmsg failed: %s", std::strerror(errno));
      return errno == EBADF ? Status::kClosed : Status::kPeerGone;
    }
    // Take ownership of every fd first, so that each error path below closes them.
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        packet->fds.emplace_back(fd);
      }
    }
    if (n == 0 && packet->fds.empty()) {
      // End of stream, or an empty packet from a live peer (malformed).
      if (peer_hung_up(socket)) {
        *error = "peer closed the connection";
        return Status::kPeerGone;
      }
      *error = "peer sent an empty packet";
      return Status::kProtocolError;
    }
    if ((msg.msg_flags & MSG_TRUNC) != 0 || static_cast<size_t>(n) > kMaxPacketBytes) {
      *error = "peer sent an oversized packet";
      return Status::kProtocolError;
    }
    if ((msg.msg_flags & MSG_CTRUNC) != 0) {
      *error = "peer attached too many file descriptors";
      return Status::kProtocolError;
    }
    packet->size = static_cast<size_t>(n);
    return Status::kOk;
  }
}

}  // namespace bypass::transport::detail
