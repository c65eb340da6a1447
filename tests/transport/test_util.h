// Helpers shared by the transport tests: deterministic payloads, checksums, child processes.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace bypass::transport::testing {

// The calling thread's context switches so far (it slept, or was put off its CPU): how often a
// sleeper woke, for tests of wake-ups that must not poll.
inline uint64_t thread_switches() {
  std::ifstream in("/proc/thread-self/status");
  uint64_t total = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("voluntary_ctxt_switches:", 0) == 0 || line.rfind("nonvoluntary_ctxt_switches:", 0) == 0)
      total += std::stoull(line.substr(line.find(':') + 1));
  }
  return total;
}

// splitmix64: a fast, decent generator; the same seed gives the same bytes on both sides.
inline uint64_t splitmix(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

inline void fill_pattern(std::span<std::byte> out, uint64_t seed) {
  uint64_t state = seed;
  size_t i = 0;
  for (; i + 8 <= out.size(); i += 8) {
    const uint64_t v = splitmix(state);
    std::memcpy(out.data() + i, &v, 8);
  }
  if (i < out.size()) {
    const uint64_t v = splitmix(state);
    std::memcpy(out.data() + i, &v, out.size() - i);
  }
}

inline std::vector<std::byte> pattern(size_t size, uint64_t seed) {
  std::vector<std::byte> v(size);
  fill_pattern(v, seed);
  return v;
}

// Order-sensitive 64-bit checksum, 8 bytes per step.
inline uint64_t checksum(std::span<const std::byte> data, uint64_t h = 0x6a09e667f3bcc908ull) {
  size_t i = 0;
  for (; i + 8 <= data.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, data.data() + i, 8);
    h = (h ^ w) * 0x100000001b3ull;
    h ^= h >> 29;
  }
  for (; i < data.size(); ++i) h = (h ^ static_cast<uint64_t>(data[i])) * 0x100000001b3ull;
  return h ^ data.size();
}

// A forked child running `body`; its return value becomes the exit status. Killed (SIGKILL)
// and reaped on destruction if still running, so a failing test never leaves it behind.
class ChildProcess {
 public:
  explicit ChildProcess(const std::function<int()>& body) {
    pid_ = ::fork();
    if (pid_ == 0) {
      int rc = 99;
      rc = body();
      ::_exit(rc);
    }
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      wait();
    }
  }
  pid_t pid() const { return pid_; }
  void kill(int sig) { ::kill(pid_, sig); }
  // Exit status, or 128 + signal number.
  int wait() {
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    reaped_ = true;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
};

inline std::span<const std::byte> bytes_of(const std::vector<std::byte>& v) { return {v.data(), v.size()}; }

}  // namespace bypass::transport::testing
