// bypassd's accept loop: one session thread per guest.
#pragma once

#include <deque>
#include <list>
#include <string>
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
  void serve_control(int fd);
  std::string stats_json();

  struct Ended {
    uint64_t id;
    pid_t pid;
    std::string reason;
    uint64_t objects_left;
    uint64_t records;
  };

  ServerConfig config_;
  std::list<Running> sessions_;
  uint64_t next_id_ = 1;
  std::deque<Ended> ended_;  // the most recent sessions that ended, for bypassctl
};

}  // namespace bypass::host
