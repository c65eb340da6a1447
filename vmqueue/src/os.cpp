#include "bypass/vmqueue/os.h"

#include <fcntl.h>
#include <linux/memfd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <string>

namespace bypass::vmqueue::os {

base::Result<base::UniqueFd> make_memfd(const char* name, size_t size, bool hugetlb) {
  unsigned flags = MFD_CLOEXEC;
  if (hugetlb) flags |= MFD_HUGETLB | MFD_HUGE_2MB;
  base::UniqueFd fd(::memfd_create(name, flags));
  if (!fd) return base::errno_error(base::Errc::kIo, std::string("memfd_create ") + name, errno);
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
    return base::errno_error(base::Errc::kIo, std::string("ftruncate ") + name, errno);
  }
  return fd;
}

base::Result<base::UniqueFd> reopen_read_only(int fd) {
  std::string path = "/proc/self/fd/" + std::to_string(fd);
  base::UniqueFd ro(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!ro) return base::errno_error(base::Errc::kIo, "reopen read-only " + path, errno);
  return ro;
}

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
  [[maybe_unused]] ssize_t n = ::read(fd_.get(), &value, sizeof value);
}

WaitResult wait_kick_or_hangup(const Kick& kick, int peer_socket, int timeout_ms) {
  pollfd fds[2] = {{kick.fd(), POLLIN, 0}, {peer_socket, POLLRDHUP, 0}};
  nfds_t n = peer_socket >= 0 ? 2 : 1;
  for (;;) {
    int r = ::poll(fds, n, timeout_ms);
    if (r < 0) {
      if (errno == EINTR) continue;
      return WaitResult::kPeerGone;  // EFAULT/EINVAL/ENOMEM: we cannot watch the peer any more
    }
    if (r == 0) return WaitResult::kTimedOut;
    if (fds[0].revents & POLLIN) {
      kick.drain();
      return WaitResult::kKicked;
    }
    if (n == 2 && (fds[1].revents & (POLLRDHUP | POLLHUP | POLLERR))) return WaitResult::kPeerGone;
    // Readable socket data with no hang-up is not ours to consume here: report a kick so
    // the caller re-checks its rings.
    return WaitResult::kKicked;
  }
}

uint64_t page_frame_number(const void* addr) {
  base::UniqueFd fd(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
  if (!fd) return 0;
  uint64_t entry = 0;
  auto page = reinterpret_cast<uintptr_t>(addr) / 4096;
  if (::pread(fd.get(), &entry, sizeof entry, static_cast<off_t>(page * sizeof entry)) != sizeof entry) return 0;
  if ((entry >> 63) == 0) return 0;  // not present
  return entry & ((uint64_t{1} << 55) - 1);
}

}  // namespace bypass::vmqueue::os
