#include "bypass/base/fd_passing.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace bypass::base {

namespace {

Error<Errc> errno_to_error(const char* call, int err) {
  switch (err) {
    case EAGAIN:
#if EWOULDBLOCK != EAGAIN
    case EWOULDBLOCK:
#endif
      return make_error(Errc::kWouldBlock, call);
    case EPIPE:
    case ENOTCONN:
      return make_error(Errc::kPeerGone, "peer closed the connection");
    case ECONNRESET:
      return make_error(Errc::kConnectionReset, "peer closed the connection");
    case EBADF:
      return errno_error(Errc::kClosed, call, err);
    default:
      return errno_error(Errc::kIo, call, err);
  }
}

}  // namespace

Result<size_t> send_fds(int socket, std::span<const std::byte> data, std::span<const int> fds, int flags) {
  if (fds.size() > kMaxFdsPerMessage) {
    return make_error(Errc::kInvalidArgument, "cannot send " + std::to_string(fds.size()) + " fds in one message");
  }
  iovec iov{const_cast<std::byte*>(data.data()), data.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) std::byte control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)];
  if (!fds.empty()) {
    std::memset(control, 0, CMSG_SPACE(sizeof(int) * fds.size()));
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
  }
  for (;;) {
    const ssize_t n = ::sendmsg(socket, &msg, MSG_NOSIGNAL | flags);
    if (n >= 0) return static_cast<size_t>(n);
    if (errno == EINTR) continue;
    // On send, a reset is as final as a closed pipe.
    if (errno == ECONNRESET) return make_error(Errc::kPeerGone, "peer closed the connection");
    return errno_to_error("sendmsg", errno);
  }
}

Result<size_t> recv_fds(int socket, std::span<std::byte> data, std::vector<UniqueFd>* fds, size_t max_fds, int flags) {
  if (max_fds > kMaxFdsPerMessage) max_fds = kMaxFdsPerMessage;
  iovec iov{data.data(), data.size()};
  alignas(cmsghdr) std::byte control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (max_fds > 0) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * max_fds);
  }
  ssize_t n;
  for (;;) {
    n = ::recvmsg(socket, &msg, MSG_CMSG_CLOEXEC | flags);
    if (n >= 0) break;
    if (errno == EINTR) continue;
    return errno_to_error("recvmsg", errno);
  }
  // Take ownership of every fd first, so that each error path below closes them.
  std::vector<UniqueFd> dropped;
  std::vector<UniqueFd>* out = fds != nullptr ? fds : &dropped;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      out->emplace_back(fd);
    }
  }
  if ((msg.msg_flags & MSG_TRUNC) != 0) return make_error(Errc::kTruncated, "message larger than the receive buffer");
  if ((msg.msg_flags & MSG_CTRUNC) != 0) {
    return make_error(Errc::kTooManyFds, "more than " + std::to_string(max_fds) + " fds attached to one message");
  }
  return static_cast<size_t>(n);
}

Result<void> send_all_fds(int socket, std::span<const std::byte> data, std::span<const int> fds) {
  size_t sent = 0;
  do {
    // The fds travel with the first byte only.
    auto n = send_fds(socket, data.subspan(sent), sent == 0 ? fds : std::span<const int>());
    if (!n) return n.error();
    sent += *n;
  } while (sent < data.size());
  return {};
}

Result<void> recv_exact_fds(int socket, std::span<std::byte> data, std::vector<UniqueFd>* fds, size_t max_fds) {
  size_t got = 0;
  while (got < data.size()) {
    auto n = recv_fds(socket, data.subspan(got), fds, max_fds);
    if (!n) return n.error();
    if (*n == 0) return make_error(Errc::kPeerGone, "end of stream");
    got += *n;
  }
  return {};
}

}  // namespace bypass::base
