// Two-process transport benchmark: a guest (this process) and a host (a forked child) joined
// by a real session. Measures 64-byte messages per second through the command ring, and the
// round-trip time of a one-message request/reply with spinning and with futex sleeps only.
//
//   transport_bench [--json] [--runs N] [--messages N] [--round-trips N] [--pin]
//
// With --json the last line is exactly one JSON object:
//   {"msgs_per_s": ..., "rtt_spin_us": ..., "rtt_futex_us": ...}
// (medians over the runs; the best run is printed too, since the machine may be shared).
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

#include "bypass/transport/session.h"

namespace {

using namespace bypass::transport;

// Control kinds understood by the host child.
constexpr uint32_t kData = 1;      // count it
constexpr uint32_t kFlush = 2;     // reply with the number of kData seen since the last flush
constexpr uint32_t kPing = 3;      // echo back at once
constexpr uint32_t kSetSpin = 4;   // payload: u32 max spins; acknowledged
constexpr uint32_t kShutdown = 5;  // exit

struct Options {
  bool json = false;
  bool pin = false;
  int runs = 5;
  uint64_t messages = 10'000'000;
  uint64_t round_trips = 200'000;
  bool throughput = true, spin = true, futex = true;  // --only PHASE keeps one
};

void pin_to(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  (void)sched_setaffinity(0, sizeof set, &set);
}

int host_main(Channel& ch, bool pin) {
  if (pin) pin_to(1);
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
      case kSetSpin: {
        uint32_t spins = 0;
        std::memcpy(&spins, m.payload.data(), std::min(m.payload.size(), sizeof spins));
        ch.set_spin(spins);
        if (ch.send(kSetSpin, {}) != Status::kOk) return 1;
        break;
      }
      case kShutdown:
        return 0;
      default:
        return 2;
    }
  }
}

bool set_spin_both(Channel& ch, uint32_t spins) {
  ch.set_spin(spins);
  Message m;
  return ch.send(kSetSpin, std::as_bytes(std::span(&spins, 1))) == Status::kOk && ch.recv(m) == Status::kOk &&
         m.kind == kSetSpin;
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
  double median_us, p99_us, mean_us;
};

std::optional<Latency> measure_rtt(Channel& ch, uint64_t round_trips) {
  std::byte payload[64] = {};
  Message m;
  std::vector<double> samples;
  samples.reserve(round_trips);
  const auto start = Clock::now();
  for (uint64_t i = 0; i < round_trips; ++i) {
    const auto t0 = Clock::now();
    if (ch.send(kPing, payload) != Status::kOk || ch.recv(m) != Status::kOk || m.kind != kPing) return std::nullopt;
    samples.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  const double total_us = seconds_since(start) * 1e6;
  std::sort(samples.begin(), samples.end());
  return Latency{samples[samples.size() / 2], samples[samples.size() * 99 / 100], total_us / round_trips};
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
  std::fprintf(
      stderr, "usage: %s [--json] [--runs N] [--messages N] [--round-trips N] [--pin] [--only throughput|spin|futex]\n",
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
      opt.round_trips = n;
    } else {
      return usage(argv[0]);
    }
  }

  UniqueFd guest_end, host_end;
  std::string error;
  if (!make_socket_pair(&guest_end, &host_end, &error)) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return 1;
  }
  const Hello hello{1, 0, "transport_bench"};
  const Deadline deadline = deadline_after(std::chrono::seconds(10));
  const pid_t child = fork();
  if (child == 0) {
    guest_end.reset();
    auto ch = accept_socket(std::move(host_end), hello, SessionOptions{}, &error, deadline);
    if (!ch) {
      std::fprintf(stderr, "host: %s\n", error.c_str());
      _exit(1);
    }
    _exit(host_main(*ch, opt.pin));
  }
  host_end.reset();
  auto ch = connect_socket(std::move(guest_end), hello, &error, deadline);
  if (!ch) {
    std::fprintf(stderr, "guest: %s\n", error.c_str());
    kill(child, SIGKILL);
    return 1;
  }
  if (opt.pin) pin_to(0);

  std::printf("transport_bench: 2 processes, %zu-byte rings, %d runs%s\n", ch->tx_capacity(), opt.runs,
              opt.pin ? ", pinned to cpus 0/1" : "");
  std::vector<double> rates, spin_rtts, futex_rtts;
  bool ok = true;
  for (int run = 0; run < opt.runs && ok; ++run) {
    std::printf("run %d:", run + 1);
    if (opt.throughput) {
      const auto rate =
          set_spin_both(*ch, Channel::kDefaultMaxSpins) ? measure_throughput(*ch, opt.messages) : std::nullopt;
      if (!(ok = rate.has_value())) break;
      rates.push_back(*rate);
      std::printf(" %6.2f M msgs/s (64 B) |", *rate / 1e6);
    }
    if (opt.spin) {
      const auto rtt = set_spin_both(*ch, 1u << 20) ? measure_rtt(*ch, opt.round_trips) : std::nullopt;
      if (!(ok = rtt.has_value())) break;
      spin_rtts.push_back(rtt->median_us);
      std::printf(" rtt spin median %.2f us p99 %.2f us mean %.2f us |", rtt->median_us, rtt->p99_us, rtt->mean_us);
    }
    if (opt.futex) {
      const auto rtt = set_spin_both(*ch, 0) ? measure_rtt(*ch, opt.round_trips / 4) : std::nullopt;
      if (!(ok = rtt.has_value())) break;
      futex_rtts.push_back(rtt->median_us);
      std::printf(" rtt futex median %.2f us p99 %.2f us mean %.2f us", rtt->median_us, rtt->p99_us, rtt->mean_us);
    }
    std::printf("\n");
  }
  (void)ch->send(kShutdown, {});
  int status = 0;
  waitpid(child, &status, 0);
  if (!ok) {
    std::fprintf(stderr, "benchmark failed: %s\n", ch->error_text().c_str());
    return 1;
  }
  const Channel::Stats st = ch->stats();
  std::printf("guest totals: %llu msgs sent, %llu futex sleeps, %llu wakes issued\n",
              static_cast<unsigned long long>(st.msgs_sent), static_cast<unsigned long long>(st.sleeps),
              static_cast<unsigned long long>(st.wakes_issued));
  std::printf("median: %.2f M msgs/s, rtt spin %.2f us, rtt futex %.2f us (best: %.2f M msgs/s, %.2f us, %.2f us)\n",
              median(rates) / 1e6, median(spin_rtts), median(futex_rtts), best(rates, true) / 1e6,
              best(spin_rtts, false), best(futex_rtts, false));
  if (opt.json) {
    std::printf("{\"msgs_per_s\": %.0f, \"rtt_spin_us\": %.3f, \"rtt_futex_us\": %.3f}\n", median(rates),
                median(spin_rtts), median(futex_rtts));
  }
  return 0;
}
