#include "bypass/host/worker.h"

#include <malloc.h>

#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <new>

#include "bypass/host/sandbox.h"
#include "bypass/transport/session.h"
#include "bypass/wire/protocol.h"

namespace bypass::host {

WorkerReport* map_worker_report() {
  void* p = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  return new (p) WorkerReport();
}

void unmap_worker_report(WorkerReport* report) {
  if (!report) return;
  report->~WorkerReport();
  munmap(report, 4096);
}

namespace {

void finish(WorkerReport* report, EndReason reason, const std::string& detail) {
  const size_t n = std::min(detail.size(), sizeof(report->end_detail) - 1);
  std::memcpy(report->end_detail, detail.data(), n);
  report->end_detail[n] = '\0';
  report->end_reason.store(static_cast<uint32_t>(reason), std::memory_order_relaxed);
  // Pairs with the acquire load in Server::reap: reason and kind are complete once it sees kEnded.
  report->state.store(WorkerReport::kEnded, std::memory_order_release);
}

}  // namespace

namespace {

void run_session(transport::Channel channel, uint64_t id, const ServerConfig& config, WorkerReport* report) {
  const std::string& name = channel.peer_hello().peer_name;
  std::memcpy(report->peer_name, name.data(), std::min(name.size(), sizeof(report->peer_name) - 1));
  report->state.store(WorkerReport::kRunning, std::memory_order_release);
  Session session(id, std::move(channel), config, &report->stats, &report->stop_requested);
  session.run();
  finish(report, session.end_reason(), session.end_detail());
}

}  // namespace

void serve_connection(base::UniqueFd connection, uint64_t id, const ServerConfig& config, WorkerReport* report) {
  transport::SessionOptions opts;
  opts.ring_bytes = config.ring_bytes;
  opts.max_message = config.max_message;
  const transport::Hello hello{wire::kProtocolVersion, wire::kSchemaHash, "bypassd"};
  auto channel =
      transport::accept_socket(std::move(connection), hello, opts,
                               transport::deadline_after(std::chrono::milliseconds(config.handshake_timeout_ms)));
  if (!channel) {
    spdlog::warn("session {}: refused a guest: {}", id, channel.error().message);
    finish(report, EndReason::kHandshakeFailed, channel.error().message);
    return;
  }
  run_session(std::move(*channel), id, config, report);
}

void serve_vm_slot(transport::VmDevice& device, uint32_t slot, const std::string& vm_name, uint64_t id,
                   const ServerConfig& config, WorkerReport* report, base::UniqueFd doorbell) {
  const transport::Hello hello{wire::kProtocolVersion, wire::kSchemaHash, "bypassd"};
  auto channel = device.accept(slot, hello, std::move(doorbell));
  if (!channel) {
    spdlog::warn("session {}: refused a guest of VM {}: {}", id, vm_name, channel.error().message);
    finish(report, EndReason::kHandshakeFailed, channel.error().message);
    return;
  }
  spdlog::info("session {}: VM {} slot {}: {} (wake-ups: {})", id, vm_name, slot, channel->peer_hello().peer_name,
               channel->wakeups());
  run_session(std::move(*channel), id, config, report);
}

base::Result<pid_t> spawn_worker(base::UniqueFd connection, uint64_t id, const ServerConfig& config,
                                 WorkerReport* report) {
  return spawn_worker(
      std::move(connection), id, config, report,
      [&](base::UniqueFd conn) { serve_connection(std::move(conn), id, config, report); }, /*guest_socket=*/true);
}

base::Result<pid_t> spawn_worker(base::UniqueFd connection, uint64_t id, const ServerConfig& config,
                                 WorkerReport* report, const std::function<void(base::UniqueFd)>& serve,
                                 bool guest_socket) {
  SandboxOptions sandbox;
  sandbox.seccomp = config.sandbox;
  sandbox.data_limit = worker_data_limit(config);
  if (!config.worker_user.empty())
    if (auto user = switch_to_user(sandbox, config.worker_user, "--worker-user"); !user) return user.error();
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return base::errno_error(base::Errc::kIo, "fork", errno);
  if (pid > 0) {
    // Later workers must not inherit this worker's page (they could end its session or fake
    // its figures); this one got it already.
    madvise(report, 4096, MADV_DONTFORK);
    return pid;  // the connection closes here; the worker has its own
  }

  // ---- the worker. bypassd is single-threaded when it forks, so every lock is free here.
  // It dies with bypassd: guests of a server that is gone must see the device lost, not a
  // server that lingers without its supervisor.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(1);
  setpriority(PRIO_PROCESS, 0, 0);  // the main process's higher priority is for accepting only
  // Before the driver's threads make their arenas (config.h, malloc_top_pad_bytes).
  if (config.malloc_top_pad_bytes != 0) mallopt(M_TOP_PAD, static_cast<int>(config.malloc_top_pad_bytes));
  // bypassd ends its workers through the report page, in order; a terminal's Ctrl-C or a
  // service manager's SIGTERM to the whole group must not end them first.
  signal(SIGTERM, SIG_IGN);
  signal(SIGINT, SIG_IGN);
  signal(SIGCHLD, SIG_DFL);
  signal(SIGPIPE, SIG_IGN);
  // Nothing of bypassd's but the guest's connection and stderr: not the listening socket, not
  // the control socket, not other sessions' descriptors.
  // (A VM's session has its doorbell there, if any: its device is a mapping, which the fork kept.)
  if (connection && connection.get() != 3) {
    if (dup2(connection.get(), 3) != 3) _exit(1);
    connection.reset(3);
  }
  close_range(connection ? 4 : 3, ~0u, 0);
  const std::string name = "bypassd-s" + std::to_string(id);
  prctl(PR_SET_NAME, name.c_str());
  if (auto sandboxed = enter_sandbox(sandbox); !sandboxed) {
    const std::string why = "bypassd could not start the session's worker: sandbox: " + sandboxed.error().message;
    spdlog::error("session {}: {}", id, why);
    if (connection && guest_socket) transport::reject_connection(std::move(connection), why);
    finish(report, EndReason::kWorkerSetupFailed, why);
    _exit(1);
  }
  serve(std::move(connection));
  spdlog::default_logger()->flush();
  // _exit: the atexit handlers and static destructors are bypassd's, not this session's.
  _exit(0);
}

}  // namespace bypass::host
