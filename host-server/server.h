// bypassd's accept loop: one session thread per guest.
#pragma once

#include <list>
#include <memory>
#include <thread>

#include "config.h"
#include "session.h"

namespace bypass::host {

std::string default_socket_path();

class Server {
 public:
  explicit Server(ServerConfig config) : config_(std::move(config)) {}
  // Serves until `stop_fd` becomes readable (a signal's self-pipe); returns the exit code.
  int run(int stop_fd);

 private:
  struct Running {
    std::unique_ptr<Session> session;
    std::thread thread;
  };
  void reap(bool all);

  ServerConfig config_;
  std::list<Running> sessions_;
  uint64_t next_id_ = 1;
};

}  // namespace bypass::host
