// memshare's messages on its SOCK_SEQPACKET socket: bytes plus at most kMaxFdsPerMessage fds,
// sent and received with base's fd passing (bypass/base/fd_passing.h) and reported in
// memshare's error codes. Sockets themselves come from bypass/base/unix_socket.h.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "bypass/base/unique_fd.h"
#include "bypass/memshare/error.h"

namespace bypass::memshare {

// No memshare message carries more; a peer that attaches more is malformed.
inline constexpr size_t kMaxFdsPerMessage = 4;

// Sends one message (bytes plus up to kMaxFdsPerMessage descriptors). Retries on EINTR. A
// closed peer gives kDisconnected.
Result<void> send_message(int socket, std::span<const std::byte> bytes, std::span<const int> fds = {});

// Receives one message into `buffer`; returns its size. Received descriptors are appended to
// `fds` (close-on-exec). A closed peer gives kDisconnected; a message larger than the buffer
// or with too many descriptors gives kProtocol.
Result<size_t> recv_message(int socket, std::span<std::byte> buffer, std::vector<base::UniqueFd>& fds);

}  // namespace bypass::memshare
