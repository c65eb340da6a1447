// End reasons' names (end_reason.h): the strings bypassctl's JSON and the tests use.
#include "bypass/host/end_reason.h"

namespace bypass::host {

const char* to_string(EndReason reason) {
  switch (reason) {
    case EndReason::kNone:
      return "none";
    case EndReason::kGuestGoodbye:
      return "guest_goodbye";
    case EndReason::kPeerGone:
      return "peer_gone";
    case EndReason::kProtocolError:
      return "protocol_error";
    case EndReason::kInvalidUsage:
      return "invalid_usage";
    case EndReason::kObjectLimit:
      return "object_limit";
    case EndReason::kPendingLimit:
      return "pending_limit";
    case EndReason::kOutOfMemory:
      return "out_of_memory";
    case EndReason::kSendTimeout:
      return "send_timeout";
    case EndReason::kDriverError:
      return "driver_error";
    case EndReason::kServerShutdown:
      return "server_shutdown";
    case EndReason::kHandshakeFailed:
      return "handshake_failed";
    case EndReason::kWorkerDied:
      return "worker_died";
    case EndReason::kWorkerSetupFailed:
      return "worker_setup_failed";
    case EndReason::kEndedByOperator:
      return "ended_by_operator";
  }
  return "unknown";
}

std::optional<EndReason> end_reason_from_int(uint32_t value) {
  if (value > static_cast<uint32_t>(kLastEndReason)) return std::nullopt;
  return static_cast<EndReason>(value);
}

}  // namespace bypass::host
