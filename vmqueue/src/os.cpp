#include "bypass/vmqueue/os.h"

#include <fcntl.h>
#include <linux/memfd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace bypass::vmqueue::os {

void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

Fd& Fd::operator=(Fd&& other) noexcept {
  if (this != &other) reset(other.release());
  return *this;
}

void Fd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

Fd make_memfd(const char* name, size_t size, bool hugetlb) {
  unsigned flags = MFD_CLOEXEC;
  if (hugetlb) flags |= MFD_HUGETLB | MFD_HUGE_2MB;
  Fd fd(::memfd_create(name, flags));
  if (!fd) throw_errno(std::string("memfd_create ") + name);
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) throw_errno(std::string("ftruncate ") + name);
  return fd;
}

Fd reopen_read_only(int fd) {
  std::string path = "/proc/self/fd/" + std::to_string(fd);
  Fd ro(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!ro) throw_errno("reopen read-only " + path);
  return ro;
}

Mapping& Mapping::operator=(Mapping&& other) noexcept {
  if (this != &other) {
    reset();
    addr_ = other.addr_;
    size_ = other.size_;
    other.addr_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

void Mapping::reset() {
  if (addr_ != nullptr) ::munmap(addr_, size_);
  addr_ = nullptr;
  size_ = 0;
}

Mapping map_shared(int fd, size_t size, bool writable, size_t offset) {
  int prot = PROT_READ | (writable ? PROT_WRITE : 0);
  void* p = ::mmap(nullptr, size, prot, MAP_SHARED, fd, static_cast<off_t>(offset));
  if (p == MAP_FAILED) throw_errno("mmap shared region");
  return Mapping(p, size);
}

Kick Kick::create() {
  Fd fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!fd) throw_errno("eventfd");
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
      throw_errno("poll");
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

bool send_with_fds(int sock, std::span<const std::byte> bytes, std::span<const int> fds) {
  msghdr msg{};
  iovec iov{const_cast<std::byte*>(bytes.data()), bytes.size()};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control;
  if (!fds.empty()) {
    control.resize(CMSG_SPACE(sizeof(int) * fds.size()));
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  size_t sent = 0;
  while (sent < bytes.size()) {
    ssize_t n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EPIPE || errno == ECONNRESET) return false;
      throw_errno("sendmsg");
    }
    sent += static_cast<size_t>(n);
    // Fds travel with the first byte only.
    msg.msg_control = nullptr;
    msg.msg_controllen = 0;
    iov.iov_base = const_cast<std::byte*>(bytes.data()) + sent;
    iov.iov_len = bytes.size() - sent;
  }
  return true;
}

bool recv_with_fds(int sock, std::span<std::byte> bytes, std::vector<Fd>* fds) {
  size_t got = 0;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)];
  while (got < bytes.size()) {
    msghdr msg{};
    iovec iov{bytes.data() + got, bytes.size() - got};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ECONNRESET) return false;
      throw_errno("recvmsg");
    }
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        Fd owned(fd);
        if (fds != nullptr) fds->push_back(std::move(owned));
      }
    }
    if (msg.msg_flags & MSG_CTRUNC) throw std::runtime_error("recvmsg: too many fds (control truncated)");
    if (n == 0) return false;
    got += static_cast<size_t>(n);
  }
  return true;
}

namespace {
sockaddr_un make_addr(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) throw std::runtime_error("socket path too long: " + path);
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}
}  // namespace

Fd listen_unix(const std::string& path) {
  sockaddr_un addr = make_addr(path);
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) throw_errno("socket");
  ::unlink(path.c_str());
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) throw_errno("bind " + path);
  if (::listen(fd.get(), 64) != 0) throw_errno("listen " + path);
  return fd;
}

Fd connect_unix(const std::string& path) {
  sockaddr_un addr = make_addr(path);
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) throw_errno("socket");
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) throw_errno("connect " + path);
  return fd;
}

PeerCred peer_cred(int sock) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) throw_errno("SO_PEERCRED");
  return PeerCred{cred.pid, cred.uid, cred.gid};
}

uint64_t page_frame_number(const void* addr) {
  Fd fd(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
  if (!fd) return 0;
  uint64_t entry = 0;
  auto page = reinterpret_cast<uintptr_t>(addr) / 4096;
  if (::pread(fd.get(), &entry, sizeof entry, static_cast<off_t>(page * sizeof entry)) != sizeof entry) return 0;
  if ((entry >> 63) == 0) return 0;  // not present
  return entry & ((uint64_t{1} << 55) - 1);
}

}  // namespace bypass::vmqueue::os
