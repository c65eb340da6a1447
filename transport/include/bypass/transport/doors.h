// Connection set-up off an event loop. A daemon whose one thread serves every peer cannot wait
// there for a new client's handshake and first request: a client that connects and says nothing
// would hold up every peer for the whole handshake deadline. Doors runs each new connection's
// set-up on a thread of its own, at most `limit` at once, and hands what a set-up produced to the
// event loop: fd() turns readable, take() returns it. The event loop alone touches its state; a
// set-up sees only its socket.
//
// Used by vmqd (VM-queue domains) and bypass-xover (its control socket).
#pragma once

#include <atomic>
#include <cstddef>
#include <deque>
#include <functional>
#include <list>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "bypass/base/result.h"
#include "bypass/base/unique_fd.h"
#include "bypass/transport/kick.h"

namespace bypass::transport {

template <class Arrival>
class Doors {
 public:
  // A connection's set-up, on its own thread: nullopt when it came to nothing (it logs why).
  using Setup = std::function<std::optional<Arrival>(base::UniqueFd)>;

  Doors() = default;
  Doors(const Doors&) = delete;
  Doors& operator=(const Doors&) = delete;
  ~Doors() { reap(true); }  // the set-ups end by their own deadlines

  base::Result<void> start(size_t limit) {
    auto kick = Kick::create();
    if (!kick) return kick.error();
    kick_ = std::move(kick).value();
    limit_ = limit;
    return {};
  }

  // Readable while arrivals wait for take().
  int fd() const { return kick_.fd(); }

  // Whether `limit` set-ups are running: the caller then refuses the connection
  // (transport::reject_connection) instead of opening a door for it.
  bool full() {
    reap(false);
    return doors_.size() >= limit_;
  }
  // Runs `setup` on a thread of its own (check full() first).
  void open(base::UniqueFd socket, Setup setup) {
    Door& door = doors_.emplace_back();
    door.thread = std::thread([this, &door, fd = std::move(socket), setup = std::move(setup)]() mutable {
      if (std::optional<Arrival> got = setup(std::move(fd))) {
        {
          std::lock_guard lock(mu_);
          arrivals_.push_back(std::move(*got));
        }
        kick_.signal();
      }
      door.done.store(true, std::memory_order_release);
    });
  }

  // What the set-ups produced since the last call, oldest first.
  std::deque<Arrival> take() {
    kick_.drain();
    std::deque<Arrival> ready;
    std::lock_guard lock(mu_);
    ready.swap(arrivals_);
    return ready;
  }

  size_t running() {
    reap(false);
    return doors_.size();
  }

 private:
  struct Door {
    std::thread thread;
    std::atomic<bool> done{false};
  };

  // Joins the set-up threads that finished (all of them, waiting, with `all`).
  void reap(bool all) {
    for (auto it = doors_.begin(); it != doors_.end();) {
      if (!all && !it->done.load(std::memory_order_acquire)) {
        ++it;
        continue;
      }
      it->thread.join();
      it = doors_.erase(it);
    }
  }

  size_t limit_ = 0;
  Kick kick_;
  std::list<Door> doors_;  // the event loop's
  std::mutex mu_;
  std::deque<Arrival> arrivals_;  // guarded by mu_
};

}  // namespace bypass::transport
