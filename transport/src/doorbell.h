// A wake-up that crosses a VM boundary: one byte stream per VM session slot. On the host it is
// a UNIX socket QEMU connected to (a chardev), in the guest the virtio-serial port QEMU backs
// with it; a guest process on the host's own kernel (tests) connects to the socket itself.
// The waker writes one byte, which reaches the other side as an interrupt, not a poll.
//
// A byte carries no word, and a process may have several threads asleep on one doorbell (a
// receiver, a sender waiting for ring space, guest threads waiting on the completion feedback).
// So one sleeper at a time reads the stream itself (blocked in poll(), woken by the byte, no
// hop through another thread), and the others sleep on a private word, the epoch, which the
// reading sleeper moves when it stops reading (it read something, or its time ran out); each
// then re-checks its own ring word (VmLink::sleep). The epoch's low bit says that someone
// reads: taking the reading is a CAS from the very epoch the sleeper saw before it re-checked
// its ring word, so no ring read by another goes unnoticed, and giving it up is one add that
// also moves the epoch. When the stream ends (the peer hung up, QEMU's chardev went away, an
// error) the doorbell is dead and its sleepers are woken to learn it: the link takes that for
// the peer's death (vm.cpp), since the stream lives as long as QEMU and bypassd do.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>

#include "bypass/base/unique_fd.h"
#include "bypass/transport/status.h"

namespace bypass::transport::detail {

class Doorbell {
 public:
  // Takes the stream's fd (made non-blocking here) and drops the bytes an earlier session left
  // in it.
  static Result<std::unique_ptr<Doorbell>> start(base::UniqueFd fd);
  Doorbell(const Doorbell&) = delete;
  Doorbell& operator=(const Doorbell&) = delete;

  // Wakes the peer's sleepers. Never blocks: a full stream already holds wake-ups the peer has
  // not read; a stream that fails is dead.
  void ring();
  // A sleeper reads the epoch, then re-checks its word, then calls wait() with that epoch.
  uint32_t epoch() const { return epoch_.load(std::memory_order_seq_cst); }
  // Sleeps until the peer rings (or the stream ends, or another sleeper stops reading) after
  // the epoch `seen` was read, at most `timeout`. May return early; true if the timeout ran out.
  bool wait(uint32_t seen, std::chrono::nanoseconds timeout);
  // False once the stream ended: the reading sleeper saw the hang-up, or a ring failed.
  bool alive() const { return alive_.load(std::memory_order_acquire); }
  // Bytes written by ring() and bytes read from the peer (for statistics and tests).
  uint64_t rung() const { return rung_.load(std::memory_order_relaxed); }
  uint64_t heard() const { return heard_.load(std::memory_order_relaxed); }

 private:
  Doorbell(base::UniqueFd fd, bool is_socket) : fd_(std::move(fd)), is_socket_(is_socket) {}
  // Reads what the stream holds; false once it ended.
  bool drain();
  // Moves the epoch by `step` and wakes the sleepers waiting on it, if any.
  void bump(uint32_t step);

  base::UniqueFd fd_;
  const bool is_socket_;               // send(MSG_NOSIGNAL): a closed peer is EPIPE, not SIGPIPE
  std::atomic<uint32_t> epoch_{0};     // a futex word, private to this process; bit 0: reading
  std::atomic<uint32_t> sleepers_{0};  // threads in futex_wait on epoch_
  std::atomic<bool> alive_{true};
  std::atomic<uint64_t> rung_{0}, heard_{0};
};

// Whether a freshly opened doorbell stream has a peer on the other end now: a virtio-serial
// port whose host side is not connected polls as hung up, and so does a socket whose peer closed.
bool doorbell_connected(int fd);

}  // namespace bypass::transport::detail
