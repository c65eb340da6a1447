// File descriptors sent with data over a UNIX socket (SCM_RIGHTS): the one implementation the
// transport handshake, memshare's service protocol and the VM-queue / crossover control
// sockets use.
//
// Rules every caller gets for free: MSG_NOSIGNAL (a dead peer is an error code, not a
// SIGPIPE), EINTR retried, received fds close-on-exec and owned by a UniqueFd before any error
// is returned (a truncated or malformed message leaks nothing), and truncation of the data or
// of the control message reported instead of silently dropped.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "bypass/base/result.h"
#include "bypass/base/unique_fd.h"

namespace bypass::base {

// The kernel's per-message maximum (SCM_MAX_FD).
inline constexpr size_t kMaxFdsPerMessage = 253;

// One sendmsg() of `data` with `fds` attached. `flags` adds to MSG_NOSIGNAL (e.g. MSG_DONTWAIT).
// Returns the bytes sent (short only on stream sockets). Errors: kInvalidArgument (more than
// kMaxFdsPerMessage fds), kWouldBlock, kPeerGone (EPIPE, ECONNRESET, ENOTCONN), kClosed (EBADF),
// kIo (anything else).
[[nodiscard]] Result<size_t> send_fds(int socket, std::span<const std::byte> data, std::span<const int> fds,
                                      int flags = 0);

// One recvmsg() into `data`; every fd that arrived is appended to *fds (closed at once when fds
// is null), also when an error is returned. Room is made for `max_fds` fds: a message with more
// gives kTooManyFds. Returns the bytes received; 0 is the end of a stream or an empty datagram,
// which the caller tells apart. Errors: kWouldBlock, kConnectionReset, kPeerGone (ENOTCONN),
// kClosed (EBADF), kTruncated (data larger than `data`), kTooManyFds, kIo.
[[nodiscard]] Result<size_t> recv_fds(int socket, std::span<std::byte> data, std::vector<UniqueFd>* fds,
                                      size_t max_fds = kMaxFdsPerMessage, int flags = 0);

// Stream sockets: sends all of `data` (blocking socket), the fds with the first byte.
[[nodiscard]] Result<void> send_all_fds(int socket, std::span<const std::byte> data, std::span<const int> fds);
// Stream sockets: receives exactly data.size() bytes (blocking socket), fds as recv_fds. The
// end of the stream before that is kPeerGone.
[[nodiscard]] Result<void> recv_exact_fds(int socket, std::span<std::byte> data, std::vector<UniqueFd>* fds,
                                          size_t max_fds = kMaxFdsPerMessage);

}  // namespace bypass::base
