#include "server.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <sys/socket.h>
#include <sys/un.h>

#include <cstdlib>
#include <cstring>
#include <sstream>

#include "bypass/transport/session.h"

namespace bypass::host {

std::string default_socket_path() {
  if (geteuid() == 0) return "/run/bypass/bypassd.sock";
  const char* xdg = std::getenv("XDG_RUNTIME_DIR");
  return std::string(xdg && *xdg ? xdg : "/tmp") + "/bypass/bypassd.sock";
}

void Server::reap(bool all) {
  // Shutdown: every session is asked to stop before any is joined, so they wind down together.
  if (all)
    for (auto& r : sessions_) r.session->stop();
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    if (all || it->session->finished()) {
      it->thread.join();
      const Session& s = *it->session;
      ended_.push_back(Ended{s.id(), s.peer_pid(), s.end_reason(), s.object_count(), s.stats().records.load()});
      if (ended_.size() > 64) ended_.pop_front();
      it = sessions_.erase(it);
    } else {
      ++it;
    }
  }
}

namespace {

std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    out += c;
  }
  return out;
}

int listen_control(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    close(fd);
    return -1;
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  unlink(path.c_str());
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(fd, 8) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

std::string Server::stats_json() {
  std::ostringstream o;
  uint64_t total = 0;
  o << "{\"sessions\": [";
  bool first = true;
  for (auto& r : sessions_) {
    const Session& s = *r.session;
    if (s.finished()) continue;
    total += s.object_count();
    o << (first ? "" : ", ") << "{\"id\": " << s.id() << ", \"pid\": " << s.peer_pid()
      << ", \"objects\": " << s.object_count() << ", \"records\": " << s.stats().records.load()
      << ", \"bytes\": " << s.stats().bytes.load() << ", \"replies\": " << s.stats().replies.load()
      << ", \"memory_bytes\": " << s.stats().memory_bytes.load() << "}";
    first = false;
  }
  o << "], \"ended\": [";
  first = true;
  for (auto& e : ended_) {
    o << (first ? "" : ", ") << "{\"id\": " << e.id << ", \"pid\": " << e.pid << ", \"objects\": " << e.objects_left
      << ", \"records\": " << e.records << ", \"reason\": \"" << json_escape(e.reason) << "\"}";
    first = false;
  }
  o << "], \"live_objects\": " << total << "}\n";
  return o.str();
}

void Server::serve_control(int lfd) {
  int fd = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
  if (fd < 0) return;
  // One request line, one answer; bypassctl is the client. A slow client cannot stall guests
  // for long: the read waits at most 200 ms.
  pollfd p{fd, POLLIN, 0};
  char buf[64] = {};
  if (poll(&p, 1, 200) == 1) {
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    buf[n > 0 ? n : 0] = 0;
  }
  reap(false);
  std::string reply = std::strncmp(buf, "stats", 5) == 0 ? stats_json() : std::string("{\"error\": \"unknown request\"}\n");
  [[maybe_unused]] auto w = write(fd, reply.data(), reply.size());
  close(fd);
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
  const std::string control_path = config_.control_path.empty() ? config_.socket_path + ".ctl" : config_.control_path;
  int control_fd = listen_control(control_path);
  if (control_fd < 0) spdlog::warn("no control socket at {}: bypassctl will not reach this server", control_path);
  const transport::Hello hello{wire::kProtocolVersion, wire::kSchemaHash, "bypassd"};
  transport::SessionOptions opts;
  opts.ring_bytes = config_.ring_bytes;
  while (true) {
    pollfd fds[3] = {{listener->fd(), POLLIN, 0}, {stop_fd, POLLIN, 0}, {control_fd, POLLIN, 0}};
    int n = poll(fds, control_fd >= 0 ? 3 : 2, 500);
    if (control_fd >= 0 && (fds[2].revents & POLLIN)) serve_control(control_fd);
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
  if (control_fd >= 0) {
    close(control_fd);
    unlink(control_path.c_str());
  }
  return 0;
}

}  // namespace bypass::host
