#include "bypass/memshare/socket_io.h"

#include "bypass/base/fd_passing.h"

namespace bypass::memshare {

Result<void> send_message(int socket, std::span<const std::byte> bytes, std::span<const int> fds) {
  if (fds.size() > kMaxFdsPerMessage) return make_error(Errc::kInvalidArgument, "too many descriptors in one message");
  auto sent = base::send_fds(socket, bytes, fds);
  if (!sent) return from_base(sent.error());
  if (*sent != bytes.size()) return make_error(Errc::kIo, "short send on a seqpacket socket");
  return {};
}

Result<size_t> recv_message(int socket, std::span<std::byte> buffer, std::vector<base::UniqueFd>& fds) {
  auto n = base::recv_fds(socket, buffer, &fds, kMaxFdsPerMessage);
  if (!n) return from_base(n.error());
  if (*n == 0 && !buffer.empty()) return make_error(Errc::kDisconnected, "peer closed the connection");
  return *n;
}

}  // namespace bypass::memshare
