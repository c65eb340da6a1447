// Leveled logging for the parts that do not use spdlog (the guest ICD, the wire runtime, small
// libraries): one line per message on stderr, "bypass: <text>". The host server logs through
// spdlog and its own -v; this is for code that runs inside other people's processes, where
// stderr belongs to the application and we say only what it should hear.
//
// The level comes from BYPASS_LOG (error, warn, info, debug; default warn), read once on first
// use, or from set_log_level (the ICD sets it from its config). Safe from any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace bypass::base {

enum class LogLevel : int {
  kError = 0,  // something failed that the caller will see as an error result
  kWarn = 1,   // something degraded (a fallback path) that a user should know about
  kInfo = 2,   // what was chosen (endpoint, transfer path); quiet by default
  kDebug = 3,  // details for whoever debugs bypass itself (unknown sTypes skipped, ...)
};
inline constexpr LogLevel kDefaultLogLevel = LogLevel::kWarn;

// "error", "warn", "info", "debug" (case-sensitive); nullopt for anything else.
std::optional<LogLevel> parse_log_level(std::string_view text);
const char* to_string(LogLevel level);

// The process-wide level: BYPASS_LOG's on first use (the default when unset or not a level).
LogLevel log_level();
void set_log_level(LogLevel level);
inline bool log_enabled(LogLevel level) { return static_cast<int>(level) <= static_cast<int>(log_level()); }

// Writes "bypass: <printf text>\n" to stderr in one write when `level` is enabled.
void log(LogLevel level, const char* format, ...) __attribute__((format(printf, 2, 3)));

// Like log, but at most once per (topic, key) in the life of the process: for messages that
// would otherwise repeat per call (an unknown sType in every pNext chain). A message below the
// level is not counted, so raising the level later still shows it once.
void log_once(LogLevel level, std::string_view topic, int64_t key, const char* format, ...)
    __attribute__((format(printf, 4, 5)));

}  // namespace bypass::base
