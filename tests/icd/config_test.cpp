// The guest's settings (guest-icd/src/config.cpp): each variable parsed in one place, bad
// values falling back to the defaults; and base's leveled log that BYPASS_LOG drives.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <map>
#include <string>

#include "bypass/base/log.h"
#include "config.h"

namespace bypass::icd {
namespace {

std::map<std::string, std::string> g_env;

Config parse(std::map<std::string, std::string> env) {
  g_env = std::move(env);
  return parse_config([](const char* name) -> const char* {
    auto it = g_env.find(name);
    return it == g_env.end() ? nullptr : it->second.c_str();
  });
}

TEST(GuestConfig, DefaultsWithAnEmptyEnvironment) {
  const Config c = parse({});
  EXPECT_EQ(c.endpoint, "");
  EXPECT_EQ(c.connect_timeout, std::chrono::seconds(3));
  EXPECT_FALSE(c.server_uid);
  EXPECT_EQ(c.log_level, base::LogLevel::kWarn);
  EXPECT_FALSE(c.shadow_memory);
  EXPECT_TRUE(c.host_pointers);
  EXPECT_TRUE(c.query_mirror);
  EXPECT_FALSE(c.wsi_no_shm);
  EXPECT_TRUE(c.wsi_transfer);
  EXPECT_EQ(c.wsi_refresh_period.count(), 0);
  EXPECT_FALSE(c.wsi_stats);
}

TEST(GuestConfig, EveryVariableIsRead) {
  const Config c = parse({{"BYPASS_ENDPOINT", "unix:/tmp/x.sock"},
                          {"BYPASS_CONNECT_TIMEOUT_MS", "250"},
                          {"BYPASS_SERVER_UID", "1234"},
                          {"BYPASS_LOG", "debug"},
                          {"BYPASS_MEMORY", "shadow"},
                          {"BYPASS_DIRTY_TRACKING", "hash"},
                          {"BYPASS_HOST_POINTERS", "0"},
                          {"BYPASS_QUERY_MIRROR", "0"},
                          {"BYPASS_WSI_NO_SHM", "1"},
                          {"BYPASS_WSI_TRANSFER", "0"},
                          {"BYPASS_WSI_REFRESH_HZ", "50"},
                          {"BYPASS_WSI_STATS", "1"}});
  EXPECT_EQ(c.endpoint, "unix:/tmp/x.sock");
  EXPECT_EQ(c.connect_timeout, std::chrono::milliseconds(250));
  EXPECT_EQ(c.server_uid, uid_t{1234});
  EXPECT_EQ(c.log_level, base::LogLevel::kDebug);
  EXPECT_TRUE(c.shadow_memory);
  EXPECT_EQ(c.dirty_tracking, memshare::TrackingMethod::kHash);
  EXPECT_FALSE(c.host_pointers);
  EXPECT_FALSE(c.query_mirror);
  EXPECT_TRUE(c.wsi_no_shm);
  EXPECT_FALSE(c.wsi_transfer);
  EXPECT_EQ(c.wsi_refresh_period, std::chrono::milliseconds(20));
  EXPECT_TRUE(c.wsi_stats);
}

TEST(GuestConfig, BadValuesFallBackToTheDefaults) {
  for (const char* ms : {"0", "600001", "12abc", "-5", ""}) {
    EXPECT_EQ(parse({{"BYPASS_CONNECT_TIMEOUT_MS", ms}}).connect_timeout, std::chrono::seconds(3)) << ms;
  }
  EXPECT_FALSE(parse({{"BYPASS_SERVER_UID", "root"}}).server_uid);
  EXPECT_FALSE(parse({{"BYPASS_SERVER_UID", "-1"}}).server_uid);
  EXPECT_EQ(parse({{"BYPASS_LOG", "verbose"}}).log_level, base::LogLevel::kWarn);
  EXPECT_FALSE(parse({{"BYPASS_MEMORY", "shared"}}).shadow_memory);
  EXPECT_EQ(parse({{"BYPASS_DIRTY_TRACKING", "soft-dirty"}}).dirty_tracking, memshare::TrackingMethod::kAuto);
  EXPECT_EQ(parse({{"BYPASS_DIRTY_TRACKING", "uffd"}}).dirty_tracking, memshare::TrackingMethod::kUffdAsync);
  EXPECT_EQ(parse({{"BYPASS_DIRTY_TRACKING", "adaptive"}}).dirty_tracking, memshare::TrackingMethod::kAdaptive);
  EXPECT_EQ(parse({{"BYPASS_WSI_REFRESH_HZ", "5000"}}).wsi_refresh_period.count(), 0);
  EXPECT_FALSE(parse({{"BYPASS_WSI_STATS", "0"}}).wsi_stats);
}

// Runs `body` with stderr sent to a file; returns what was written.
template <class F>
std::string captured_stderr(F body) {
  std::FILE* f = std::tmpfile();
  const int saved = dup(STDERR_FILENO);
  dup2(fileno(f), STDERR_FILENO);
  body();
  dup2(saved, STDERR_FILENO);
  close(saved);
  std::string out;
  std::rewind(f);
  char buf[512];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) out.append(buf, n);
  std::fclose(f);
  return out;
}

TEST(Log, LevelsFilterAndEachLineHasThePrefix) {
  base::set_log_level(base::LogLevel::kWarn);
  const std::string out = captured_stderr([] {
    base::log(base::LogLevel::kError, "an error %d", 1);
    base::log(base::LogLevel::kWarn, "a warning");
    base::log(base::LogLevel::kInfo, "some info");
    base::log(base::LogLevel::kDebug, "a detail");
  });
  EXPECT_EQ(out, "bypass: an error 1\nbypass: a warning\n");
}

TEST(Log, OncePerKeyAndNotCountedWhileFilteredOut) {
  base::set_log_level(base::LogLevel::kWarn);
  std::string out = captured_stderr([] {
    base::log_once(base::LogLevel::kDebug, "test topic", 7, "seven");  // below the level: not counted
  });
  EXPECT_EQ(out, "");
  base::set_log_level(base::LogLevel::kDebug);
  out = captured_stderr([] {
    for (int i = 0; i < 3; ++i) {
      base::log_once(base::LogLevel::kDebug, "test topic", 7, "seven");
      base::log_once(base::LogLevel::kDebug, "test topic", 8, "eight");
      base::log_once(base::LogLevel::kDebug, "other topic", 7, "seven elsewhere");
    }
  });
  EXPECT_EQ(out, "bypass: seven\nbypass: eight\nbypass: seven elsewhere\n");
  base::set_log_level(base::LogLevel::kWarn);
}

TEST(Log, ParsesTheFourLevelsOnly) {
  EXPECT_EQ(base::parse_log_level("error"), base::LogLevel::kError);
  EXPECT_EQ(base::parse_log_level("warn"), base::LogLevel::kWarn);
  EXPECT_EQ(base::parse_log_level("info"), base::LogLevel::kInfo);
  EXPECT_EQ(base::parse_log_level("debug"), base::LogLevel::kDebug);
  EXPECT_FALSE(base::parse_log_level("DEBUG"));
  EXPECT_FALSE(base::parse_log_level("warning"));
  EXPECT_FALSE(base::parse_log_level(""));
}

}  // namespace
}  // namespace bypass::icd
