// UNIX-domain sockets on a path: the one place a sockaddr_un is filled (with the length check
// sun_path needs), plus the socket-directory check servers run before listening and the
// peer's kernel credentials.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#include <string>
#include <string_view>

#include "bypass/base/result.h"
#include "bypass/base/unique_fd.h"

namespace bypass::base {

// A filled sockaddr_un. A path starting with '@' names the abstract namespace (no file).
struct UnixAddress {
  sockaddr_un addr{};
  socklen_t length = 0;  // what bind()/connect() take: the family plus the used part of sun_path
  std::string path;      // the filesystem path; empty for an abstract name

  const sockaddr* sockaddr_ptr() const { return reinterpret_cast<const sockaddr*>(&addr); }
};

// The longest path sun_path holds with its terminating NUL.
inline constexpr size_t kMaxUnixPathBytes = sizeof(sockaddr_un::sun_path) - 1;

// kInvalidArgument for an empty path or one longer than kMaxUnixPathBytes (the message names
// the path, shown printable, and the limit): never truncated into someone else's socket.
[[nodiscard]] Result<UnixAddress> unix_address(std::string_view path);

// socket(AF_UNIX, type | SOCK_CLOEXEC). `type`: SOCK_STREAM or SOCK_SEQPACKET, may add SOCK_NONBLOCK.
[[nodiscard]] Result<UniqueFd> unix_socket(int type);

// A listening socket bound to `path`; an existing file there is replaced (unlinked first). For
// a server that must not replace a live peer's socket, see transport::Listener.
[[nodiscard]] Result<UniqueFd> listen_unix(std::string_view path, int type, int backlog = 64);

// A socket connected to `path` (EINTR retried; a full backlog is an error, not a wait).
[[nodiscard]] Result<UniqueFd> connect_unix(std::string_view path, int type);

// A connected pair (close-on-exec; `type` as unix_socket).
struct SocketPair {
  UniqueFd first;
  UniqueFd second;
};
[[nodiscard]] Result<SocketPair> socket_pair(int type);

// SO_PEERCRED of a connected UNIX socket: who the kernel says the peer is, not what it claims.
struct PeerCredentials {
  pid_t pid = -1;
  uid_t uid = static_cast<uid_t>(-1);
  gid_t gid = static_cast<gid_t>(-1);
};
[[nodiscard]] Result<PeerCredentials> peer_credentials(int socket);

// Makes the socket's directory (mode `mode`, parents as needed) or checks the one there: it must
// be ours or root's and not writable by others without the sticky bit, so nobody else can put a
// socket of theirs where our clients look. The error names the directory and what is wrong.
[[nodiscard]] Result<void> secure_socket_dir(const std::string& socket_path, mode_t mode);

}  // namespace bypass::base
