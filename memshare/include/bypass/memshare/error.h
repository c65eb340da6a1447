// Precise errors for memshare: every failure names one of a small set of codes plus a message
// that says which name, domain or range was involved.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace bypass::memshare {

enum class Errc : uint32_t {
  kOk = 0,
  kUnknownName = 1,     // no such name in this server (never existed, released, or a guess)
  kAccessDenied = 2,    // the domain is not listed for this name, or not with this access
  kOutOfRange = 3,      // offset/size outside the buffer, or arithmetic overflow
  kDomainGone = 4,      // the owning domain ended; its names are revoked
  kInvalidArgument = 5, // malformed request (bad fd, unaligned offset, zero size, ...)
  kUnsupported = 6,     // mechanism not available on this kernel
  kIo = 7,              // a system call failed (errno in the message)
  kProtocol = 8,        // malformed or unexpected message on the socket
  kBusy = 9,            // no free completion slot
  kTimeout = 10,        // a wait ran out of time (the operation may still complete)
  kDisconnected = 11,   // the service connection is closed
};

std::string_view errc_name(Errc code);

struct Error {
  Errc code = Errc::kOk;
  std::string message;
};

// Builds an Error whose message is prefixed with the code's name.
Error make_error(Errc code, std::string message);
// kIo error carrying strerror(errno_value).
Error io_error(std::string_view what, int errno_value);

// A value or an Error (std::expected is C++23; this is the small subset we need).
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Error error) : v_(std::move(error)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  T* operator->() { return &std::get<0>(v_); }
  const T* operator->() const { return &std::get<0>(v_); }
  const Error& error() const { return std::get<1>(v_); }
  Errc code() const { return ok() ? Errc::kOk : error().code; }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)) {}  // NOLINT
  bool ok() const { return error_.code == Errc::kOk; }
  explicit operator bool() const { return ok(); }
  void value() const {}
  const Error& error() const { return error_; }
  Errc code() const { return error_.code; }

 private:
  Error error_;
};

inline Result<void> ok_result() { return {}; }

}  // namespace bypass::memshare
