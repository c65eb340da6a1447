// Result codes and deadlines shared by every transport call.
#pragma once

#include <chrono>

namespace bypass::transport {

// [[nodiscard]]: a Status dropped on the floor is a failure nobody handled; the build refuses it.
enum class [[nodiscard]] Status {
  kOk,
  kTimeout,        // the deadline passed first; nothing was lost, the call may be retried
  kPeerGone,       // the peer's socket end closed without a goodbye (crash, SIGKILL, exit)
  kProtocolError,  // the peer wrote something invalid; the session is unusable (sticky)
  kTooLarge,       // a message exceeds the session's max_message; nothing was sent
  kClosed,         // this endpoint was closed, moved from, or the peer said goodbye (sticky)
};

const char* to_string(Status status);

using Clock = std::chrono::steady_clock;
// Every blocking call takes an absolute deadline so that retries do not stretch the wait.
using Deadline = Clock::time_point;
inline constexpr Deadline kForever = Deadline::max();

// now + timeout, saturating at kForever instead of overflowing.
inline Deadline deadline_after(Clock::duration timeout) {
  const Deadline now = Clock::now();
  if (timeout >= kForever - now) return kForever;
  return now + timeout;
}

}  // namespace bypass::transport
