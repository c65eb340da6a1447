// bypassd: the bypass host server. Guests connect over a UNIX socket; each becomes a session
// whose Vulkan calls are replayed on this machine's driver.
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "bypass/base/socket_path.h"
#include "bypass/host/server.h"
#include "bypass/transport/session.h"

namespace {
int g_stop_pipe[2] = {-1, -1};
void on_signal(int) {
  char c = 1;
  [[maybe_unused]] auto r = write(g_stop_pipe[1], &c, 1);
}
// The network side (--listen grpc://): bypass-grpcd, beside this executable, in a process of its
// own because gRPC needs threads and bypassd's main process has none. It dies with bypassd, and
// bypassd starts it again should it die first.
struct Network {
  std::string listen;
  bool management = false;
  std::string management_socket;  // "" = the guest socket + ".grpc"
  std::string control_path;
  bool insecure = false;
  std::string tls_cert, tls_key, tls_client_ca, token_file;
  std::vector<std::string> admins;
  // A root bypassd with --worker-user runs the relay as that user too, in the sockets' group so
  // that it may connect to them: the process that faces the network holds no root.
  std::string user, group;
};

pid_t start_grpcd(const Network& n, const std::string& socket_path, const std::string& log_level,
                  uint32_t handshake_timeout_ms) {
  char self[PATH_MAX];
  const ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (len <= 0) return -1;
  std::string exe(self, static_cast<size_t>(len));
  exe = exe.substr(0, exe.rfind('/') + 1) + "bypass-grpcd";
  std::vector<std::string> args = {exe,
                                   "--socket",
                                   socket_path,
                                   "--control",
                                   n.control_path,
                                   "--management",
                                   n.management_socket.empty() ? socket_path + ".grpc" : n.management_socket,
                                   "--log-level",
                                   log_level,
                                   "--handshake-timeout",
                                   std::to_string(handshake_timeout_ms)};
  if (!n.listen.empty()) args.insert(args.end(), {"--listen", n.listen});
  if (n.insecure) args.push_back("--insecure");
  for (auto [flag, value] : {std::pair<const char*, const std::string*>{"--tls-cert", &n.tls_cert},
                             {"--tls-key", &n.tls_key},
                             {"--tls-client-ca", &n.tls_client_ca},
                             {"--token-file", &n.token_file}})
    if (!value->empty()) args.insert(args.end(), {flag, *value});
  for (const std::string& a : n.admins) args.insert(args.end(), {"--admin", a});
  if (!n.user.empty()) args.insert(args.end(), {"--user", n.user});
  if (!n.user.empty() && !n.group.empty()) args.insert(args.end(), {"--group", n.group});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(1);
    execv(exe.c_str(), argv.data());
    std::fprintf(stderr, "bypassd: cannot run %s: %s\n", exe.c_str(), std::strerror(errno));
    _exit(127);
  }
  return pid;
}
}  // namespace

