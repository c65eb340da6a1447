// Where bypass's services put their sockets when nothing is configured: one rule for bypassd,
// vmqd, memshared and the crossover links.
//   root:                      /run/bypass/NAME
//   others, $XDG_RUNTIME_DIR:  $XDG_RUNTIME_DIR/bypass/NAME   (the user's own 0700 directory)
//   others, without it:        /tmp/bypass-UID/NAME           (made 0700 by the server, which
//                              refuses one another user made first: secure_socket_dir)
// A client trusts only a server of its own uid or root.
#pragma once

#include <string>
#include <string_view>

namespace bypass::base {

inline constexpr const char* kSystemSocketDir = "/run/bypass";

// The directory above, for this process's effective uid and environment.
std::string default_socket_dir();
// default_socket_dir() + "/" + name.
std::string default_socket_path(std::string_view name);

}  // namespace bypass::base
