#include "bypass/memshare/error.h"

#include <cstring>

namespace bypass::memshare {

std::string_view errc_name(Errc code) {
  switch (code) {
    case Errc::kOk: return "ok";
    case Errc::kUnknownName: return "unknown name";
    case Errc::kAccessDenied: return "access denied";
    case Errc::kOutOfRange: return "range out of bounds";
    case Errc::kDomainGone: return "domain gone";
    case Errc::kInvalidArgument: return "invalid argument";
    case Errc::kUnsupported: return "unsupported";
    case Errc::kIo: return "i/o error";
    case Errc::kProtocol: return "protocol error";
    case Errc::kBusy: return "busy";
    case Errc::kTimeout: return "timeout";
    case Errc::kDisconnected: return "disconnected";
  }
  return "unknown error code";
}

Error make_error(Errc code, std::string message) {
  std::string text(errc_name(code));
  if (!message.empty()) {
    text += ": ";
    text += message;
  }
  return Error{code, std::move(text)};
}

Error io_error(std::string_view what, int errno_value) {
  std::string text(what);
  text += ": ";
  text += std::strerror(errno_value);
  return make_error(Errc::kIo, std::move(text));
}

}  // namespace bypass::memshare
