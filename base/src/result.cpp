#include "bypass/base/result.h"

#include <cstring>

namespace bypass::base {

std::string_view to_string(Errc code) {
  switch (code) {
    case Errc::kOk:
      return "ok";
    case Errc::kInvalidArgument:
      return "invalid argument";
    case Errc::kIo:
      return "i/o error";
    case Errc::kWouldBlock:
      return "would block";
    case Errc::kPeerGone:
      return "peer gone";
    case Errc::kConnectionReset:
      return "connection reset";
    case Errc::kClosed:
      return "closed";
    case Errc::kTruncated:
      return "message truncated";
    case Errc::kTooManyFds:
      return "too many file descriptors";
    case Errc::kTimeout:
      return "timeout";
  }
  return "unknown error code";
}

std::string errno_text(std::string_view what, int errno_value) {
  std::string text(what);
  text += ": ";
  text += std::strerror(errno_value);
  return text;
}

}  // namespace bypass::base
