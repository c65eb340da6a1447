#include "doorbell.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>

#include "futex.h"

namespace bypass::transport::detail {

bool doorbell_connected(int fd) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, 0) < 0) return false;
  return (p.revents & (POLLHUP | POLLERR | POLLNVAL)) == 0;
}

Result<std::unique_ptr<Doorbell>> Doorbell::start(base::UniqueFd fd) {
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
    return base::errno_error(Status::kIo, "doorbell: fcntl", errno);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return base::errno_error(Status::kIo, "doorbell: fstat", errno);
  std::unique_ptr<Doorbell> bell(new Doorbell(std::move(fd), S_ISSOCK(st.st_mode)));
  if (!bell->drain()) return make_error(Status::kPeerGone, "the doorbell's stream has ended");
  bell->heard_.store(0, std::memory_order_relaxed);  // an earlier session's rings are not ours
  return bell;
}

void Doorbell::ring() {
  if (!alive()) return;
  const char byte = 1;
  const ssize_t n =
      is_socket_ ? ::send(fd_.get(), &byte, 1, MSG_NOSIGNAL | MSG_DONTWAIT) : ::write(fd_.get(), &byte, 1);
  if (n == 1) {
    rung_.fetch_add(1, std::memory_order_relaxed);
  } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
    // The peer is gone (EPIPE, ECONNRESET) or the port broke: wake our own sleepers to see it.
    alive_.store(false, std::memory_order_release);
    bump(2);  // the reading bit stays as it is; a reader learns of the end from its poll()
  }
}

bool Doorbell::drain() {
  for (;;) {
    char bytes[256];
    const ssize_t n = ::read(fd_.get(), bytes, sizeof bytes);
    if (n > 0) {
      heard_.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    return n < 0 && errno == EAGAIN;  // 0: end of stream; another error: broken
  }
}

void Doorbell::bump(uint32_t step) {
  // seq_cst, with the sleepers' increment of sleepers_ before their futex_wait: either we see
  // a sleeper and wake it, or its futex_wait sees the new epoch and returns at once.
  epoch_.fetch_add(step, std::memory_order_seq_cst);
  if (sleepers_.load(std::memory_order_seq_cst) != 0) futex_wake_all(&epoch_);
}

bool Doorbell::wait(uint32_t seen, std::chrono::nanoseconds timeout) {
  uint32_t now = epoch_.load(std::memory_order_seq_cst);
  if (now != seen || !alive()) return false;
  if ((now & 1) != 0) {
    // Another sleeper reads the stream; it moves the epoch when it stops.
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    const bool timed_out = futex_wait(&epoch_, seen, timeout);
    sleepers_.fetch_sub(1, std::memory_order_relaxed);
    return timed_out;
  }
  // Nobody reads: we do, if the epoch is still the one our caller saw before it re-checked its
  // word (else something moved: look again).
  if (!epoch_.compare_exchange_strong(now, now | 1, std::memory_order_seq_cst)) return false;
  pollfd p{fd_.get(), POLLIN, 0};
  const timespec ts{static_cast<time_t>(timeout.count() / 1'000'000'000),
                    static_cast<long>(timeout.count() % 1'000'000'000)};
  const int r = ::ppoll(&p, 1, &ts, nullptr);
  bool ended = false;
  if (r > 0) {
    if (p.revents & POLLIN) {
      ended = !drain();
    } else if (p.revents & (POLLHUP | POLLERR | POLLNVAL)) {
      ended = true;
    }
  }
  if (ended) alive_.store(false, std::memory_order_release);
  // Gives up the reading and moves the epoch (odd + 1): whether we read a ring meant for another
  // sleeper or only stop, the others look again, and one of them reads if it still waits.
  bump(1);
  return r == 0;
}

}  // namespace bypass::transport::detail
