// Two-process transport benchmark: a guest (this process) and a host (a forked child) joined
// by a real session (memfd rings, UNIX socket). Measures
//   - 64-byte messages per second through the command ring (default spin policy),
//   - the round-trip time of a one-message request/reply (64 bytes each way) with spinning
//     (the two processes on separate CPUs), and with futex sleeps only (no spinning), both on
//     one CPU and on separate CPUs,
//   - for scale, the same round trip over a pair of pipes (the kernel's own blocking IPC).
//
//   transport_bench [--json] [--runs N] [--messages N] [--round-trips N] [--pin]
//                   [--only throughput|spin|futex]
//
// With --json the last line is exactly one JSON object:
//   {"msgs_per_s": ..., "rtt_spin_us": ..., "rtt_futex_us": ...}
// with medians over the runs; rtt_futex_us is the one-CPU figure (see docs/transport.md for why the
// separate-CPU figure on a VM is mostly the hypervisor waking a halted vCPU).
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "bypass/base/unix_socket.h"
#include "bypass/transport/session.h"

namespace {

using namespace bypass::transport;

// Control kinds understood by the host child.
constexpr uint32_t kData = 1;      // count it
constexpr uint32_t kFlush = 2;     // reply with the number of kData seen since the last flush
constexpr uint32_t kPing = 3;      // echo back at once
constexpr uint32_t kSetup = 4;     // payload: Setup; acknowledged
constexpr uint32_t kShutdown = 5;  // exit

// How both processes should run the next phase.
struct Setup {
  uint32_t max_spins;
  int32_t host_cpu;  // -1: any CPU
};

struct Options {
  bool json = false;
  bool pin = false;
  int runs = 5;
  uint64_t messages = 10'000'000;
  uint64_t round_trips = 100'000;
  bool throughput = true, spin = true, futex = true;  // --only PHASE keeps one
};

cpu_set_t g_all_cpus;  // the affinity we started with

void run_on(int cpu) {
  if (cpu < 0) {
    (void)sched_setaffinity(0, sizeof g_all_cpus, &g_all_cpus);
    return;
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  (void)sched_setaffinity(0, sizeof set, &set);
}

int host_main(Channel& ch) {
  Message m;
  uint64_t count = 0;
  for (;;) {
    const Status st = ch.recv(m);
    if (st != Status::kOk) return st == Status::kClosed ? 0 : 1;
    switch (m.kind) {
      case kData:
        ++count;
        break;
      case kFlush:
        if (ch.send(kFlush, std::as_bytes(std::span(&count, 1))) != Status::kOk) return 1;
        count = 0;
        break;
      case kPing:
        if (ch.send(kPing, m.payload) != Status::kOk) return 1;
        break;
      case kSetup: {
        Setup s{};
        if (m.payload.size() != sizeof s) return 2;
        std::memcpy(&s, m.payload.data(), sizeof s);
        ch.set_spin(s.max_spins);
        run_on(s.host_cpu);
        if (ch.send(kSetup, {}) != Status::kOk) return 1;
        break;
      }
      case kShutdown:
        return 0;
      default:
        return 2;
    }
  }
}

bool setup_both(Channel& ch, uint32_t spins, int guest_cpu, int host_cpu) {
  ch.set_spin(spins);
  run_on(guest_cpu);
  const Setup s{spins, host_cpu};
  Message m;
  return ch.send(kSetup, std::as_bytes(std::span(&s, 1))) == Status::kOk && ch.recv(m) == Status::kOk &&
         m.kind == kSetup;
}

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// 64-byte messages guest -> host as fast as they go; the flush reply marks the end.
std::optional<double> measure_throughput(Channel& ch, uint64_t messages) {
  std::byte payload[64] = {};
  Message m;
  const auto start = Clock::now();
  for (uint64_t i = 0; i < messages; ++i) {
    std::memcpy(payload, &i, sizeof i);
    if (ch.send(kData, payload) != Status::kOk) return std::nullopt;
  }
  if (ch.send(kFlush, {}) != Status::kOk || ch.recv(m) != Status::kOk || m.kind != kFlush) return std::nullopt;
  const double s = seconds_since(start);
  uint64_t seen = 0;
  std::memcpy(&seen, m.payload.data(), std::min(m.payload.size(), sizeof seen));
  if (seen != messages) {
    std::fprintf(stderr, "host saw %llu of %llu messages\n", static_cast<unsigned long long>(seen),
                 static_cast<unsigned long long>(messages));
    return std::nullopt;
  }
  return static_cast<double>(messages) / s;
}

struct Latency {
  double median_us, p99_us;
};

Latency summarize(std::vector<double>& samples) {
  std::sort(samples.begin(), samples.end());
  return {samples[samples.size() / 2], samples[samples.size() * 99 / 100]};
}

std::optional<Latency> measure_rtt(Channel& ch, uint64_t round_trips) {
  std::byte payload[64] = {};
  Message m;
  std::vector<double> samples;
  samples.reserve(round_trips);
  for (uint64_t i = 0; i < round_trips; ++i) {
    const auto t0 = Clock::now();
    if (ch.send(kPing, payload) != Status::kOk || ch.recv(m) != Status::kOk || m.kind != kPing) return std::nullopt;
    samples.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  return summarize(samples);
}

// The kernel's blocking IPC for scale: a byte back and forth over two pipes.
std::optional<Latency> pipe_rtt(uint64_t round_trips, int parent_cpu, int child_cpu) {
  int to_child[2], to_parent[2];
  if (pipe(to_child) != 0 || pipe(to_parent) != 0) return std::nullopt;
  const pid_t child = fork();
  if (child == 0) {
    close(to_child[1]);  // so that the parent's close is our end of file
    close(to_parent[0]);
    run_on(child_cpu);
    char c;
    while (read(to_child[0], &c, 1) == 1 && write(to_parent[1], &c, 1) == 1) {
    }
    _exit(0);
  }
  close(to_child[0]);
  close(to_parent[1]);
  run_on(parent_cpu);
  std::vector<double> samples;
  samples.reserve(round_trips);
  char c = 'x';
  bool ok = true;
  for (uint64_t i = 0; i < round_trips && ok; ++i) {
    const auto t0 = Clock::now();
    ok = write(to_child[1], &c, 1) == 1 && read(to_parent[0], &c, 1) == 1;
    samples.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  close(to_child[1]);
  close(to_parent[0]);
  waitpid(child, nullptr, 0);
  run_on(-1);
  if (!ok) return std::nullopt;
  return summarize(samples);
}

// 0 when the phase did not run.
double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
double best(const std::vector<double>& v, bool highest) {
  if (v.empty()) return 0;
  return highest ? *std::max_element(v.begin(), v.end()) : *std::min_element(v.begin(), v.end());
}

int usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--json] [--runs N] [--messages N] [--round-trips N] [--pin] "
               "[--only throughput|spin|futex]\n",
               argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto number = [&](uint64_t* out) {
      if (i + 1 >= argc) return false;
      char* end = nullptr;
      *out = std::strtoull(argv[++i], &end, 10);
      return end != nullptr && *end == '\0' && *out > 0;
    };
    uint64_t n = 0;
    if (a == "--json") {
      opt.json = true;
    } else if (a == "--pin") {
      opt.pin = true;
    } else if (a == "--only" && i + 1 < argc) {
      const std::string phase = argv[++i];
      opt.throughput = phase == "throughput";
      opt.spin = phase == "spin";
      opt.futex = phase == "futex";
      if (!opt.throughput && !opt.spin && !opt.futex) return usage(argv[0]);
    } else if (a == "--runs" && number(&n)) {
      opt.runs = static_cast<int>(std::min<uint64_t>(n, 1000));
    } else if (a == "--messages" && number(&n)) {
      opt.messages = n;
    } else if (a == "--round-trips" && number(&n)) {
      opt.round_trips = std::max<uint64_t>(n, 4);
    } else {
      return usage(argv[0]);
    }
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  (void)sched_getaffinity(0, sizeof g_all_cpus, &g_all_cpus);
  const bool two_cpus = CPU_COUNT(&g_all_cpus) >= 2;
  int cpu_a = -1, cpu_b = -1;  // the first two CPUs we may use
  for (int c = 0; c < CPU_SETSIZE && cpu_b < 0; ++c) {
    if (CPU_ISSET(c, &g_all_cpus)) (cpu_a < 0 ? cpu_a : cpu_b) = c;
  }

  auto pair = bypass::base::socket_pair(SOCK_SEQPACKET | SOCK_NONBLOCK);
  if (!pair) {
    std::fprintf(stderr, "%s\n", pair.error().message.c_str());
    return 1;
  }
  bypass::base::UniqueFd guest_end = std::move(pair->first), host_end = std::move(pair->second);
  const Hello hello{1, 0, "transport_bench"};
  const Deadline deadline = deadline_after(std::chrono::seconds(10));
  const pid_t child = fork();
  if (child == 0) {
    guest_end.reset();
    auto ch = accept_socket(std::move(host_end), hello, SessionOptions{}, deadline);
    if (!ch) {
      std::fprintf(stderr, "host: %s\n", ch.error().message.c_str());
      _exit(1);
    }
    _exit(host_main(*ch));
  }
  host_end.reset();
  auto ch = connect_socket(std::move(guest_end), hello, deadline);
  if (!ch) {
    std::fprintf(stderr, "guest: %s\n", ch.error().message.c_str());
    kill(child, SIGKILL);
    return 1;
  }

  std::printf("transport_bench: guest pid %d, host pid %d, %zu-byte rings, %d CPUs usable, %d runs\n", getpid(), child,
              ch->tx_capacity(), CPU_COUNT(&g_all_cpus), opt.runs);
  std::printf("  throughput: 64-byte messages, default adaptive spin, %s\n",
              opt.pin && two_cpus ? "pinned to separate CPUs" : "placed by the scheduler");
  std::vector<double> rates, spin_rtts, futex_one_cpu, futex_two_cpus;
  bool ok = true;
  for (int run = 0; run < opt.runs && ok; ++run) {
    std::printf("run %d:", run + 1);
    if (opt.throughput) {
      const bool pin = opt.pin && two_cpus;
      const auto rate = setup_both(*ch, Channel::kDefaultMaxSpins, pin ? cpu_a : -1, pin ? cpu_b : -1)
                            ? measure_throughput(*ch, opt.messages)
                            : std::nullopt;
      if (!(ok = rate.has_value())) break;
      rates.push_back(*rate);
      std::printf(" %.2f M msgs/s |", *rate / 1e6);
    }
    if (opt.spin) {
      // Spinning only makes sense with the peer on another CPU.
      const auto rtt = setup_both(*ch, 1u << 20, two_cpus ? cpu_a : -1, two_cpus ? cpu_b : -1)
                           ? measure_rtt(*ch, opt.round_trips)
                           : std::nullopt;
      if (!(ok = rtt.has_value())) break;
      spin_rtts.push_back(rtt->median_us);
      std::printf(" rtt spin %.2f us (p99 %.2f) |", rtt->median_us, rtt->p99_us);
    }
    if (opt.futex) {
      const auto one = setup_both(*ch, 0, cpu_a, cpu_a) ? measure_rtt(*ch, opt.round_trips / 2) : std::nullopt;
      if (!(ok = one.has_value())) break;
      futex_one_cpu.push_back(one->median_us);
      std::printf(" rtt futex one cpu %.2f us (p99 %.2f)", one->median_us, one->p99_us);
      if (two_cpus) {
        const auto two = setup_both(*ch, 0, cpu_a, cpu_b) ? measure_rtt(*ch, opt.round_trips / 4) : std::nullopt;
        if (!(ok = two.has_value())) break;
        futex_two_cpus.push_back(two->median_us);
        std::printf(", two cpus %.2f us (p99 %.2f)", two->median_us, two->p99_us);
      }
    }
    std::printf("\n");
    ok = ok && setup_both(*ch, Channel::kDefaultMaxSpins, -1, -1);
  }
  (void)ch->send(kShutdown, {});
  int status = 0;
  waitpid(child, &status, 0);
  if (!ok) {
    std::fprintf(stderr, "benchmark failed: %s\n", ch->error_text().c_str());
    return 1;
  }
  if (opt.futex) {
    const auto one = pipe_rtt(opt.round_trips / 2, cpu_a, cpu_a);
    const auto two = two_cpus ? pipe_rtt(opt.round_trips / 4, cpu_a, cpu_b) : std::nullopt;
    if (one) std::printf("reference: pipe round trip one cpu %.2f us (p99 %.2f)", one->median_us, one->p99_us);
    if (two) std::printf(", two cpus %.2f us (p99 %.2f)", two->median_us, two->p99_us);
    std::printf("\n");
  }
  const Channel::Stats st = ch->stats();
  std::printf("guest totals: %llu msgs sent, %llu futex sleeps, %llu wakes issued\n",
              static_cast<unsigned long long>(st.msgs_sent), static_cast<unsigned long long>(st.sleeps),
              static_cast<unsigned long long>(st.wakes_issued));
  std::printf(
      "median: %.2f M msgs/s, rtt spin %.2f us, rtt futex %.2f us one cpu / %.2f us two cpus "
      "(best: %.2f M msgs/s, %.2f us, %.2f us / %.2f us)\n",
      median(rates) / 1e6, median(spin_rtts), median(futex_one_cpu), median(futex_two_cpus), best(rates, true) / 1e6,
      best(spin_rtts, false), best(futex_one_cpu, false), best(futex_two_cpus, false));
  if (opt.json) {
    std::printf("{\"msgs_per_s\": %.0f, \"rtt_spin_us\": %.3f, \"rtt_futex_us\": %.3f}\n", median(rates),
                median(spin_rtts), median(futex_one_cpu));
  }
  return 0;
}
