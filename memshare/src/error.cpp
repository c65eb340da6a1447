#include "bypass/memshare/error.h"

namespace bypass::memshare {

std::string_view to_string(Errc code) {
  switch (code) {
    case Errc::kOk:
      return "ok";
    case Errc::kUnknownName:
      return "unknown name";
    case Errc::kAccessDenied:
      return "access denied";
    case Errc::kOutOfRange:
      return "range out of bounds";
    case Errc::kDomainGone:
      return "domain gone";
    case Errc::kInvalidArgument:
      return "invalid argument";
    case Errc::kUnsupported:
      return "unsupported";
    case Errc::kIo:
      return "i/o error";
    case Errc::kProtocol:
      return "protocol error";
    case Errc::kBusy:
      return "busy";
    case Errc::kTimeout:
      return "timeout";
    case Errc::kDisconnected:
      return "disconnected";
  }
  return "unknown error code";
}

Error from_base(const base::Error<base::Errc>& error) {
  switch (error.code) {
    case base::Errc::kOk:
      return {};
    case base::Errc::kPeerGone:
    case base::Errc::kConnectionReset:
      return base::rebrand(Errc::kDisconnected, error);
    case base::Errc::kTruncated:
    case base::Errc::kTooManyFds:
      return base::rebrand(Errc::kProtocol, error);
    case base::Errc::kInvalidArgument:
      return base::rebrand(Errc::kInvalidArgument, error);
    case base::Errc::kTimeout:
      return base::rebrand(Errc::kTimeout, error);
    default:
      return base::rebrand(Errc::kIo, error);
  }
}

}  // namespace bypass::memshare
