#include "bypass/base/socket_path.h"

#include <unistd.h>

#include <cstdlib>

namespace bypass::base {

std::string default_socket_dir() {
  const uid_t uid = ::geteuid();
  if (uid == 0) return kSystemSocketDir;
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg != nullptr && *xdg == '/') {
    return std::string(xdg) + "/bypass";
  }
  return "/tmp/bypass-" + std::to_string(static_cast<unsigned>(uid));
}

std::string default_socket_path(std::string_view name) {
  std::string path = default_socket_dir();
  path += '/';
  path += name;
  return path;
}

}  // namespace bypass::base
