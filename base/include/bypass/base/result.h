// The one result type of the libraries: a value or an Error (a code and a one-line message),
// marked [[nodiscard]] so that no failure is silently dropped. std::expected is C++23; this is
// the small subset we need.
//
// The shape is shared, the vocabulary is not: each layer has its own code enum (base::Errc for
// the OS plumbing here, memshare::Errc, vmqueue::Errc, transport::Status), because each layer's
// callers act on different distinctions and some codes travel on a wire with fixed values.
// A code enum needs an enumerator kOk (the value-initialized one) and a to_string(Code) found
// by argument-dependent lookup; a layer turns a lower layer's Error into its own at its
// boundary, once (see docs/base.md).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace bypass::base {

// Codes of the OS plumbing in base/ (sockets, fd passing, mappings).
enum class Errc : uint32_t {
  kOk = 0,
  kInvalidArgument,  // bad path, bad size, too many fds for one message, ...
  kIo,               // a system call failed (its errno text is in the message)
  kWouldBlock,       // a non-blocking call could not make progress now (EAGAIN)
  kPeerGone,         // the peer closed its end (EPIPE, ENOTCONN, ECONNRESET on send)
  kConnectionReset,  // recv: the peer closed with our data unread; what it sent before may follow
  kClosed,           // this end's descriptor is not open (EBADF)
  kTruncated,        // a received message was larger than the buffer (MSG_TRUNC)
  kTooManyFds,       // a received message carried more fds than room was given (MSG_CTRUNC)
  kTimeout,          // a deadline passed first
};
std::string_view to_string(Errc code);

template <class Code>
struct Error {
  Code code = Code::kOk;
  std::string message;  // one line naming what failed; starts with the code's name
};

// An Error whose message is "<code name>: <message>" (or just the name).
template <class Code>
Error<Code> make_error(Code code, std::string_view message) {
  std::string text(to_string(code));
  if (!message.empty()) {
    text += ": ";
    text += message;
  }
  return Error<Code>{code, std::move(text)};
}

// "<what>: strerror(errno_value)" under `code`.
std::string errno_text(std::string_view what, int errno_value);
template <class Code>
Error<Code> errno_error(Code code, std::string_view what, int errno_value) {
  return make_error(code, errno_text(what, errno_value));
}

// A lower layer's error under this layer's code, its message kept as the detail.
template <class To, class From>
Error<To> rebrand(To code, const Error<From>& error) {
  return make_error(code, error.message);
}

template <class T, class Code = Errc>
class [[nodiscard]] Result {
 public:
  using ErrorType = Error<Code>;
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}          // NOLINT: implicit by design
  Result(ErrorType error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &std::get<0>(v_); }
  const T* operator->() const { return &std::get<0>(v_); }
  const ErrorType& error() const { return std::get<1>(v_); }
  Code code() const { return ok() ? Code::kOk : error().code; }
  // The error's message, empty when ok.
  std::string_view message() const { return ok() ? std::string_view() : std::string_view(error().message); }

 private:
  std::variant<T, ErrorType> v_;
};

template <class Code>
class [[nodiscard]] Result<void, Code> {
 public:
  using ErrorType = Error<Code>;
  Result() = default;
  Result(ErrorType error) : error_(std::move(error)) {}  // NOLINT
  bool ok() const { return error_.code == Code::kOk; }
  explicit operator bool() const { return ok(); }
  void value() const {}
  const ErrorType& error() const { return error_; }
  Code code() const { return error_.code; }
  std::string_view message() const { return error_.message; }

 private:
  ErrorType error_;
};

}  // namespace bypass::base
