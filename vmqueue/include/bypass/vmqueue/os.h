// Small RAII wrappers over the Linux primitives the VM-queue and crossover paths share: file
// descriptors, memfd regions and their mappings, eventfd "kick" lines, and SCM_RIGHTS fd
// passing over a UNIX socket.
//
// The VM-queue session set-up uses bypass::transport (handshake, send_fds); what is here is
// what transport does not offer: pollable kicks (eventfd), because a broker serving many
// domains from one epoll loop, and an endpoint waiting on "work arrived" and "the host died"
// at once, cannot sleep on a futex. The crossover control socket still uses the fd passing
// below (its endpoints attach with a fixed struct; moving it onto a transport session is the
// next step).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <system_error>
#include <vector>

namespace bypass::vmqueue::os {

// Throws std::system_error naming what failed, with errno.
[[noreturn]] void throw_errno(const std::string& what);

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(other.release()) {}
  Fd& operator=(Fd&& other) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }

  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

// A memfd of `size` bytes. With `hugetlb`, backed by 2 MiB hugetlbfs pages (fails when the
// kernel has none reserved at mmap time, not here).
Fd make_memfd(const char* name, size_t size, bool hugetlb = false);

// Reopens a memfd read-only through /proc/self/fd, so the receiver of the new fd can only map
// it PROT_READ: page protection, not trust, keeps it from writing.
Fd reopen_read_only(int fd);

class Mapping {
 public:
  Mapping() = default;
  Mapping(void* addr, size_t size) : addr_(addr), size_(size) {}
  Mapping(Mapping&& other) noexcept : addr_(other.addr_), size_(other.size_) {
    other.addr_ = nullptr;
    other.size_ = 0;
  }
  Mapping& operator=(Mapping&& other) noexcept;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { reset(); }

  std::byte* data() const { return static_cast<std::byte*>(addr_); }
  size_t size() const { return size_; }
  explicit operator bool() const { return addr_ != nullptr; }
  void reset();

 private:
  void* addr_ = nullptr;
  size_t size_ = 0;
};

// MAP_SHARED mapping of [offset, offset+size) of fd.
Mapping map_shared(int fd, size_t size, bool writable = true, size_t offset = 0);

// An eventfd used as a doorbell: the producer kicks it, the consumer blocks in poll() on it
// (together with a socket, so a dead peer also wakes it). Mirrors KVM's ioeventfd/irqfd.
class Kick {
 public:
  Kick() = default;
  explicit Kick(Fd fd) : fd_(std::move(fd)) {}
  static Kick create();
  int fd() const { return fd_.get(); }
  explicit operator bool() const { return static_cast<bool>(fd_); }
  void signal() const;
  // Clears pending kicks without blocking.
  void drain() const;

 private:
  Fd fd_;
};

enum class WaitResult { kKicked, kTimedOut, kPeerGone };

// Blocks until `kick` fires, `peer_socket` hangs up or errors (when >= 0), or timeout_ms passes
// (-1: forever). Drains the kick.
WaitResult wait_kick_or_hangup(const Kick& kick, int peer_socket, int timeout_ms);

// Sends bytes plus fds over a connected UNIX stream socket in one sendmsg. Returns false when
// the peer is gone (EPIPE/ECONNRESET); throws on other errors.
bool send_with_fds(int sock, std::span<const std::byte> bytes, std::span<const int> fds);
// Receives exactly bytes.size() bytes; fds sent with them land in `fds` (closed ones dropped on
// the floor are impossible: every received fd is owned by an Fd). Returns false on EOF.
bool recv_with_fds(int sock, std::span<std::byte> bytes, std::vector<Fd>* fds);

// UNIX stream sockets.
Fd listen_unix(const std::string& path);
Fd connect_unix(const std::string& path);

// Peer credentials of a connected UNIX socket.
struct PeerCred {
  int pid = 0;
  unsigned uid = 0;
  unsigned gid = 0;
};
PeerCred peer_cred(int sock);

// Physical frame number backing virtual address `addr` in this process, from
// /proc/self/pagemap (needs CAP_SYS_ADMIN to see real PFNs). 0 when not present or hidden.
uint64_t page_frame_number(const void* addr);

}  // namespace bypass::vmqueue::os
