// Why a session ended: one value per way the host ends a session, with a stable name. The
// name is what bypassctl's JSON ("reason"), the log line and the tests use; the free-text
// detail beside it says which command and what (docs/host-server.md has the table).
// tests/e2e/harness.py mirrors the list (its EndReason); `bypassd --list-end-reasons` prints
// it, and e2e_end_reasons checks that the two agree.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace bypass::host {

// Values are stable: they cross the worker's report page. Append only.
enum class EndReason : uint32_t {
  kNone = 0,                // still running (not a reason; never listed)
  kGuestGoodbye = 1,        // the guest closed its session (a goodbye on the ring)
  kPeerGone = 2,            // the guest's end went away without a goodbye (exit, crash, kill; a
                            // VM guest whose heartbeat stopped)
  kProtocolError = 3,       // a message broke the wire protocol: framing, verification, an unknown
                            // command, a missing fd, a corrupt ring
  kInvalidUsage = 4,        // a well-formed call broke a rule the host checks before the driver
                            // sees it: an unknown handle, a bad enum, a range, a destroy in use
  kObjectLimit = 5,         // the session reached --max-objects
  kPendingLimit = 6,        // the session reached --max-pending-waits
  kOutOfMemory = 7,         // the worker reached its data limit (--worker-data-limit)
  kSendTimeout = 8,         // the guest stopped reading replies (--send-timeout)
  kDriverError = 9,         // the host's driver failed a call the guest was told succeeded, or
                            // lacks a call the guest made
  kServerShutdown = 10,     // bypassd is shutting down
  kHandshakeFailed = 11,    // refused or timed-out handshake (never listed: not a session)
  kWorkerDied = 12,         // the worker process died (a driver crash): VK_ERROR_DEVICE_LOST
  kWorkerSetupFailed = 13,  // the worker could not start (sandbox, user switch)
  kEndedByOperator = 14,    // an operator ended it (bypassctl end, the management API)
};
inline constexpr EndReason kLastEndReason = EndReason::kEndedByOperator;

// "guest_goodbye", "peer_gone", ...: snake_case, stable.
const char* to_string(EndReason reason);
// A value read from a worker's report page, which bypassd does not trust: nullopt when it is
// not one of the above.
std::optional<EndReason> end_reason_from_int(uint32_t value);
// The guest ended its own session: it left, said goodbye or not. Everything else is an error
// of some side (logged as a warning, the guest told why).
inline bool is_clean(EndReason r) { return r == EndReason::kGuestGoodbye || r == EndReason::kPeerGone; }

}  // namespace bypass::host
