// VM-queue throughput: one sender and one receiver domain (two processes, one vmqd process),
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

// One sender and one receiver domain, each its own process as domains are (two threads of one
// process would share one address space, and every unmap of a message's pages would stop the
// other thread for a TLB shootdown and contend on its mmap lock, which no pair of real domains
// pays). The receiver is a forked child that connects, is introduced, takes messages until an
// end message comes, and writes its counts into a pipe. `batch` > 1: the sender allocates that
// many messages and hands them over with one Domain::send_batch() (the receiver still takes
// them one recv() each).
inline Figures measure(const Vmqd& broker, size_t pages_per_message, PageSize size, std::chrono::milliseconds duration,
                       bool vm = false, size_t batch = 1) {
  static std::atomic<int> run{0};
  const int r = run++;
  const std::string tx_name = "tx" + std::to_string(r), rx_name = "rx" + std::to_string(r);
  constexpr uint32_t kData = 0, kEnd = 1;
  Figures f;
  int counts[2];
  if (::pipe(counts) != 0) return f;
  std::fflush(nullptr);
  const pid_t child = ::fork();
  if (child == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    ::close(counts[0]);
    uint64_t got[2] = {0, 0};  // messages, pages
    auto rx = broker.connect(rx_name, QueueOptions{.capacity = 256}, vm);
    if (rx && rx->introduce(tx_name, std::chrono::seconds(5))) {
      for (;;) {
        auto m = rx->recv(std::chrono::seconds(10));
        if (!m || m->tag == kEnd) break;
        // Touch the payload so the mapping is real, not just reserved.
        volatile std::byte b = m->pages.data()[0];
        (void)b;
        ++got[0];
        got[1] += m->pages.count();
      }
    }
    [[maybe_unused]] ssize_t n = ::write(counts[1], got, sizeof got);
    ::_exit(0);
  }
  ::close(counts[1]);
  auto tx = broker.connect(tx_name, {}, vm);
  auto rx_id = tx ? tx->introduce(rx_name, std::chrono::seconds(5)) : Result<Identity>(make_error(Errc::kInvalid));
  uint64_t sent = 0;
  auto start = std::chrono::steady_clock::now();
  if (rx_id) {
    std::vector<Outgoing> out;
    bool failed = false;
    while (!failed && std::chrono::steady_clock::now() - start < duration) {
      auto p = tx->alloc(pages_per_message, size);
      if (!p && p.code() == Errc::kNoPages) {
        // Every page is in the receiver's queue (or in this batch): wait for it to drain some.
        if (out.empty()) std::this_thread::yield();
      } else if (!p) {
        break;
      } else {
        p->data()[0] = std::byte{1};
        out.push_back(Outgoing{.peer = rx_id->id, .pages = std::move(*p), .length = 1, .tag = kData});
      }
      if ((out.size() < batch && p) || out.empty()) continue;
      const size_t n = out.size() == 1 ? (tx->send(rx_id->id, std::move(out[0].pages), 1) == Errc::kOk ? 1 : 0)
                                       : tx->send_batch(out);
      failed = n != out.size();
      sent += n;
      out.clear();
    }
    if (auto end = tx->alloc(1, PageSize::k4K)) tx->send(rx_id->id, std::move(*end), 0, {.tag = kEnd});
  }
  uint64_t got[2] = {0, 0};
  const bool told = ::read(counts[0], got, sizeof got) == static_cast<ssize_t>(sizeof got);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ::close(counts[0]);
  int status = 0;
  ::waitpid(child, &status, 0);
  f.ok = told && got[0] == sent && sent > 0;
  f.messages_per_s = static_cast<double>(got[0]) / secs;
  f.pages_per_s = static_cast<double>(got[1]) / secs;
  return f;
}

}  // namespace vmq_bench
