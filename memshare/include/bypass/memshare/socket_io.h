// UNIX SOCK_SEQPACKET messages with file descriptors (SCM_RIGHTS), and peer credentials.
// A local helper: the transport library may grow the same thing; this one has no dependency.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "bypass/memshare/error.h"
#include "bypass/memshare/unique_fd.h"

namespace bypass::memshare {

inline constexpr size_t kMaxFdsPerMessage = 4;

// Sends one message (bytes plus up to kMaxFdsPerMessage descriptors). Retries on EINTR.
Result<void> send_message(int socket, std::span<const std::byte> bytes, std::span<const int> fds = {});

// Receives one message into `buffer`; returns its size. Received descriptors are appended to
// `fds` (close-on-exec). A closed peer gives kDisconnected; a message larger than the buffer
// or with too many descriptors gives kProtocol.
Result<size_t> recv_message(int socket, std::span<std::byte> buffer, std::vector<UniqueFd>& fds);

struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};
Result<PeerCredentials> peer_credentials(int socket);

// A listening SOCK_SEQPACKET socket bound to `path` (an existing socket file is replaced).
Result<UniqueFd> listen_unix(const std::string& path, int backlog = 64);
// A connected SOCK_SEQPACKET socket.
Result<UniqueFd> connect_unix(const std::string& path);
// Two connected SOCK_SEQPACKET sockets.
Result<void> seqpacket_pair(UniqueFd& a, UniqueFd& b);

}  // namespace bypass::memshare
