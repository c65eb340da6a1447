// bypassctl: asks a running bypassd for its sessions and statistics.
//   bypassctl [--control PATH] stats      JSON: live sessions, recently ended sessions, totals
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstring>
#include <string>

#include "bypass/base/socket_path.h"
#include "bypass/base/unix_socket.h"
#include "bypass/host/server.h"
#include "bypass/transport/session.h"

int main(int argc, char** argv) {
  std::string control = bypass::base::default_socket_path(bypass::transport::kSocketName) + ".ctl";
  std::string command = "stats";
  CLI::App app{"bypassctl: reads a running bypassd's sessions and statistics (JSON on stdout)."};
  app.add_option("--control", control, "bypassd's control socket")->capture_default_str();
  app.add_option("command", command, "stats")->check(CLI::IsMember({"stats"}));
  CLI11_PARSE(app, argc, argv);

  if (auto address = bypass::base::unix_address(control); !address) {
    std::fprintf(stderr, "bypassctl: control path: %s\n", address.error().message.c_str());
    return 2;
  }
  auto connected = bypass::base::connect_unix(control, SOCK_STREAM);
  if (!connected) {
    std::fprintf(stderr, "bypassctl: cannot reach bypassd at %s: %s\n", control.c_str(),
                 connected.error().message.c_str());
    return 1;
  }
  const int fd = connected->get();
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
  connected->reset();
  if (out.empty()) {
    std::fprintf(stderr, "bypassctl: no answer from bypassd\n");
    return 1;
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}