int main(int argc, char** argv) {
  bypass::host::ServerConfig config;
  config.socket_path = bypass::base::default_socket_path(bypass::transport::kSocketName);
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
  app.add_option("--max-sessions", config.max_sessions, "Guests served at once; more are refused")
      ->capture_default_str();
  app.add_option("--max-objects", config.max_objects, "Vulkan objects per session; more end the session")
      ->capture_default_str();
  app.add_option("--max-memory", config.max_memory_bytes, "Bytes of device memory per session")->capture_default_str();
  app.add_option("--log-level", config.log_level, "trace, debug, info, warn, error")->capture_default_str();
  app.add_option("--malloc-trim", config.malloc_trim_bytes,
                 "Free heap bytes kept for reuse rather than returned to the kernel (glibc M_TRIM_THRESHOLD; "
                 "0: glibc's default)")
      ->capture_default_str()
      ->check(CLI::Range(size_t{0}, static_cast<size_t>(INT_MAX)));
  app.add_option("--malloc-top-pad", config.malloc_top_pad_bytes,
                 "Slack each heap keeps at its top and grows by (glibc M_TOP_PAD; 0: glibc's default); "
                 "address space, not resident memory")
      ->capture_default_str()
      ->check(CLI::Range(size_t{0}, static_cast<size_t>(INT_MAX)));
  app.add_option("--small-memory-heap", config.small_memory_heap_bytes,
                 "Bytes per socket session of one shared file that small host-visible allocations (up to "
                 "1 MiB, or an eighth of it) are blocks of; 0: each allocation is its own file")
      ->capture_default_str();
  app.add_option("--max-pending-waits", config.max_pending_waits,
                 "Blocking calls (waits) per session answered on waiter threads at once; more end the session")
      ->capture_default_str();
  app.add_option("--max-message", config.max_message,
                 "Largest batch a guest may send, in bytes (memory for it grows as it arrives)")
      ->capture_default_str();
  // Isolation and sandbox
  std::string isolation = "process";
  app.add_option("--isolation", isolation,
                 "process: each session in a sandboxed worker process (a driver crash ends that session only); "
                 "thread: in threads of bypassd, no boundary between guests (for measurements and debugging)")
      ->check(CLI::IsMember({"process", "thread"}))
      ->capture_default_str();
  bool no_sandbox = false;
  app.add_flag("--no-sandbox", no_sandbox,
               "Workers without the seccomp filter (for debugging a driver that needs more)");
  bool no_preload = false;
  app.add_flag("--no-preload-drivers", no_preload,
               "Do not map the Vulkan drivers' libraries into bypassd before forking workers (each worker then "
               "loads them itself: slower session start-up, more private memory per session)");
  app.add_option("--worker-user", config.worker_user,
                 "A root bypassd runs workers as this user (with its groups, e.g. render)");
  app.add_option("--worker-data-limit", config.worker_data_bytes,
                 "RLIMIT_DATA of a worker in bytes: all private memory one guest can make the driver allocate "
                 "(0: --max-memory + 4 GiB)")
      ->capture_default_str();
  // Deadlines
  app.add_option("--handshake-timeout", config.handshake_timeout_ms, "Milliseconds a new connection has to handshake")
      ->capture_default_str();
  app.add_option("--send-timeout", config.send_timeout_ms,
                 "Milliseconds a reply may wait for room in a guest's ring; then the session ends")
      ->capture_default_str();
  app.add_option("--shutdown-timeout", config.shutdown_timeout_ms,
                 "Milliseconds sessions have to end at shutdown; then their workers are killed")
      ->capture_default_str();
  // Access
  std::string socket_mode = "0660";
  app.add_option("--socket-mode", socket_mode, "Mode of the guest and control sockets (octal)")->capture_default_str();
  app.add_option("--socket-group", config.socket_group,
                 "Group of the sockets, whose members may open sessions (ignored if it does not exist; \"\": none)")
      ->capture_default_str();
  app.add_option("--allow-user", config.allow_users, "A user (name or uid) who may open sessions; repeatable")
      ->take_all();
  app.add_option("--allow-group", config.allow_groups,
                 "A group (name or gid) whose members may open sessions; repeatable")
      ->take_all();
  app.add_option("--max-pending-handshakes", config.max_pending_per_uid, "Handshakes in progress per uid")
      ->capture_default_str();
  app.add_option("--max-queued-handshakes", config.max_queued_per_uid,
                 "Connections per uid that wait (up to --handshake-timeout) for a handshake to finish")
      ->capture_default_str();
  // VM guests
  std::vector<std::string> vms;
  app.add_option("--vm", vms,
                 "Serve a VM: NAME:PATH[:SIZE_MIB[:SLOTS]]. bypassd creates the device file PATH (default 256 MiB, "
                 "4 session slots); QEMU maps it with -object memory-backend-file,share=on,mem-path=PATH "
                 "-device ivshmem-plain; the guest uses BYPASS_ENDPOINT=ivshmem:. Repeatable")
      ->take_all();
  app.add_option("--vm-ring-size", config.vm_ring_bytes, "Bytes per ring per VM session slot")->capture_default_str();
  // Network guests (docs/network.md)
  Network network;
  app.add_option("--listen", network.listen,
                 "Also serve guests over the network: grpc://ADDR:PORT (through bypass-grpcd; guests use "
                 "BYPASS_ENDPOINT=grpc://HOST:PORT)");
  app.add_flag("--management", network.management,
               "Serve the gRPC management API and health service (bypassctl sessions, end, drain, health) on "
               "--management-socket; implied by --listen");
  app.add_option("--management-socket", network.management_socket,
                 "The management API's UNIX socket, mode 0600 (default: the guest socket path + \".grpc\")");
  app.add_flag("--insecure", network.insecure, "Network guests without TLS (loopback tests only)");
  app.add_option("--tls-cert", network.tls_cert, "The network side's PEM certificate chain");
  app.add_option("--tls-key", network.tls_key, "The network side's PEM private key");
  app.add_option("--tls-client-ca", network.tls_client_ca,
                 "Network guests must present a client certificate this CA signed");
  app.add_option("--token-file", network.token_file,
                 "Lines NAME TOKEN: bearer tokens with which network guests may open sessions");
  app.add_option("--admin", network.admins,
                 "A token name or client-certificate name that may use the management API over the --listen "
                 "port (besides its UNIX socket); repeatable")
      ->take_all();
  // Hidden: the end reasons, "<value> <name>" a line, for the tests' mirror of the list.
  bool list_end_reasons = false;
  app.add_flag("--list-end-reasons", list_end_reasons, "Print the session end reasons and exit")->group("");
  CLI11_PARSE(app, argc, argv);
  if (list_end_reasons) {
    for (uint32_t v = 1; v <= static_cast<uint32_t>(bypass::host::kLastEndReason); ++v)
      std::printf("%u %s\n", v, bypass::host::to_string(static_cast<bypass::host::EndReason>(v)));
    return 0;
  }
  for (const std::string& spec : vms) {
    bypass::host::ServerConfig::Vm vm;
    std::vector<std::string> parts;
    size_t start = 0;
    for (size_t colon; (colon = spec.find(':', start)) != std::string::npos; start = colon + 1)
      parts.push_back(spec.substr(start, colon - start));
    parts.push_back(spec.substr(start));
    try {
      if (parts.size() < 2 || parts.size() > 4 || parts[0].empty() || parts[1].empty())
        throw std::invalid_argument(spec);
      vm.name = parts[0];
      vm.path = parts[1];
      if (parts.size() > 2) vm.size = std::stoull(parts[2]) << 20;
      if (parts.size() > 3) vm.slots = static_cast<uint32_t>(std::stoul(parts[3]));
    } catch (const std::exception&) {
      std::fprintf(stderr, "bypassd: --vm %s: expected NAME:PATH[:SIZE_MIB[:SLOTS]]\n", spec.c_str());
      return 2;
    }
    config.vms.push_back(vm);
  }
  config.isolation = isolation == "thread" ? bypass::host::Isolation::kThread : bypass::host::Isolation::kProcess;
  config.sandbox = !no_sandbox;
  config.preload_drivers = !no_preload;
  try {
    size_t used = 0;
    config.socket_mode = static_cast<mode_t>(std::stoul(socket_mode, &used, 8));
    if (used != socket_mode.size() || config.socket_mode > 0777) throw std::invalid_argument(socket_mode);
  } catch (const std::exception&) {
    std::fprintf(stderr, "bypassd: --socket-mode %s: not an octal mode\n", socket_mode.c_str());
    return 2;
  }
  // Before any driver thread exists: the setting is process-wide and read on every free().
  if (config.malloc_trim_bytes != 0) mallopt(M_TRIM_THRESHOLD, static_cast<int>(config.malloc_trim_bytes));
  // The top pad is the sessions' (their driver threads' arenas): a worker sets it after its fork
  // (worker.cpp), so bypassd's own heap, which every worker starts from, does not grow by it.
  if (config.malloc_top_pad_bytes != 0 && config.isolation == bypass::host::Isolation::kThread)
    mallopt(M_TOP_PAD, static_cast<int>(config.malloc_top_pad_bytes));

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
  if (!network.listen.empty() || network.management) {
    network.control_path = config.control_path.empty() ? config.socket_path + ".ctl" : config.control_path;
    if (!network.listen.empty() && !network.listen.starts_with("grpc://")) {
      spdlog::error("--listen {}: expected grpc://ADDR:PORT", network.listen);
      return 2;
    }
    if (!network.listen.empty() && !network.insecure && (network.tls_cert.empty() || network.tls_key.empty())) {
      spdlog::error("--listen {}: needs --tls-cert and --tls-key, or --insecure for loopback tests", network.listen);
      return 2;
    }
    if (geteuid() == 0 && !config.worker_user.empty()) {
      network.user = config.worker_user;
      network.group = config.socket_group;
    }
    const pid_t pid = start_grpcd(network, config.socket_path, config.log_level, config.handshake_timeout_ms);
    if (pid < 0) {
      spdlog::error("cannot start bypass-grpcd");
      return 1;
    }
    config.helper_pid = pid;
    // Should it die, the server starts it again (with a back-off) and new guests reach the new one.
    config.start_helper = [network, socket_path = config.socket_path, log_level = config.log_level,
                           timeout = config.handshake_timeout_ms] {
      return start_grpcd(network, socket_path, log_level, timeout);
    };
    spdlog::info(
        "bypass-grpcd pid {}: {}", pid,
        network.listen.empty() ? "management API" : "network guests on " + network.listen + ", management API");
  }
  bypass::host::Server server(config);
  return server.run(g_stop_pipe[0]);
}
