// Who may open a session: a policy on the peer's credentials (SO_PEERCRED, SO_PEERGROUPS),
// decided at connect time, before any handshake or worker.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <optional>
#include <set>
#include <string>

#include "bypass/base/unix_socket.h"
#include "bypass/host/config.h"

namespace bypass::host {

class AccessPolicy {
 public:
  // Resolves the names in `config` (users, groups, the socket group). kInvalidArgument naming
  // the first unknown one. The socket group may be absent from the system: then it is ignored.
  static base::Result<AccessPolicy> from_config(const ServerConfig& config);

  // Empty when the peer behind `socket` may open a session, else the one line of refusal both
  // sides report.
  std::string check(int socket, const base::PeerCredentials& cred) const;
  // Whether `uid` may see every session on the control socket (root and bypassd's own uid).
  bool privileged(uid_t uid) const { return uid == 0 || uid == self_; }

  gid_t socket_gid() const { return socket_gid_; }  // (gid_t)-1 when no socket group
  std::string describe() const;                     // for the start-up log line

 private:
  uid_t self_ = 0;
  gid_t socket_gid_ = static_cast<gid_t>(-1);
  std::set<uid_t> uids_;
  std::set<gid_t> gids_;
};

}  // namespace bypass::host
