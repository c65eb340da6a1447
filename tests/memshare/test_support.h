// Helpers for memshare tests: a real memshared daemon in a temporary directory, forked child
// domains, and a pipe to pass small values between processes.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>

#include "bypass/memshare/client.h"

namespace bypass::memshare::test {

// A unidirectional pipe for trivially copyable values, with a timeout so a broken peer fails
// the test instead of hanging it.
class Pipe {
 public:
  Pipe() {
    if (::pipe2(fds_, O_CLOEXEC) != 0) std::abort();
  }
  ~Pipe() {
    close_read();
    close_write();
  }
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;

  template <typename T>
  bool send(const T& value) {
    return ::write(fds_[1], &value, sizeof value) == static_cast<ssize_t>(sizeof value);
  }
  template <typename T>
  bool recv(T& value, int timeout_ms = 10000) {
    size_t got = 0;
    auto* out = reinterpret_cast<char*>(&value);
    while (got < sizeof value) {
      pollfd pfd{fds_[0], POLLIN, 0};
      if (::poll(&pfd, 1, timeout_ms) <= 0) return false;
      const ssize_t n = ::read(fds_[0], out + got, sizeof value - got);
      if (n <= 0) return false;
      got += static_cast<size_t>(n);
    }
    return true;
  }
  int write_fd() const { return fds_[1]; }
  void close_read() {
    if (fds_[0] >= 0) ::close(fds_[0]);
    fds_[0] = -1;
  }
  void close_write() {
    if (fds_[1] >= 0) ::close(fds_[1]);
    fds_[1] = -1;
  }

 private:
  int fds_[2] = {-1, -1};
};

// A forked child process running `body`; its return value is the exit status. The parent must
// not have other threads running (the tests that fork keep their process single-threaded).
class Child {
 public:
  explicit Child(const std::function<int()>& body) {
    std::fflush(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      int code = 99;
      code = body();
      std::fflush(nullptr);
      ::_exit(code);
    }
  }
  ~Child() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  pid_t pid() const { return pid_; }
  // Waits for the child; returns the raw wait status (-1 on timeout, then the child is killed).
  int wait(int timeout_ms = 20000) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    int status = 0;
    for (;;) {
      const pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) {
        reaped_ = true;
        return status;
      }
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        reaped_ = true;
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
  void kill_now() {
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    reaped_ = true;
  }

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
};

inline bool exited_ok(int status) { return status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0; }

// The standalone daemon on a socket in a fresh temporary directory.
class Daemon {
 public:
  Daemon() {
    char dir_template[] = "/tmp/memshare-test-XXXXXX";
    dir_ = ::mkdtemp(dir_template);
    socket_ = dir_ + "/memshare.sock";
    Pipe ready;
    std::fflush(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // never outlive a crashed test
      ::dup2(ready.write_fd(), STDOUT_FILENO);
      const char* argv[] = {MEMSHARED_PATH, "--socket", socket_.c_str(), nullptr};
      ::execv(MEMSHARED_PATH, const_cast<char* const*>(argv));
      ::_exit(127);
    }
    ready.close_write();
    char line[6] = {};
    ok_ = ready.recv(line) && std::memcmp(line, "ready\n", 6) == 0;
  }
  ~Daemon() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  bool ok() const { return ok_; }
  const std::string& socket() const { return socket_; }
  pid_t pid() const { return pid_; }
  bool alive() const { return pid_ > 0 && ::kill(pid_, 0) == 0 && ::waitpid(pid_, nullptr, WNOHANG) == 0; }

 private:
  std::string dir_;
  std::string socket_;
  pid_t pid_ = -1;
  bool ok_ = false;
};

// Restores the default SIGSEGV disposition with the raw system call, bypassing any
// sanitizer's interception of sigaction/signal, so a fault really kills the process.
inline void default_segv_handler() {
  struct KernelSigaction {
    void (*handler)(int);
    unsigned long flags;
    void (*restorer)();
    unsigned long mask;
  } action{SIG_DFL, 0, nullptr, 0};
  ::syscall(SYS_rt_sigaction, SIGSEGV, &action, nullptr, sizeof(unsigned long));
}

// Fills `n` bytes with a pattern that depends on `seed` and the position.
inline void fill_pattern(std::byte* p, size_t n, uint32_t seed) {
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    p[i] = static_cast<std::byte>(x >> 24);
  }
}

// Test-name suffix for a tracking method parameter.
inline std::string method_suffix(TrackingMethod method) {
  switch (method) {
    case TrackingMethod::kUffdAsync:
      return "uffd";
    case TrackingMethod::kMprotect:
      return "mprotect";
    case TrackingMethod::kHash:
      return "hash";
    case TrackingMethod::kAdaptive:
      return "adaptive";
    case TrackingMethod::kAuto:
      break;
  }
  return "auto";
}
template <typename ParamInfo>
std::string method_param_name(const ParamInfo& param_info) {
  return method_suffix(param_info.param);
}

}  // namespace bypass::memshare::test
