// Pollable wake-ups (kick.h): eventfd signal, drain, and a wait that also watches a session
// socket for the peer's death.
#include "bypass/transport/kick.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

namespace bypass::transport {

base::Result<Kick> Kick::create() {
  base::UniqueFd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!fd) return base::errno_error(base::Errc::kIo, "eventfd", errno);
  return Kick(std::move(fd));
}

void Kick::signal() const {
  uint64_t one = 1;
  // EAGAIN only when the counter would overflow, which means kicks are pending anyway.
  [[maybe_unused]] ssize_t n = ::write(fd_.get(), &one, sizeof one);
}

void Kick::drain() const {
  uint64_t value;
  // EAGAIN: nothing pending, which is what we wanted.
  [[maybe_unused]] ssize_t n = ::read(fd_.get(), &value, sizeof value);
}

KickWait wait_kick_or_hangup(const Kick& kick, int peer_socket, int timeout_ms) {
  pollfd fds[2] = {{kick.fd(), POLLIN, 0}, {peer_socket, POLLRDHUP, 0}};
  const nfds_t n = peer_socket >= 0 ? 2 : 1;
  for (;;) {
    const int r = ::poll(fds, n, timeout_ms);
    if (r < 0) {
      if (errno == EINTR) continue;
      return KickWait::kPeerGone;  // EFAULT/EINVAL/ENOMEM: we cannot watch the peer any more
    }
    if (r == 0) return KickWait::kTimedOut;
    if (fds[0].revents & POLLIN) {
      kick.drain();
      return KickWait::kKicked;
    }
    if (n == 2 && (fds[1].revents & (POLLRDHUP | POLLHUP | POLLERR))) return KickWait::kPeerGone;
    // Readable socket data with no hang-up is not ours to consume here: report a kick so
    // the caller re-checks its rings.
    return KickWait::kKicked;
  }
}

}  // namespace bypass::transport
