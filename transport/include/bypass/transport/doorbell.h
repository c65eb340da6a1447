// A wake-up that crosses a VM boundary: one byte stream per slot of a shared-memory device
// (bypassd's session slots, a VM-queue control device's domain slots). On the host it is a UNIX
// socket QEMU connected to (a chardev) at doorbell_path(device, slot), in the guest the
// virtio-serial port QEMU backs with it, named "<device file name>.<slot>"; a guest process on
// the host's own kernel (tests, "ivshmem:/path" endpoints) connects to the socket itself. The
// waker writes one byte, which reaches the other side as an interrupt, not a poll. The stream
// lives as long as QEMU and the host daemon: its end is one of their deaths.
//
// Host side: DoorbellListener (a socket per slot, the newest connection kept), and for an epoll
// loop ring_doorbell() / drain_doorbell() on the connection. Guest side (or a host worker that
// sleeps on one): open_doorbell(), then Doorbell.
#pragma once

#include <poll.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "bypass/base/unique_fd.h"
#include "bypass/transport/layout.h"
#include "bypass/transport/status.h"

namespace bypass::transport {

// "<device_path>.<slot>.sock": where the host listens for slot `slot`'s doorbell.
std::string doorbell_path(const std::string& device_path, uint32_t slot);
// Whether `name` can name a device's ports (what a device header carries; the guest checks what
// it read): 1 to kMaxDoorbellName printable characters, no '/', no space, no ','.
inline constexpr size_t kMaxDoorbellName = layout::kDoorbellNameBytes;
bool valid_doorbell_name(std::string_view name);
// The ports' name a device header's tag gives (read once), or "" when the host listens for no
// doorbells or wrote a name no port can have.
std::string doorbell_name(const layout::DoorbellTag& tag);
// The host's end of a slot's doorbell for a session: `offered` (DoorbellListener::take) if the
// guest says in its slot word that it holds its end, else nothing. The word is the guest's to
// write at any time: it is read once, and only as a yes or a no.
base::UniqueFd doorbell_if_guest_holds(base::UniqueFd offered, const uint32_t& guest_word);

// Host side: a listening socket per slot, mode 0600 (whoever connects holds the slot's
// doorbell: the device file's owner, as QEMU is). Removed by the process that made them.
class DoorbellListener {
 public:
  DoorbellListener() = default;
  // kInvalidArgument when the device file's name cannot name ports, kIo when a socket cannot be made.
  static Result<DoorbellListener> listen(const std::string& device_path, uint32_t slots);
  DoorbellListener(DoorbellListener&&) noexcept = default;
  DoorbellListener& operator=(DoorbellListener&&) noexcept;
  ~DoorbellListener();
  explicit operator bool() const { return !listeners_.empty(); }
  // The ports' name: the device file's name (the header tells the guest).
  const std::string& name() const { return name_; }
  // Fills a device header's tag: present, with the ports' name, if this listens.
  void tag(layout::DoorbellTag* out) const;
  // Slot `slot`'s connection (a duplicate; the listener keeps the newest QEMU made: a QEMU that
  // restarted, or the next guest process on this kernel), or an empty fd if none is connected.
  base::UniqueFd take(uint32_t slot);
  // For a loop that waits for other things too (bypassd's main process): watch() adds what to
  // poll for the slots not `busy` (every listener, and the connections kept for idle slots: a
  // guest rings as it asks for a session), serve() does what they asked after the poll (accepts
  // new connections, drains idle ones, drops ended ones). A busy slot's connection is its
  // session's to read.
  void watch(std::vector<pollfd>* fds, const std::vector<bool>& busy) const;
  void serve(const std::vector<bool>& busy);

 private:
  void accept_pending(uint32_t slot);
  void remove();
  std::string path_, name_;
  pid_t owner_ = -1;
  std::vector<base::UniqueFd> listeners_, connections_;
};

// Guest side: the guest's end of slot `slot`'s doorbell of the device behind `endpoint` (as
// connect_vm() takes it: "ivshmem:", "ivshmem:<PCI address>", "ivshmem:/a/file"), whose header
// named the ports `name`. A file endpoint: its socket, connected; a PCI device: the port named
// "<name>.<slot>" in /sys/class/virtio-ports, if its host side is connected. Non-blocking.
// Empty if none.
base::UniqueFd open_doorbell(const std::string& endpoint, const std::string& name, uint32_t slot);

// For an epoll loop that watches many doorbells (the VM-queue broker, the crossover switch): one
// byte to the peer (false when the stream is dead), and what the peer sent, up to 64 KiB a call
// so that a peer flooding its doorbell cannot hold the loop (the rest stays readable; false when
// the stream ended).
bool ring_doorbell(int fd);
bool drain_doorbell(int fd);

// A byte carries no word, and a process may have several threads asleep on one doorbell (a
// receiver, a sender waiting for ring space, guest threads waiting on the completion feedback).
// So one sleeper at a time reads the stream itself (blocked in poll(), woken by the byte, no
// hop through another thread), and the others sleep on a private word, the epoch, which the
// reading sleeper moves when it stops reading (it read something, or its time ran out); each
// then re-checks its own ring word (VmLink::sleep, a VM domain's wait). The epoch's low bit says that someone
// reads: taking the reading is a CAS from the very epoch the sleeper saw before it re-checked
// its ring word, so no ring read by another goes unnoticed, and giving it up is one add that
// also moves the epoch. When the stream ends (the peer hung up, QEMU's chardev went away, an
// error) the doorbell is dead and its sleepers are woken to learn it: its users take that
// for the peer's death.
class Doorbell {
 public:
  // Takes the stream's fd (made non-blocking here) and drops the bytes an earlier session left
  // in it. Null when `fd` is empty or the stream cannot serve (then the session polls).
  static std::unique_ptr<Doorbell> start(base::UniqueFd fd);
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

  // The sleeper's whole loop: sleeps until ready() holds (re-checked after every wake-up, the
  // epoch read before it), the stream ends, or `end` passes; says which came first.
  enum class Woke { kReady, kEnded, kTimedOut };
  template <class Ready>
  Woke sleep_until(Ready ready, Clock::time_point end) {
    for (;;) {
      const uint32_t seen = epoch();
      if (ready()) return Woke::kReady;
      if (!alive()) return Woke::kEnded;
      const Clock::time_point now = Clock::now();
      if (now >= end) return Woke::kTimedOut;
      wait(seen, end - now);
    }
  }
  // Bytes written by ring() and bytes read from the peer (for statistics and tests).
  uint64_t rung() const { return rung_.load(std::memory_order_relaxed); }
  uint64_t heard() const { return heard_.load(std::memory_order_relaxed); }

 private:
  Doorbell(base::UniqueFd fd, bool is_socket) : fd_(std::move(fd)), is_socket_(is_socket) {}
  // Moves the epoch by `step` and wakes the sleepers waiting on it, if any.
  void bump(uint32_t step);

  base::UniqueFd fd_;
  const bool is_socket_;               // send(MSG_NOSIGNAL): a closed peer is EPIPE, not SIGPIPE
  std::atomic<uint32_t> epoch_{0};     // a futex word, private to this process; bit 0: reading
  std::atomic<uint32_t> sleepers_{0};  // threads in futex_wait on epoch_
  std::atomic<bool> alive_{true};
  std::atomic<uint64_t> rung_{0}, heard_{0};
};

// Whether a doorbell stream has a peer on the other end now: a virtio-serial port whose host
// side is not connected polls as hung up, and so does a socket whose peer closed.
bool doorbell_connected(int fd);

}  // namespace bypass::transport
