// Linux primitives the VM-queue and crossover paths share beyond base/ (fd and mapping owners,
// fd passing and UNIX sockets live there): memfd regions and eventfd "kick" lines.
//
// The VM-queue session set-up uses bypass::transport (handshake, send_fds); what is here is
// what transport does not offer: pollable kicks (eventfd), because a broker serving many
// domains from one epoll loop, and an endpoint waiting on "work arrived" and "the host died"
// at once, cannot sleep on a futex. The crossover control socket passes its fds with base's
// send_all_fds/recv_exact_fds (its endpoints attach with a fixed struct; moving it onto a
// transport session is the next step).
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

#include "bypass/base/result.h"
#include "bypass/base/unique_fd.h"

namespace bypass::vmqueue::os {

// A memfd of `size` bytes. With `hugetlb`, backed by 2 MiB hugetlbfs pages (fails when the
// kernel has none reserved at mmap time, not here).
base::Result<base::UniqueFd> make_memfd(const char* name, size_t size, bool hugetlb = false);

// Reopens a memfd read-only through /proc/self/fd, so the receiver of the new fd can only map
// it PROT_READ: page protection, not trust, keeps it from writing.
base::Result<base::UniqueFd> reopen_read_only(int fd);

// An eventfd used as a doorbell: the producer kicks it, the consumer blocks in poll() on it
// (together with a socket, so a dead peer also wakes it). Mirrors KVM's ioeventfd/irqfd.
class Kick {
 public:
  Kick() = default;
  explicit Kick(base::UniqueFd fd) : fd_(std::move(fd)) {}
  static base::Result<Kick> create();
  int fd() const { return fd_.get(); }
  explicit operator bool() const { return static_cast<bool>(fd_); }
  void signal() const;
  // Clears pending kicks without blocking.
  void drain() const;

 private:
  base::UniqueFd fd_;
};

enum class WaitResult { kKicked, kTimedOut, kPeerGone };

// Blocks until `kick` fires, `peer_socket` hangs up or errors (when >= 0), or timeout_ms passes
// (-1: forever). Drains the kick. A poll() that fails for good (not EINTR) cannot wait on the
// peer any more: it reports kPeerGone.
WaitResult wait_kick_or_hangup(const Kick& kick, int peer_socket, int timeout_ms);

// Physical frame number backing virtual address `addr` in this process, from
// /proc/self/pagemap (needs CAP_SYS_ADMIN to see real PFNs). 0 when not present or hidden.
uint64_t page_frame_number(const void* addr);

}  // namespace bypass::vmqueue::os
