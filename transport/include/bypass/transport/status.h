// Result codes and deadlines shared by every transport call.
//
// Channel calls return a bare Status (the message, if any, in Channel::error_text()); set-up
// calls (connect, listen, accept, regions, VM devices) return Result<T>, a value or a Status
// with a one-line message (base::Result, docs/base.md).
#pragma once

#include <chrono>
#include <string_view>

#include "bypass/base/result.h"

namespace bypass::transport {

// [[nodiscard]]: a Status dropped on the floor is a failure nobody handled; the build refuses it.
enum class [[nodiscard]] Status{
    kOk,
    kTimeout,        // the deadline passed first; nothing was lost, the call may be retried
    kPeerGone,       // the peer's socket end closed without a goodbye (crash, SIGKILL, exit)
    kProtocolError,  // the peer wrote something invalid; the session is unusable (sticky)
    kTooLarge,       // a message exceeds the session's max_message; nothing was sent
    kClosed,         // this endpoint was closed, moved from, or the peer said goodbye (sticky)
    // Set-up only:
    kRefused,          // the handshake was refused (versions, a server's limit or policy, a bad region)
    kInvalidArgument,  // a bad endpoint, path or size from the caller
    kIo,               // a system call failed (no server at the path, socket, memfd, mmap, ...)
};

const char* to_string(Status status);

template <class T = void>
using Result = base::Result<T, Status>;
using Error = base::Error<Status>;
// "<code name>: <message>" under `code`.
inline Error make_error(Status code, std::string_view message) { return base::make_error(code, message); }

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
