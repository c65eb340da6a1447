#include "report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>

namespace bypass::bench {

namespace {

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

int g_host_pid = 0;

double clock_seconds(clockid_t clock) {
  timespec ts{};
  if (clock_gettime(clock, &ts) != 0) return 0;
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

}  // namespace

void set_host_pid(int pid) { g_host_pid = pid; }

CpuMeter::CpuMeter() { has_host_ = g_host_pid > 0; }

double CpuMeter::host_now() const {
  double sum = 0;
  for (clockid_t c : host_clocks_) sum += clock_seconds(c);
  return sum;
}

void CpuMeter::start() {
  guest_start_ = clock_seconds(CLOCK_PROCESS_CPUTIME_ID);
  if (!has_host_) return;
  // A process CPU-time clock counts all the process's threads, including ones that ended.
  host_clocks_.clear();
  std::vector<int> pids{g_host_pid};
  std::ifstream children("/proc/" + std::to_string(g_host_pid) + "/task/" + std::to_string(g_host_pid) + "/children");
  for (int pid; children >> pid;) pids.push_back(pid);
  for (int pid : pids) {
    clockid_t c{};
    if (clock_getcpuclockid(pid, &c) == 0) host_clocks_.push_back(c);
  }
  host_start_ = host_now();
}

void CpuMeter::stop() {
  guest_s_ += clock_seconds(CLOCK_PROCESS_CPUTIME_ID) - guest_start_;
  if (has_host_) host_s_ += host_now() - host_start_;
}

void CpuMeter::report(Report& out) const {
  out.set("cpu_guest_s", guest_s_);
  if (has_host_) out.set("cpu_host_s", host_s_);
}

void Report::set(const std::string& key, double value) {
  char buf[64];
  // JSON has no NaN or infinity; a figure that could not be measured is null.
  if (std::isfinite(value))
    std::snprintf(buf, sizeof buf, "%.9g", value);
  else
    std::snprintf(buf, sizeof buf, "null");
  fields_.emplace_back(key, buf);
}

void Report::set(const std::string& key, const std::string& value) { fields_.emplace_back(key, json_string(value)); }

std::string Report::json() const {
  std::string out = "{";
  for (size_t i = 0; i < fields_.size(); ++i) {
    if (i) out += ", ";
    out += json_string(fields_[i].first) + ": " + fields_[i].second;
  }
  return out + "}";
}

double median(std::vector<double>& values) {
  if (values.empty()) return 0;
  const size_t mid = values.size() / 2;
  std::nth_element(values.begin(), values.begin() + static_cast<ptrdiff_t>(mid), values.end());
  double m = values[mid];
  if (values.size() % 2 == 0) {
    m = (m + *std::max_element(values.begin(), values.begin() + static_cast<ptrdiff_t>(mid))) / 2;
  }
  return m;
}

double percentile(std::vector<double>& values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double rank = std::ceil(p / 100.0 * static_cast<double>(values.size()));
  const size_t index = static_cast<size_t>(std::clamp(rank, 1.0, static_cast<double>(values.size()))) - 1;
  return values[index];
}

}  // namespace bypass::bench
