// bypassctl: asks a running bypassd for its sessions and statistics.
//   bypassctl [--control PATH] stats      JSON: live sessions, recently ended sessions, totals
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstring>
#include <string>

#include "bypass/host/server.h"

int main(int argc, char** argv) {
  std::string control = bypass::host::default_socket_path() + ".ctl";
  std::string command = "stats";
  CLI::App app{"bypassctl: reads a running bypassd's sessions and statistics (JSON on stdout)."};
  app.add_option("--control", control, "bypassd's control socket")->capture_default_str();
  app.add_option("command", command, "stats")->check(CLI::IsMember({"stats"}));
  CLI11_PARSE(app, argc, argv);

  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (control.size() >= sizeof(addr.sun_path)) {
    std::fprintf(stderr, "bypassctl: control path too long\n");
    return 2;
  }
  std::memcpy(addr.sun_path, control.c_str(), control.size() + 1);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    std::fprintf(stderr, "bypassctl: cannot reach bypassd at %s: %s\n", control.c_str(), std::strerror(errno));
    return 1;
  }
  std::string req = command + "\n";
  if (send(fd, req.data(), req.size(), MSG_NOSIGNAL) < 0) {
    std::fprintf(stderr, "bypassctl: bypassd at %s closed the connection: %s\n", control.c_str(), std::strerror(errno));
    return 1;
  }
  std::string out;
  char buf[4096];
  pollfd p{fd, POLLIN, 0};
  while (poll(&p, 1, 2000) == 1) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  if (out.empty()) {
    std::fprintf(stderr, "bypassctl: no answer from bypassd\n");
    return 1;
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}
