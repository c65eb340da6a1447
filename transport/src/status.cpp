#include "bypass/transport/status.h"

namespace bypass::transport {

const char* to_string(Status status) {
  switch (status) {
    case Status::kOk:
      return "ok";
    case Status::kTimeout:
      return "timeout";
    case Status::kPeerGone:
      return "peer gone";
    case Status::kProtocolError:
      return "protocol error";
    case Status::kTooLarge:
      return "too large";
    case Status::kClosed:
      return "closed";
    case Status::kRefused:
      return "handshake refused";
    case Status::kInvalidArgument:
      return "invalid argument";
    case Status::kIo:
      return "i/o error";
  }
  return "unknown status";
}

}  // namespace bypass::transport
