#include "server.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdlib>

#include "bypass/transport/session.h"

namespace bypass::host {

std::string default_socket_path() {
  if (geteuid() == 0) return "/run/bypass/bypassd.sock";
  const char* xdg = std::getenv("XDG_RUNTIME_DIR");
  return std::string(xdg && *xdg ? xdg : "/tmp") + "/bypass/bypassd.sock";
}

void Server::reap(bool all) {
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    if (all) it->session->stop();
    if (all || it->session->finished()) {
      it->thread.join();
      it = sessions_.erase(it);
    } else {
      ++it;
    }
  }
}

int Server::run(int stop_fd) {
  std::string error;
  auto listener = transport::Listener::listen(config_.socket_path, &error);
  if (!listener) {
    spdlog::error("cannot listen on {}: {}", config_.socket_path, error);
    return 1;
  }
  spdlog::info("bypassd listening on unix:{} (protocol {}, schema {:016x})", listener->path(), wire::kProtocolVersion,
               wire::kSchemaHash);
  const transport::Hello hello{wire::kProtocolVersion, wire::kSchemaHash, "bypassd"};
  transport::SessionOptions opts;
  opts.ring_bytes = config_.ring_bytes;
  while (true) {
    pollfd fds[2] = {{listener->fd(), POLLIN, 0}, {stop_fd, POLLIN, 0}};
    int n = poll(fds, 2, 500);
    reap(false);
    if (n < 0 && errno != EINTR) break;
    if (fds[1].revents) {
      spdlog::info("bypassd: shutting down, {} sessions open", sessions_.size());
      break;
    }
    if (!(fds[0].revents & POLLIN)) continue;
    auto channel = listener->accept(hello, opts, &error, transport::deadline_after(std::chrono::seconds(2)));
    if (!channel) {
      spdlog::warn("refused a guest: {}", error);
      continue;
    }
    if (sessions_.size() >= config_.max_sessions) {
      spdlog::warn("refused a guest (pid {}): {} sessions open, the limit", channel->peer_pid(), sessions_.size());
      continue;
    }
    auto session = std::make_unique<Session>(next_id_++, std::move(*channel), config_);
    Session* raw = session.get();
    sessions_.push_back(Running{std::move(session), std::thread([raw] { raw->run(); })});
  }
  reap(true);
  return 0;
}

}  // namespace bypass::host
