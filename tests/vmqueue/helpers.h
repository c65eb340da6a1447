// Test helpers: a vmqd process per test, huge-page reservation, child processes.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "bypass/vmqueue/domain.h"

namespace vmq_test {

// Physical frame number backing virtual address `addr` in this process, from
// /proc/self/pagemap (needs CAP_SYS_ADMIN to see real PFNs). 0 when not present or hidden.
inline uint64_t page_frame_number(const void* addr) {
  const int fd = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  uint64_t entry = 0;
  const auto page = reinterpret_cast<uintptr_t>(addr) / 4096;
  const bool read = ::pread(fd, &entry, sizeof entry, static_cast<off_t>(page * sizeof entry)) == sizeof entry;
  ::close(fd);
  if (!read || (entry >> 63) == 0) return 0;  // not present
  return entry & ((uint64_t{1} << 55) - 1);
}

// Whether this process can no longer reach [addr, addr + len): every mapping over it (in
// /proc/self/maps) is an inaccessible reservation without a file ("---p", what a domain keeps
// for its next message's pages), or there is none.
inline bool unreachable(const void* addr, size_t len) {
  const auto first = reinterpret_cast<uintptr_t>(addr), end = first + len;
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    uintptr_t lo = 0, hi = 0;
    char perms[5] = {};
    unsigned long long offset = 0;
    char dev[16] = {};
    unsigned long inode = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx %4s %llx %15s %lu", &lo, &hi, perms, &offset, dev, &inode) != 6) continue;
    if (hi <= first || lo >= end) continue;
    if (std::string(perms) != "---p" || inode != 0) return false;
  }
  return true;
}

// `count` pages of `size` from `d`, every 512th byte set from `seed` (looks_filled checks it);
// empty when the allocation failed (the caller's send then fails).
inline bypass::vmqueue::Pages filled(bypass::vmqueue::Domain& d, size_t count, uint8_t seed,
                                     bypass::vmqueue::PageSize size = bypass::vmqueue::PageSize::k4K) {
  auto p = d.alloc(count, size);
  if (!p) return {};
  for (size_t i = 0; i < p->bytes().size(); i += 512) p->data()[i] = std::byte(seed + i / 4096);
  return std::move(*p);
}

inline bool looks_filled(std::span<const std::byte> bytes, uint8_t seed) {
  for (size_t i = 0; i < bytes.size(); i += 512)
    if (bytes[i] != std::byte(seed + i / 4096)) return false;
  return true;
}

inline std::string unique_socket() {
  static std::atomic<int> n{0};
  return "/tmp/vmq-test-" + std::to_string(::getpid()) + "-" + std::to_string(n++) + ".sock";
}

// Runs a program with PR_SET_PDEATHSIG so it cannot outlive a crashed test.
inline pid_t spawn(const std::vector<std::string>& argv, const std::string& stdout_path = "") {
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    if (!stdout_path.empty()) {
      int fd = ::open(stdout_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd >= 0) ::dup2(fd, 1);
    }
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  return pid;
}

// Exit status, or -signal; waits at most `timeout` then kills.
inline int wait_exit(pid_t pid, std::chrono::seconds timeout = std::chrono::seconds(60)) {
  auto end = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  for (;;) {
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (std::chrono::steady_clock::now() > end) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1000;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return -WTERMSIG(status);
}

class BrokerProcess {
 public:
  explicit BrokerProcess(std::vector<std::string> extra = {}, const std::string& stdout_path = "/dev/null")
      : socket_(unique_socket()) {
    std::vector<std::string> argv = {VMQD_PATH, "--socket", socket_};
    argv.insert(argv.end(), extra.begin(), extra.end());
    pid_ = spawn(argv, stdout_path);
  }
  ~BrokerProcess() { stop(); }
  void stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      wait_exit(pid_, std::chrono::seconds(10));
      pid_ = -1;
    }
  }
  void kill_hard() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      wait_exit(pid_);
      pid_ = -1;
    }
  }
  const std::string& socket() const { return socket_; }

  // Connects, retrying while the broker starts.
  bypass::vmqueue::Result<bypass::vmqueue::Domain> connect(const std::string& name,
                                                           bypass::vmqueue::QueueOptions o = {}) const {
    for (int i = 0;; ++i) {
      auto d = bypass::vmqueue::Domain::connect(socket_, name, o);
      if (d.ok() || d.code() != bypass::vmqueue::Errc::kBrokerLost || i == 200) return d;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

 private:
  std::string socket_;
  pid_t pid_ = -1;
};

// Makes sure `pages` 2 MiB huge pages are free for this test, restoring the setting after.
class HugePageReserve {
 public:
  explicit HugePageReserve(long pages) {
    before_ = read("/proc/sys/vm/nr_hugepages");
    long free_now = meminfo("HugePages_Free:");
    if (before_ < 0 || free_now >= pages) return;
    std::ofstream("/proc/sys/vm/nr_hugepages") << (before_ + pages - free_now);
    changed_ = true;
  }
  ~HugePageReserve() {
    if (changed_) std::ofstream("/proc/sys/vm/nr_hugepages") << before_;
  }

 private:
  static long read(const char* path) {
    std::ifstream f(path);
    long v = -1;
    f >> v;
    return v;
  }
  static long meminfo(const std::string& key) {
    std::ifstream f("/proc/meminfo");
    std::string k;
    long v;
    std::string unit;
    while (f >> k >> v) {
      if (k == key) return v;
      std::getline(f, unit);
    }
    return 0;
  }
  long before_ = -1;
  bool changed_ = false;
};

}  // namespace vmq_test
