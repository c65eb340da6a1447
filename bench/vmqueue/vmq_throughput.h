// VM-queue throughput: one sender and one receiver domain (two threads, one vmqd process),
// messages of `pages_per_message` pages moved for `duration`. Shared by vmqueue_bench and
// crossover_bench. With a device (vmqd --device), `measure(..., vm = true)` attaches both
// domains through it as a VM's domains do (rings polled, heartbeats), here from processes of
// this machine that map the device file.
#pragma once

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include "bypass/vmqueue/domain.h"

namespace vmq_bench {

using namespace bypass::vmqueue;

struct Figures {
  double pages_per_s = 0;
  double messages_per_s = 0;
  bool ok = false;
};

class Vmqd {
 public:
  Vmqd(const std::string& path, std::vector<std::string> extra = {}, bool device = false)
      : socket_("/tmp/vmq-bench-" + std::to_string(::getpid()) + ".sock") {
    std::vector<std::string> args = {path, "--socket", socket_};
    if (device) {
      device_ = "/dev/shm/vmq-bench-" + std::to_string(::getpid());
      args.insert(args.end(), {"--device", device_});
    }
    args.insert(args.end(), extra.begin(), extra.end());
    std::fflush(nullptr);  // or the child's freopen() flushes our buffered output a second time
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::freopen("/dev/null", "w", stdout);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
  }
  ~Vmqd() {
    ::kill(pid_, SIGTERM);
    int st;
    ::waitpid(pid_, &st, 0);
    if (!device_.empty()) ::unlink(device_.c_str());
  }
  Result<Domain> connect(const std::string& name, QueueOptions o = {}, bool vm = false) const {
    for (int i = 0;; ++i) {
      auto d = Domain::connect(vm ? "ivshmem:" + device_ : socket_, name, o);
      if (d.ok() || i == 200) return d;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

 private:
  std::string socket_;
  std::string device_;
  pid_t pid_;
};

inline Figures measure(const Vmqd& broker, size_t pages_per_message, PageSize size, std::chrono::milliseconds duration,
                       bool vm = false) {
  static std::atomic<int> run{0};
  int r = run++;
  auto tx = broker.connect("tx" + std::to_string(r), {}, vm);
  auto rx = broker.connect("rx" + std::to_string(r), QueueOptions{.capacity = 256}, vm);
  Figures f;
  if (!tx || !rx) return f;
  Result<Identity> rx_id = make_error(Errc::kInvalid);
  std::thread t([&] { rx_id = tx->introduce("rx" + std::to_string(r), std::chrono::seconds(5)); });
  auto tx_id = rx->introduce("tx" + std::to_string(r), std::chrono::seconds(5));
  t.join();
  if (!rx_id || !tx_id) return f;
  std::atomic<bool> done{false};  // sender stores after its last send; receiver loads
  uint64_t received = 0;
  uint64_t received_pages = 0;
  auto start = std::chrono::steady_clock::now();
  std::thread receiver([&] {
    for (;;) {
      auto m = rx->recv(std::chrono::milliseconds(200));
      if (!m) {
        if (done.load(std::memory_order_acquire) && rx->pending() == 0) return;
        continue;
      }
      // Touch the payload so the mapping is real, not just reserved.
      volatile std::byte b = m->pages.data()[0];
      (void)b;
      ++received;
      received_pages += m->pages.count();
    }
  });
  uint64_t sent = 0;
  while (std::chrono::steady_clock::now() - start < duration) {
    auto p = tx->alloc(pages_per_message, size);
    if (!p && p.code() == Errc::kNoPages) {
      // Every page is in the receiver's queue: wait for it to drain some.
      std::this_thread::yield();
      continue;
    }
    if (!p) break;
    p->data()[0] = std::byte{1};
    if (tx->send(rx_id->id, std::move(*p), 1) != Errc::kOk) break;
    ++sent;
  }
  done.store(true, std::memory_order_release);
  receiver.join();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  f.ok = received == sent && sent > 0;
  f.messages_per_s = received / secs;
  f.pages_per_s = received_pages / secs;
  return f;
}

}  // namespace vmq_bench
