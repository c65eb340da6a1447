// Channel's private state, shared by channel.cpp and session.cpp (which builds channels).
#pragma once

#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <string>
#include <vector>

#include "bypass/transport/channel.h"
#include "bypass/transport/link.h"
#include "bypass/transport/session.h"
#include "region.h"

namespace bypass::transport {

// Adaptive spin budget for one waiting direction. The rule of thumb: spin for about as long
// as a sleep/wake cycle costs. A wait satisfied late in the spin, or one that slept only
// briefly, says the budget was too small; a long sleep says spinning was wasted.
struct SpinState {
  static constexpr uint32_t kMinSpins = 32;
  // A futex sleep + wake on another CPU costs tens of microseconds here (a halted vCPU).
  static constexpr std::chrono::microseconds kShortSleep{50};
  uint32_t max = Channel::kDefaultMaxSpins;
  uint32_t budget = Channel::kDefaultMaxSpins;

  void grow() { budget = std::min(max, std::max(budget * 2, kMinSpins)); }
  void shrink() { budget = std::max(std::min(max, kMinSpins), budget / 2); }
  // The wait ended while spinning, at iteration `i`.
  void on_hit(uint32_t i) {
    if (i >= budget / 2) grow();
  }
  // The wait ended after sleeping for `slept`.
  void on_slept(Clock::duration slept) {
    if (slept < kShortSleep) {
      grow();
    } else {
      shrink();
    }
  }
};

struct Channel::Impl {
  // The medium: region, wake-ups, peer death (a memfd + socket, or a VM's device slot).
  // Declared first so it is destroyed last: the rings point into its region.
  std::unique_ptr<Link> link;
  RingProducer tx;
  RingConsumer rx;
  uint64_t max_message = 0;
  ucred peer_cred{};
  Hello peer_hello;
  // Scheduling hints in the region (see layout::SchedulingHints): ours and the peer's.
  std::atomic<uint32_t>* my_cpu = nullptr;
  std::atomic<uint32_t>* peer_cpu = nullptr;

  // Send side (one thread at a time).
  SpinState send_spin;
  Counter msgs_sent, bytes_sent, send_sleeps, send_announces;
  bool tx_abort_pending = false;  // a chunked message was cut short; cancel it before the next
  std::vector<ByteSpan> pieces;   // reused gather list for one record
  // Appends one record, waiting for room until the deadline.
  Status write_record(uint32_t kind, std::span<const ByteSpan> record_parts, uint64_t size, Deadline deadline);

  // Receive side (one thread at a time).
  SpinState recv_spin;
  Counter msgs_received, bytes_received, recv_sleeps, recv_announces;
  bool rx_closed = false;  // the peer said goodbye
  bool reassembling = false;
  uint32_t reassembly_kind = 0;
  uint64_t reassembly_total = 0, reassembly_got = 0;
  std::vector<std::byte> reassembly;

  // Sticky failure, set by whichever side finds it first.
  std::atomic<int> broken{0};  // a Status; pairs with the loads in check_broken()
  mutable std::mutex error_mutex;
  std::string error;

  Status fail(Status status, std::string text);
  Status check_broken() const { return static_cast<Status>(broken.load(std::memory_order_acquire)); }
};

namespace detail {
struct ChannelFactory {
  // `is_host`: the host writes the reply ring and reads the command ring; the guest the reverse.
  // `region` was validated against link->region().
  static Channel make(std::unique_ptr<Link> link, const RegionLayout& region, bool is_host, bool asymmetric_fences,
                      const ucred& peer_cred, Hello peer_hello);
};
}  // namespace detail

}  // namespace bypass::transport
