#include "bypass/host/access.h"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <vector>

namespace bypass::host {

namespace {

template <class Id>
bool parse_number(const std::string& s, Id* out) {
  unsigned long v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size()) return false;
  *out = static_cast<Id>(v);
  return true;
}

bool resolve_user(const std::string& s, uid_t* out) {
  if (parse_number(s, out)) return true;
  const passwd* p = getpwnam(s.c_str());
  if (!p) return false;
  *out = p->pw_uid;
  return true;
}

bool resolve_group(const std::string& s, gid_t* out) {
  if (parse_number(s, out)) return true;
  const group* g = getgrnam(s.c_str());
  if (!g) return false;
  *out = g->gr_gid;
  return true;
}

// The peer's supplementary groups (Linux 4.13+), primary group first.
std::vector<gid_t> peer_groups(int socket, gid_t primary) {
  std::vector<gid_t> groups(64);
  socklen_t len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
  int r = getsockopt(socket, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len);
  if (r != 0 && errno == ERANGE) {  // len now says how much room the list needs
    groups.resize(len / sizeof(gid_t));
    r = getsockopt(socket, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len);
  }
  if (r != 0) len = 0;
  groups.resize(len / sizeof(gid_t));
  groups.insert(groups.begin(), primary);
  return groups;
}

}  // namespace

base::Result<AccessPolicy> AccessPolicy::from_config(const ServerConfig& config) {
  AccessPolicy p;
  p.self_ = geteuid();
  for (const std::string& u : config.allow_users) {
    uid_t uid = 0;
    if (!resolve_user(u, &uid))
      return base::make_error(base::Errc::kInvalidArgument, "--allow-user " + u + ": no such user");
    p.uids_.insert(uid);
  }
  for (const std::string& g : config.allow_groups) {
    gid_t gid = 0;
    if (!resolve_group(g, &gid)) {
      return base::make_error(base::Errc::kInvalidArgument, "--allow-group " + g + ": no such group");
    }
    p.gids_.insert(gid);
  }
  if (!config.socket_group.empty() && resolve_group(config.socket_group, &p.socket_gid_)) p.gids_.insert(p.socket_gid_);
  return p;
}

std::string AccessPolicy::check(int socket, const base::PeerCredentials& cred) const {
  if (cred.uid == static_cast<uid_t>(-1)) return "bypassd refused the connection: the peer's credentials are unknown";
  if (privileged(cred.uid) || uids_.count(cred.uid)) return {};
  if (!gids_.empty())
    for (gid_t g : peer_groups(socket, cred.gid))
      if (gids_.count(g)) return {};
  return "bypassd refused uid " + std::to_string(cred.uid) + " (pid " + std::to_string(cred.pid) +
         "): not allowed by its access policy (" + describe() + ")";
}

std::string AccessPolicy::describe() const {
  std::string s = "allowed: root, uid " + std::to_string(self_);
  for (uid_t u : uids_) s += ", uid " + std::to_string(u);
  for (gid_t g : gids_) s += ", gid " + std::to_string(g);
  return s;
}

}  // namespace bypass::host
