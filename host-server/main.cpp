// bypassd: the bypass host server. Guests connect over a UNIX socket; each becomes a session
// whose Vulkan calls are replayed on this machine's driver.
#include <malloc.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <climits>

#include "server.h"

namespace {
int g_stop_pipe[2] = {-1, -1};
void on_signal(int) {
  char c = 1;
  [[maybe_unused]] auto r = write(g_stop_pipe[1], &c, 1);
}
}  // namespace

int main(int argc, char** argv) {
  bypass::host::ServerConfig config;
  config.socket_path = bypass::host::default_socket_path();
  CLI::App app{
      "bypassd: the bypass host server.\n"
      "Guest processes load the bypass Vulkan ICD, which connects here; every guest is a session\n"
      "whose Vulkan calls are replayed on this machine's Vulkan driver. The driver is chosen by the\n"
      "Vulkan loader from this process's environment (e.g. VK_DRIVER_FILES=.../lvp_icd.x86_64.json)."};
  app.set_config("--config", "", "Read options from a TOML/INI file (keys are the long option names)");
  app.add_option("--socket", config.socket_path, "UNIX socket guests connect to (BYPASS_ENDPOINT=unix:PATH)")
      ->capture_default_str();
  app.add_option("--control", config.control_path,
                 "UNIX socket bypassctl reads stats from (default: the guest socket path + \".ctl\")");
  app.add_option("--device", config.device_name,
                 "Expose only physical devices whose name contains this text (default: all)");
  app.add_option("--ring-size", config.ring_bytes, "Bytes per ring per session (rounded up to a power of two)")
      ->capture_default_str();
  app.add_option("--max-sessions", config.max_sessions, "Guests served at once; more are refused")->capture_default_str();
  app.add_option("--max-objects", config.max_objects, "Vulkan objects per session; more end the session")
      ->capture_default_str();
  app.add_option("--max-memory", config.max_memory_bytes, "Bytes of device memory per session")->capture_default_str();
  app.add_option("--log-level", config.log_level, "trace, debug, info, warn, error")->capture_default_str();
  app.add_option("--malloc-trim", config.malloc_trim_bytes,
                 "Free heap bytes kept for reuse rather than returned to the kernel (glibc M_TRIM_THRESHOLD; "
                 "0: glibc's default)")
      ->capture_default_str()
      ->check(CLI::Range(size_t{0}, static_cast<size_t>(INT_MAX)));
  CLI11_PARSE(app, argc, argv);
  // Before any driver thread exists: the setting is process-wide and read on every free().
  if (config.malloc_trim_bytes != 0) mallopt(M_TRIM_THRESHOLD, static_cast<int>(config.malloc_trim_bytes));

  auto logger = spdlog::stderr_color_mt("bypassd");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  spdlog::set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] %v");

  if (pipe(g_stop_pipe) != 0) return 1;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  bypass::host::Server server(config);
  return server.run(g_stop_pipe[0]);
}
