// One endpoint of a session: it writes its transmit ring, reads its receive ring (both in the
// shared session region) and owns the link under them (link.h): on one machine the UNIX socket
// that carries file descriptors and tells us when the peer is gone, for a VM a slot of the
// shared-memory device. Channels are made by connect() / Listener::accept() (session.h) and by
// connect_vm() / accept_vm() (vm.h).
//
// Not thread-safe as a whole, but the send side (send, sendv, send_fds) and the receive side
// (recv, poll_ready, recv_fds) may each be used by its own thread at the same time.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "bypass/transport/layout.h"
#include "bypass/transport/ring.h"
#include "bypass/transport/status.h"

namespace bypass::transport {

struct Hello;
namespace detail {
struct ChannelFactory;
}

class Channel {
 public:
  Channel(Channel&&) noexcept;
  Channel& operator=(Channel&&) noexcept;
  ~Channel();  // close()

  // Appends one message. Blocks while the ring is full; a message larger than one record is
  // carried in chunks and reassembled by recv(). kinds >= layout::kReservedKindBase are the
  // transport's own (kProtocolError if passed here). kTooLarge if over max_message().
  // kTimeout leaves the stream consistent: a half-sent chunked message is cancelled.
  Status send(uint32_t kind, std::span<const std::byte> payload, Deadline deadline = kForever);
  // Gather variant: the payload is the concatenation of `parts` (one message, one header).
  Status sendv(uint32_t kind, std::span<const std::span<const std::byte>> parts, Deadline deadline = kForever);
  // Receives the next complete message (reassembled if chunked). Messages the peer sent
  // before dying are still delivered; kPeerGone comes once the ring is empty.
  // kClosed once the peer said goodbye.
  Status recv(Message& out, Deadline deadline = kForever);
  // Non-blocking: true if at least one message (or chunk) is waiting.
  bool poll_ready() const;

  // File descriptors over the socket (SCM_RIGHTS), tagged so the receiver can match them to
  // ring messages. At most kMaxFdsPerMessage per call. recv_fds hands ownership of the
  // received fds to the caller. kClosed on a link that carries no fds (carries_fds()).
  static constexpr size_t kMaxFdsPerMessage = 64;
  Status send_fds(uint64_t tag, std::span<const int> fds, Deadline deadline = kForever);
  Status recv_fds(uint64_t& tag, std::vector<int>& fds, Deadline deadline = kForever);

  bool carries_fds() const;
  // Memory shared beside the rings for the host to sub-allocate (a VM slot's heap), or empty.
  std::span<std::byte> shared_heap() const;  // false on a VM link: no file descriptor crosses a VM boundary
  bool peer_alive() const;                   // false once the peer's socket end has closed (VM: its heartbeat stopped)
  pid_t peer_pid() const;                    // SO_PEERCRED at connection time
  uid_t peer_uid() const;
  gid_t peer_gid() const;
  const Hello& peer_hello() const;  // what the peer said in the handshake
  int socket_fd() const;            // -1 when closed

  // The session's completion feedback block in the shared region (layout::Feedback), null once
  // closed. The host writes it, the guest reads it; wake_feedback() wakes a guest asleep in
  // sleep_feedback() on its `seq` word (a futex, or on a VM link a polled word). Any thread.
  layout::Feedback* feedback() const;
  void wake_feedback() const;
  // Sleeps while feedback()->seq == expected, at most `timeout` (may return early).
  void sleep_feedback(uint32_t expected, std::chrono::nanoseconds timeout) const;
  // The longest sleep after which a waiter should ask peer_alive() again.
  std::chrono::nanoseconds liveness_slice() const;
  // How a sleeping side is woken on this channel's medium: "futex", "doorbell" or "polling".
  const char* wakeups() const;

  // Spin budget (pause iterations) before sleeping on the futex; the budget adapts below this
  // maximum (halved after a wait that ended asleep, doubled after a late spin hit).
  // 0 = never spin. Applies to both directions.
  void set_spin(uint32_t max_spins);
  static constexpr uint32_t kDefaultMaxSpins = 2048;

  struct Stats {
    uint64_t msgs_sent, bytes_sent, msgs_received, bytes_received, wakes_issued, sleeps;
    // Sleep announcements: each a heavy fence (membarrier) under asymmetric fences.
    uint64_t announces;
  };
  Stats stats() const;  // may be called from any thread
  size_t tx_capacity() const;
  size_t tx_used() const;  // bytes in the transmit ring not yet consumed by the peer (any thread)
  size_t rx_used() const;  // bytes in the receive ring not yet consumed by us (any thread)
  size_t max_message() const;

  // Sends a goodbye record (if there is room) and closes the socket and the mapping.
  // Afterwards every call returns kClosed. Idempotent.
  void close();
  // Closes without a goodbye, so the peer sees kPeerGone: for a relay whose own peer went away
  // without one (a network guest's dropped connection). Idempotent.
  void abandon();
  // Why the session failed (protocol error text), empty while it is healthy.
  std::string error_text() const;

  // The whole shared region as this process maps it. For tests that play a hostile peer.
  std::span<std::byte> region_for_testing() const;

  struct Impl;  // opaque; defined in the library

 private:
  friend struct detail::ChannelFactory;
  explicit Channel(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace bypass::transport
