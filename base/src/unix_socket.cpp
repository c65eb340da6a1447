#include "bypass/base/unix_socket.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <filesystem>

#include "bypass/base/text.h"

namespace bypass::base {

Result<UnixAddress> unix_address(std::string_view path) {
  if (path.empty() || path.size() > kMaxUnixPathBytes) {
    return make_error(Errc::kInvalidArgument, "invalid UNIX socket path '" + printable(path, 200) + "' (1 to " +
                                                  std::to_string(kMaxUnixPathBytes) + " bytes, not " +
                                                  std::to_string(path.size()) + ")");
  }
  UnixAddress out;
  out.addr.sun_family = AF_UNIX;
  std::memcpy(out.addr.sun_path, path.data(), path.size());
  if (path[0] == '@') {
    out.addr.sun_path[0] = '\0';  // abstract namespace: no file, the length says where it ends
    out.length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  } else {
    out.path = std::string(path);
    out.length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
  }
  return out;
}

Result<UniqueFd> unix_socket(int type) {
  UniqueFd fd(::socket(AF_UNIX, type | SOCK_CLOEXEC, 0));
  if (!fd) return errno_error(Errc::kIo, "socket", errno);
  return fd;
}

Result<UniqueFd> listen_unix(std::string_view path, int type, int backlog) {
  auto addr = unix_address(path);
  if (!addr) return addr.error();
  auto fd = unix_socket(type);
  if (!fd) return fd.error();
  if (!addr->path.empty()) ::unlink(addr->path.c_str());
  if (::bind(fd->get(), addr->sockaddr_ptr(), addr->length) != 0) {
    return errno_error(Errc::kIo, "bind " + printable(path, 200), errno);
  }
  if (::listen(fd->get(), backlog) != 0) return errno_error(Errc::kIo, "listen " + printable(path, 200), errno);
  return std::move(fd).value();
}

Result<UniqueFd> connect_unix(std::string_view path, int type) {
  auto addr = unix_address(path);
  if (!addr) return addr.error();
  auto fd = unix_socket(type);
  if (!fd) return fd.error();
  for (;;) {
    if (::connect(fd->get(), addr->sockaddr_ptr(), addr->length) == 0) break;
    if (errno == EINTR) continue;
    return errno_error(Errc::kIo, "connect " + printable(path, 200), errno);
  }
  return std::move(fd).value();
}

Result<SocketPair> socket_pair(int type) {
  int fds[2];
  if (::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, fds) != 0) return errno_error(Errc::kIo, "socketpair", errno);
  return SocketPair{UniqueFd(fds[0]), UniqueFd(fds[1])};
}

Result<PeerCredentials> peer_credentials(int socket) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(socket, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return errno_error(Errc::kIo, "SO_PEERCRED", errno);
  }
  return PeerCredentials{cred.pid, cred.uid, cred.gid};
}

Result<void> secure_socket_dir(const std::string& socket_path, mode_t mode) {
  const std::filesystem::path parent = std::filesystem::path(socket_path).parent_path();
  if (parent.empty()) return {};
  const uid_t me = ::geteuid();
  if (::mkdir(parent.c_str(), mode) == 0) {
    // mkdir honours the umask; the mode asked for is what we want.
    if (::chmod(parent.c_str(), mode) != 0) {
      return errno_error(Errc::kIo, "cannot set the mode of " + parent.string(), errno);
    }
    return {};
  }
  if (errno == ENOENT) {
    std::error_code ec;
    std::filesystem::create_directories(parent.parent_path(), ec);
    if (!ec && ::mkdir(parent.c_str(), mode) == 0 && ::chmod(parent.c_str(), mode) == 0) return {};
  }
  struct stat st {};
  if (::lstat(parent.c_str(), &st) != 0) return errno_error(Errc::kIo, "cannot create " + parent.string(), errno);
  if (!S_ISDIR(st.st_mode)) return make_error(Errc::kInvalidArgument, parent.string() + " is not a directory");
  if (st.st_uid != me && st.st_uid != 0) {
    return make_error(Errc::kInvalidArgument,
                      parent.string() + " belongs to uid " + std::to_string(st.st_uid) + ", not to us (uid " +
                          std::to_string(me) +
                          ") or root: another user may have made it to serve our clients; refusing to listen there");
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (st.st_mode & S_ISVTX) == 0) {
    char mode_text[8];
    std::snprintf(mode_text, sizeof mode_text, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return make_error(Errc::kInvalidArgument, parent.string() + " is writable by others (mode " + mode_text +
                                                  ") without the sticky bit: anyone could replace the socket; "
                                                  "refusing to listen there");
  }
  return {};
}

}  // namespace bypass::base
