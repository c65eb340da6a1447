// The leveled stderr log (log.h): the level is an atomic read on every call, the once-per-key
// set sits behind a mutex taken only for messages that pass the level.
#include "bypass/base/log.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <string>
#include <utility>

namespace bypass::base {

namespace {

LogLevel level_from_env() {
  const char* e = std::getenv("BYPASS_LOG");
  if (!e || !*e) return kDefaultLogLevel;
  return parse_log_level(e).value_or(kDefaultLogLevel);
}

std::atomic<int>& level_slot() {
  // Read once, thread-safely (a function-local static), on the first log call or query.
  static std::atomic<int> level{static_cast<int>(level_from_env())};
  return level;
}

void vwrite(const char* format, va_list args) {
  // One write per line, so lines of threads logging at once do not interleave.
  char buf[1024];
  constexpr char kPrefix[] = "bypass: ";
  std::memcpy(buf, kPrefix, sizeof(kPrefix) - 1);
  const size_t room = sizeof(buf) - (sizeof(kPrefix) - 1) - 1;  // keep one byte for '\n'
  int n = std::vsnprintf(buf + sizeof(kPrefix) - 1, room + 1, format, args);
  if (n < 0) return;
  size_t len = sizeof(kPrefix) - 1 + std::min<size_t>(static_cast<size_t>(n), room);
  buf[len++] = '\n';
  // Best effort: stderr may be closed or a full pipe; nothing to do about it here.
  [[maybe_unused]] ssize_t w = ::write(STDERR_FILENO, buf, len);
}

}  // namespace

std::optional<LogLevel> parse_log_level(std::string_view text) {
  if (text == "error") return LogLevel::kError;
  if (text == "warn") return LogLevel::kWarn;
  if (text == "info") return LogLevel::kInfo;
  if (text == "debug") return LogLevel::kDebug;
  return std::nullopt;
}

const char* to_string(LogLevel level) {
  switch (level) {
    case LogLevel::kError:
      return "error";
    case LogLevel::kWarn:
      return "warn";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kDebug:
      return "debug";
  }
  return "unknown";
}

LogLevel log_level() { return static_cast<LogLevel>(level_slot().load(std::memory_order_relaxed)); }

void set_log_level(LogLevel level) { level_slot().store(static_cast<int>(level), std::memory_order_relaxed); }

void log(LogLevel level, const char* format, ...) {
  if (!log_enabled(level)) return;
  va_list args;
  va_start(args, format);
  vwrite(format, args);
  va_end(args);
}

void log_once(LogLevel level, std::string_view topic, int64_t key, const char* format, ...) {
  if (!log_enabled(level)) return;
  static std::mutex mu;
  static std::set<std::pair<std::string, int64_t>, std::less<>> seen;
  {
    std::lock_guard lock(mu);
    if (!seen.emplace(std::string(topic), key).second) return;
  }
  va_list args;
  va_start(args, format);
  vwrite(format, args);
  va_end(args);
}

}  // namespace bypass::base
