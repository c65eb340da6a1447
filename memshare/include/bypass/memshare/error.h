// Precise errors for memshare: every failure names one of a small set of codes plus a message
// that says which name, domain or range was involved. The codes travel on memshare's wire
// (uint32), so their values are fixed.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "bypass/base/result.h"

namespace bypass::memshare {

enum class Errc : uint32_t {
  kOk = 0,
  kUnknownName = 1,      // no such name in this server (never existed, released, or a guess)
  kAccessDenied = 2,     // the domain is not listed for this name, or not with this access
  kOutOfRange = 3,       // offset/size outside the buffer, or arithmetic overflow
  kDomainGone = 4,       // the owning domain ended; its names are revoked
  kInvalidArgument = 5,  // malformed request (bad fd, unaligned offset, zero size, ...)
  kUnsupported = 6,      // mechanism not available on this kernel
  kIo = 7,               // a system call failed (errno in the message)
  kProtocol = 8,         // malformed or unexpected message on the socket
  kBusy = 9,             // no free completion slot
  kTimeout = 10,         // a wait ran out of time (the operation may still complete)
  kDisconnected = 11,    // the service connection is closed
};

// Names a code ("unknown name"); messages start with it.
std::string_view to_string(Errc code);

// The one result shape (bypass/base/result.h) with memshare's codes.
using Error = base::Error<Errc>;
template <typename T>
using Result = base::Result<T, Errc>;

// An Error whose message is prefixed with the code's name.
inline Error make_error(Errc code, std::string_view message) { return base::make_error(code, message); }
// kIo error carrying strerror(errno_value).
inline Error io_error(std::string_view what, int errno_value) {
  return base::errno_error(Errc::kIo, what, errno_value);
}
// A base/ (OS plumbing) error under memshare's codes: a closed peer is kDisconnected, a
// malformed message kProtocol, a bad argument kInvalidArgument, the rest kIo.
Error from_base(const base::Error<base::Errc>& error);

inline Result<void> ok_result() { return {}; }

}  // namespace bypass::memshare
