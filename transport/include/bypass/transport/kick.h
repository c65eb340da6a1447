// A pollable wake-up: an eventfd the waker signals and the sleeper waits on with poll() or
// epoll, together with other fds. This is the slot rings' wake-up on one kernel (slot_ring.h
// says when to kick): a broker serving many domains from one epoll loop, or an endpoint
// waiting on "frames arrived", its TAP device and "the host died" at once, cannot sleep on
// one futex. Mirrors KVM's ioeventfd/irqfd. Where no fd crosses (a VM), the sleeper polls the
// ring's wait word instead and nobody kicks.
#pragma once

#include <utility>

#include "bypass/base/result.h"
#include "bypass/base/unique_fd.h"

namespace bypass::transport {

class Kick {
 public:
  Kick() = default;
  explicit Kick(base::UniqueFd fd) : fd_(std::move(fd)) {}
  // A non-blocking eventfd.
  static base::Result<Kick> create();
  int fd() const { return fd_.get(); }
  explicit operator bool() const { return static_cast<bool>(fd_); }
  void signal() const;
  // Clears pending kicks without blocking.
  void drain() const;

 private:
  base::UniqueFd fd_;
};

enum class KickWait { kKicked, kTimedOut, kPeerGone };

// Blocks until `kick` fires, `peer_socket` hangs up or errors (when >= 0: a session's socket,
// the same hang-up SocketLink::peer_gone() reads), or timeout_ms passes (-1: forever). Drains
// the kick. A poll() that fails for good (not EINTR) cannot watch the peer any more: kPeerGone.
KickWait wait_kick_or_hangup(const Kick& kick, int peer_socket, int timeout_ms);

}  // namespace bypass::transport
