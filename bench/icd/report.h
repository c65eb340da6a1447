// What a benchmark run prints and how it measures: a result record printed as one JSON object
// (bench/run reads it), wall-clock helpers, robust statistics, and CPU time of this process
// and of the host server. No Vulkan here, so ring_rtt can use it too.
#pragma once

#include <time.h>

#include <chrono>
#include <string>
#include <utility>
#include <vector>

namespace bypass::bench {

// The figures one run produces. Keys keep their insertion order.
class Report {
 public:
  void set(const std::string& key, double value);
  void set(const std::string& key, const std::string& value);
  std::string json() const;

 private:
  std::vector<std::pair<std::string, std::string>> fields_;  // key, JSON-encoded value
};

using Clock = std::chrono::steady_clock;

inline double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// The median of `values` (which it reorders); 0 for none.
double median(std::vector<double>& values);
// The p-th percentile (0..100, nearest rank) of `values` (which it sorts); 0 for none.
double percentile(std::vector<double>& values, double p);

// CPU time spent on the measured work, by this process (all its threads: the application and,
// natively, the driver's) and by the host server whose pid bench/run passes with --host-pid
// (bypassd: decoder, waiter and driver threads). Unlike wall time it hardly depends on how busy
// the machine is, so native CPU / (guest + host CPU) is a steady measure of what remoting costs.
// With sessions in worker processes, the host's share is bypassd's and its workers' (its child
// processes at start(), whose clocks count until they exit).
class CpuMeter {
 public:
  CpuMeter();
  void start();
  void stop();  // adds the time since start()
  // Sets cpu_guest_s and, with a host, cpu_host_s.
  void report(Report& out) const;

 private:
  double host_now() const;
  std::vector<clockid_t> host_clocks_;
  bool has_host_ = false;
  double guest_s_ = 0, host_s_ = 0;
  double guest_start_ = 0, host_start_ = 0;
};

// The host server's pid for CpuMeter (0: none, e.g. a native run). Set once by main().
void set_host_pid(int pid);

}  // namespace bypass::bench
