#include "bypass/host/server.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/fmt/ranges.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <sstream>
#include <vector>

#include "bypass/base/json.h"
#include "bypass/base/socket_path.h"
#include "bypass/base/unix_socket.h"
#include "bypass/transport/doorbell.h"
#include "bypass/transport/session.h"
#include "bypass/wire/protocol.h"
#include "driver_preload.h"

namespace bypass::host {

namespace {

int g_child_pipe = -1;                            // write end of the running server's SIGCHLD pipe
constexpr uid_t kNoUid = static_cast<uid_t>(-1);  // a viewer with no rights (a scoped drain)

// bypass-grpcd's restarts: the first after 100 ms, each next one waits twice as long up to 5 s;
// one that stayed up 30 s had a good run, and its successor starts from 100 ms again.
constexpr std::chrono::milliseconds kHelperBackoffFirst{100};
constexpr std::chrono::milliseconds kHelperBackoffMax{5000};
constexpr std::chrono::seconds kHelperGoodRun{30};

void on_child(int) {
  const int saved = errno;
  char c = 1;
  [[maybe_unused]] auto r = write(g_child_pipe, &c, 1);
  errno = saved;
}

// The control socket bypassctl talks to; -1 (and a log line) when it cannot be made.
int listen_control(const std::string& path, mode_t mode, gid_t gid) {
  auto fd = base::listen_unix(path, SOCK_STREAM, 8);
  if (!fd) {
    spdlog::warn("control socket: {}", fd.error().message);
    return -1;
  }
  // Anyone who may open a session may ask about their own sessions (and only those).
  if (gid != static_cast<gid_t>(-1)) [[maybe_unused]]
    int r = chown(path.c_str(), static_cast<uid_t>(-1), gid);
  chmod(path.c_str(), mode);
  return fd->release();
}

void drain(int fd) {
  char buf[64];
  while (read(fd, buf, sizeof buf) > 0) {
  }
}

std::string describe_exit(int status) {
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    return "the worker process died of signal " + std::to_string(sig) + " (" + strsignal(sig) + ")";
  }
  return "the worker process exited with status " + std::to_string(WEXITSTATUS(status));
}

}  // namespace

Server::~Server() {
  for (Worker& w : workers_) unmap_worker_report(w.report);
  if (child_pipe_[0] >= 0) {
    signal(SIGCHLD, SIG_DFL);
    g_child_pipe = -1;
    close(child_pipe_[0]);
    close(child_pipe_[1]);
  }
}

size_t Server::pending_handshakes(uid_t uid) const {
  size_t n = 0;
  for (const Worker& w : workers_)
    if (!w.exited && w.peer.uid == uid && w.report->state.load(std::memory_order_acquire) == WorkerReport::kHandshaking)
      ++n;
  return n;
}

void Server::accept_one() {
  auto accepted = listener_->accept_connection(transport::deadline_after(std::chrono::milliseconds(0)));
  if (!accepted) {
    // kTimeout: a guest that gave up while queued; else out of descriptors (that guest was
    // refused, transport/session.h) or worse.
    if (accepted.code() != transport::Status::kTimeout) spdlog::warn("{}", accepted.error().message);
    return;
  }
  base::UniqueFd conn = std::move(accepted).value();
  // Unknown credentials (pid, uid and gid -1) are refused by the policy.
  const auto cred = base::peer_credentials(conn.get());
  const base::PeerCredentials peer = cred ? *cred : base::PeerCredentials{};
  // Every refusal is one line: in our log, and (through the handshake's reject) in the guest's.
  // Our own relay is let in whoever it runs as; the guests behind it it has authenticated.
  std::string refusal = is_relay(peer.pid) ? std::string() : policy_->check(conn.get(), peer);
  if (refusal.empty() && draining_) refusal = kDrainingRefusal;
  if (refusal.empty() && live_sessions() >= config_.max_sessions && !wait_for_free_slot()) refusal = full_refusal();
  // At the handshake cap a guest waits in line behind its uid's earlier ones (a burst of guests
  // starting together); only beyond the line is it refused, so a flood from one uid costs at
  // most the line's descriptors and never holds up another uid.
  const size_t waiting = queued_for(peer.uid);
  const bool at_cap = waiting > 0 || pending_handshakes(peer.uid) >= config_.max_pending_per_uid;
  if (refusal.empty() && at_cap && waiting >= config_.max_queued_per_uid) {
    refusal = "bypassd refused the session: uid " + std::to_string(peer.uid) + " has " +
              std::to_string(config_.max_pending_per_uid) + " handshakes in progress and " +
              std::to_string(config_.max_queued_per_uid) + " waiting, the limit (--max-pending-handshakes " +
              std::to_string(config_.max_pending_per_uid) + ", --max-queued-handshakes " +
              std::to_string(config_.max_queued_per_uid) + ")";
  }
  if (!refusal.empty()) {
    spdlog::warn("{} (guest pid {})", refusal, peer.pid);
    transport::reject_connection(std::move(conn), refusal);
    return;
  }
  if (at_cap) {
    spdlog::debug("guest pid {} (uid {}) waits for a handshake slot ({} in progress)", peer.pid, peer.uid,
                  pending_handshakes(peer.uid));
    queued_.push_back({std::move(conn), peer, std::chrono::steady_clock::now()});
    return;
  }
  if (!start_worker(std::move(conn), peer)) return;
}

std::string Server::full_refusal() const {
  return "bypassd refused the session: " + std::to_string(live_sessions()) +
         " sessions open, the limit (--max-sessions " + std::to_string(config_.max_sessions) + ")";
}

size_t Server::queued_for(uid_t uid) const {
  size_t n = 0;
  for (const Queued& q : queued_) n += q.peer.uid == uid;
  return n;
}

void Server::start_queued(std::chrono::steady_clock::time_point now) {
  const auto wait_limit = std::chrono::milliseconds(config_.handshake_timeout_ms);
  for (auto it = queued_.begin(); it != queued_.end();) {
    std::string refusal;
    if (draining_) {
      refusal = kDrainingRefusal;
    } else if (pending_handshakes(it->peer.uid) < config_.max_pending_per_uid) {
      if (live_sessions() >= config_.max_sessions) {
        refusal = full_refusal();
      } else {
        // Earlier arrivals of the same uid go first: only the first waiting one of a uid can
        // get here, as the others see the slot it takes.
        Queued q = std::move(*it);
        it = queued_.erase(it);
        start_worker(std::move(q.conn), q.peer);
        continue;
      }
    } else if (now - it->since >= wait_limit) {
      refusal = "bypassd refused the session: uid " + std::to_string(it->peer.uid) + " waited " +
                std::to_string(config_.handshake_timeout_ms) + " ms behind " +
                std::to_string(config_.max_pending_per_uid) + " handshakes in progress (--max-pending-handshakes " +
                std::to_string(config_.max_pending_per_uid) + ", --handshake-timeout " +
                std::to_string(config_.handshake_timeout_ms) + ")";
    }
    if (refusal.empty()) {
      ++it;
      continue;
    }
    spdlog::warn("{} (guest pid {})", refusal, it->peer.pid);
    transport::reject_connection(std::move(it->conn), refusal);
    it = queued_.erase(it);
  }
}

bool Server::start_worker(base::UniqueFd conn, const base::PeerCredentials& peer) {
  WorkerReport* report = map_worker_report();
  if (!report) {
    spdlog::error("refused a guest (pid {}): cannot map a worker report page: {}", peer.pid, std::strerror(errno));
    transport::reject_connection(std::move(conn), "bypassd refused the session: out of memory");
    return false;
  }
  Worker& w = workers_.emplace_back();
  w.id = next_id_++;
  w.peer = peer;
  w.report = report;
  w.started = std::chrono::steady_clock::now();
  w.relay = is_relay(peer.pid);
  if (config_.isolation == Isolation::kThread) {
    w.thread = std::thread(
        [fd = conn.release(), id = w.id, this, report] { serve_connection(base::UniqueFd(fd), id, config_, report); });
    return true;
  }
  // Our own reference to the guest's end, to notice its hang-up (never read). The worker keeps
  // its copy; ours closes when the guest goes away or the worker is reaped.
  w.guest_watch = base::UniqueFd(fcntl(conn.get(), F_DUPFD_CLOEXEC, 0));
  auto pid = spawn_worker(std::move(conn), w.id, config_, report);
  if (!pid) {
    spdlog::error("session {}: cannot start a worker for guest pid {}: {}", w.id, peer.pid, pid.error().message);
    unmap_worker_report(report);
    workers_.pop_back();
    return false;
  }
  w.pid = *pid;
  spdlog::debug("session {}: worker pid {} for guest pid {} uid {}", w.id, w.pid, peer.pid, peer.uid);
  return true;
}

bool Server::open_vms() {
  for (const ServerConfig::Vm& spec : config_.vms) {
    transport::VmDeviceOptions options;
    options.size = spec.size;
    options.slots = spec.slots;
    options.ring_bytes = config_.vm_ring_bytes;
    options.max_message = std::min<size_t>(config_.max_message, options.max_message);
    options.doorbells = true;
    auto device = transport::VmDevice::create(spec.path, options);
    if (!device) {
      spdlog::error("--vm {}:{}: {}", spec.name, spec.path, device.error().message);
      return false;
    }
    VmState& vm = vms_.emplace_back();
    vm.spec = spec;
    vm.busy.assign(device->slot_count(), false);
    vm.device.emplace(std::move(*device));
    std::string ports;
    const std::string file = spec.path.substr(spec.path.rfind('/') + 1);
    for (uint32_t slot = 0; slot < vm.device->slot_count(); ++slot) {
      ports += fmt::format(
          " -chardev socket,id=bypass{0},path={1},reconnect=1 -device virtserialport,chardev=bypass{0},name={2}.{0}",
          slot, transport::doorbell_path(spec.path, slot), file);
    }
    spdlog::info(
        "serving VM {} on {} ({} MiB, {} session slots): QEMU -object memory-backend-file,id=bypass,"
        "share=on,mem-path={},size={}M -device ivshmem-plain,memdev=bypass; doorbells: -device virtio-serial-pci{}",
        spec.name, spec.path, spec.size >> 20, spec.slots, spec.path, spec.size >> 20, ports);
  }
  return true;
}

void Server::serve_vms() {
  const auto now = std::chrono::steady_clock::now();
  for (size_t i = 0; i < vms_.size(); ++i) {
    VmState& vm = vms_[i];
    vm.device->heartbeat();
    vm.device->serve_doorbells(vm.busy);
    vm.device->sweep_stale_slots(now);
    for (uint32_t slot = 0; slot < vm.busy.size(); ++slot) {
      if (vm.busy[slot] || !vm.device->slot_requested(slot)) continue;
      // Over the session limit the request waits; the guest gives up at its deadline.
      if (live_sessions() >= config_.max_sessions) return;
      start_vm_worker(static_cast<int>(i), slot);
    }
  }
}

bool Server::start_vm_worker(int vm_index, uint32_t slot) {
  VmState& vm = vms_[static_cast<size_t>(vm_index)];
  WorkerReport* report = map_worker_report();
  if (!report) return false;
  Worker& w = workers_.emplace_back();
  w.id = next_id_++;
  // A VM's guests are no local user's: they belong to whoever configured bypassd to serve it.
  w.peer = base::PeerCredentials{-1, geteuid(), getegid()};
  w.report = report;
  w.started = std::chrono::steady_clock::now();
  w.vm = vm_index;
  w.slot = slot;
  vm.busy[slot] = true;
  transport::VmDevice* device = &*vm.device;
  const std::string name = vm.spec.name;
  base::UniqueFd doorbell = device->doorbell(slot);
  if (config_.isolation == Isolation::kThread) {
    w.thread = std::thread([this, device, slot, name, id = w.id, report, bell = std::move(doorbell)]() mutable {
      serve_vm_slot(*device, slot, name, id, config_, report, std::move(bell));
    });
    return true;
  }
  auto pid = spawn_worker(
      std::move(doorbell), w.id, config_, report,
      [&](base::UniqueFd bell) { serve_vm_slot(*device, slot, name, w.id, config_, report, std::move(bell)); },
      /*guest_socket=*/false);
  if (!pid) {
    spdlog::error("session {}: cannot start a worker for VM {} slot {}: {}", w.id, name, slot, pid.error().message);
    unmap_worker_report(report);
    workers_.pop_back();
    vm.busy[slot] = false;
    return false;
  }
  w.pid = *pid;
  spdlog::debug("session {}: worker pid {} for VM {} slot {}", w.id, w.pid, name, slot);
  return true;
}

// How long a worker may go on after its guest went away. A worker notices the hang-up itself
// within a receive slice and ends; one that does not is inside the driver with work nobody
// will ever wait for (a dead guest's huge draw, say), holding a CPU and the driver's memory.
constexpr std::chrono::seconds kAbandonedGrace{5};

void Server::finish(Worker& w) {
  const WorkerReport& r = *w.report;
  const bool reported = r.state.load(std::memory_order_acquire) == WorkerReport::kEnded;
  if (w.listed) {
    // Listed when it reported its end; a worker that then dies of a signal is still worth a line.
    if (w.pid > 0 && WIFSIGNALED(w.wait_status))
      spdlog::error("session {}: {} after its session ended", w.id, describe_exit(w.wait_status));
    return;
  }
  w.listed = true;
  // The page is the worker's: a value that is no reason is taken as the worker's failure.
  const auto told = end_reason_from_int(r.end_reason.load(std::memory_order_relaxed));
  EndReason reason = reported && told && *told != EndReason::kNone ? *told : EndReason::kWorkerDied;
  std::string detail = reported ? std::string(r.end_detail, strnlen(r.end_detail, sizeof r.end_detail)) : "";
  if (w.pid > 0 && (WIFSIGNALED(w.wait_status) || (!reported && WIFEXITED(w.wait_status)))) {
    // A crash in the driver (or a worker killed from outside): only this session is gone. Its
    // guest sees the connection close and gets VK_ERROR_DEVICE_LOST.
    detail = describe_exit(w.wait_status) +
             (reported ? " after the session ended (" + std::string(to_string(reason)) + ": " + detail + ")"
                       : " during the session");
    reason = EndReason::kWorkerDied;
    if (w.killed_abandoned) {
      // Not a crash: bypassd ended a session whose guest was gone (kill_abandoned).
      reason = EndReason::kPeerGone;
      detail = "the guest went away; its worker stayed busy in the driver for " +
               std::to_string(kAbandonedGrace.count()) + " s and was killed";
      spdlog::info("session {}: {}", w.id, detail);
      ended_.push_back(Ended{w.id, w.peer.pid, w.peer.uid, reason, detail, r.stats.objects.load(),
                             r.stats.records.load(), network_peer(w).identity});
      if (ended_.size() > 64) ended_.pop_front();
      return;
    }
    spdlog::error("session {} (guest pid {}, uid {}): {}; its guest gets VK_ERROR_DEVICE_LOST, other sessions go on",
                  w.id, w.peer.pid, w.peer.uid, detail);
  }
  // A connection that never became a session (refused or silent handshake) was logged by its
  // worker; the list holds sessions.
  if (reason != EndReason::kHandshakeFailed) {
    ended_.push_back(Ended{w.id, w.peer.pid, w.peer.uid, reason, detail, r.stats.objects.load(), r.stats.records.load(),
                           network_peer(w).identity});
    if (ended_.size() > 64) ended_.pop_front();
  }
}

void Server::helper_exited(int status) {
  const auto now = std::chrono::steady_clock::now();
  const auto up = std::chrono::duration_cast<std::chrono::milliseconds>(now - helper_started_);
  if (up >= kHelperGoodRun || helper_backoff_.count() == 0) helper_backoff_ = kHelperBackoffFirst;
  const bool restart = static_cast<bool>(config_.start_helper) && !shutting_down_;
  if (shutting_down_) {
    // PR_SET_PDEATHSIG or its own stop: nothing to restart, and nothing to alarm an operator.
    spdlog::info("bypass-grpcd (pid {}) exited while bypassd shuts down", config_.helper_pid);
    config_.helper_pid = -1;
    return;
  }
  // Its sessions' UNIX connections closed with it: their workers end them as peer_gone, and
  // their guests' TCP connections were reset, which they see as VK_ERROR_DEVICE_LOST.
  spdlog::error("bypass-grpcd (pid {}) exited ({} {}) after {} ms: its network sessions are gone; {}",
                config_.helper_pid, WIFSIGNALED(status) ? "signal" : "status",
                WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status), up.count(),
                restart ? fmt::format("restarting it in {} ms", helper_backoff_.count())
                        : std::string("network guests and the management API are gone"));
  config_.helper_pid = -1;
  if (restart) schedule_helper_restart(now);
}

void Server::schedule_helper_restart(std::chrono::steady_clock::time_point now) {
  helper_due_ = true;
  helper_restart_at_ = now + helper_backoff_;
  helper_backoff_ = std::min(helper_backoff_ * 2, kHelperBackoffMax);
}

void Server::restart_helper(std::chrono::steady_clock::time_point now) {
  if (!helper_due_ || now < helper_restart_at_) return;
  helper_due_ = false;
  const pid_t pid = config_.start_helper();
  if (pid < 0) {
    // As if it had died at once: the next try backs off further.
    spdlog::error("cannot start bypass-grpcd again; next try in {} ms", helper_backoff_.count());
    schedule_helper_restart(now);
    return;
  }
  config_.helper_pid = pid;
  helper_started_ = now;
  spdlog::info("bypass-grpcd pid {}: restarted (restart {})", pid, ++helper_restarts_);
}

int Server::helper_poll_timeout_ms(int otherwise) const {
  if (!helper_due_) return otherwise;
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(helper_restart_at_ - std::chrono::steady_clock::now());
  return static_cast<int>(std::clamp<int64_t>(left.count() + 1, 0, otherwise));
}

void Server::reap() {
  if (config_.helper_pid > 0 && config_.isolation != Isolation::kProcess) {
    int status = 0;
    if (waitpid(config_.helper_pid, &status, WNOHANG) == config_.helper_pid) helper_exited(status);
  }
  if (config_.isolation == Isolation::kProcess) {
    int status = 0;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
      if (pid == config_.helper_pid) helper_exited(status);
      for (Worker& w : workers_)
        if (w.pid == pid) {
          w.exited = true;
          w.wait_status = status;
        }
    }
  } else {
    for (Worker& w : workers_)
      if (w.report->state.load(std::memory_order_acquire) == WorkerReport::kEnded && w.thread.joinable()) {
        w.thread.join();
        w.exited = true;
      }
  }
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (!it->exited) {
      // Its session is over (the guest may already be waiting on bypassctl for that) while the
      // process is still on its way out: list it now.
      if (!it->listed && it->report->state.load(std::memory_order_acquire) == WorkerReport::kEnded) finish(*it);
      ++it;
      continue;
    }
    finish(*it);
    if (it->vm >= 0) {
      // Only now, with the worker and everything it made gone, may another guest have the slot
      // (and its heap); the guest of the session that ended sees its peer gone.
      VmState& vm = vms_[static_cast<size_t>(it->vm)];
      vm.device->free_slot(it->slot);
      vm.busy[it->slot] = false;
    }
    unmap_worker_report(it->report);
    it = workers_.erase(it);
  }
}

void Server::kill_abandoned(std::chrono::steady_clock::time_point now) {
  for (Worker& w : workers_) {
    if (!w.guest_gone || w.exited || w.killed_abandoned || w.pid <= 0 || now - *w.guest_gone < kAbandonedGrace)
      continue;
    if (w.report->state.load(std::memory_order_acquire) == WorkerReport::kEnded) continue;  // on its way out
    spdlog::warn(
        "session {} (guest pid {}, uid {}): its guest went away {} s ago and the worker is still busy (in the "
        "driver, with work nobody waits for): killing it",
        w.id, w.peer.pid, w.peer.uid, kAbandonedGrace.count());
    kill(w.pid, SIGKILL);
    w.killed_abandoned = true;
  }
}

int Server::abandoned_poll_timeout_ms(int otherwise) const {
  const auto now = std::chrono::steady_clock::now();
  int64_t best = otherwise;
  for (const Worker& w : workers_) {
    if (!w.guest_gone || w.exited || w.killed_abandoned) continue;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*w.guest_gone + kAbandonedGrace - now);
    best = std::min<int64_t>(best, std::max<int64_t>(left.count() + 1, 0));
  }
  return static_cast<int>(best);
}

void Server::shut_down() {
  shutting_down_ = true;
  helper_due_ = false;
  spdlog::info("bypassd: shutting down, {} sessions open", workers_.size());
  for (Worker& w : workers_) w.report->stop_requested.store(WorkerReport::kStopShutdown, std::memory_order_release);
  // Sessions notice within their receive slice (200 ms) and tear down; what has not ended by
  // the deadline (a driver call that does not return, say) is killed, so shutdown is bounded
  // whatever the guests do.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(config_.shutdown_timeout_ms);
  while (!workers_.empty() && std::chrono::steady_clock::now() < deadline) {
    reap();
    for (VmState& vm : vms_) vm.device->heartbeat();  // the guests' sessions end in order
    if (!workers_.empty()) poll(nullptr, 0, 20);
  }
  if (workers_.empty()) return;
  if (config_.isolation == Isolation::kProcess) {
    for (Worker& w : workers_) {
      spdlog::warn("session {}: worker pid {} did not end within {} ms (--shutdown-timeout); killing it", w.id, w.pid,
                   config_.shutdown_timeout_ms);
      kill(w.pid, SIGKILL);
    }
    while (!workers_.empty()) {
      reap();
      if (!workers_.empty()) poll(nullptr, 0, 10);
    }
  } else {
    // Threads cannot be killed: give up on them (the process exits under them).
    spdlog::warn("bypassd: {} session threads did not end within {} ms; exiting regardless", workers_.size(),
                 config_.shutdown_timeout_ms);
    for (Worker& w : workers_) w.thread.detach();
    workers_.clear();
  }
}

Server::NetworkPeer Server::network_peer(const Worker& w) const {
  // A network guest's session comes from bypass-grpcd (known by its pid), which names it
  // "grpc IDENTITY ADDRESS": who it authenticated and from where. Other guests' names are not
  // believed.
  NetworkPeer p;
  const std::string_view name(w.report->peer_name, strnlen(w.report->peer_name, sizeof(w.report->peer_name)));
  if (!w.relay || !name.starts_with("grpc ")) return p;
  const std::string_view rest = name.substr(5);
  const size_t space = rest.find(' ');
  p.network = true;
  p.identity = rest.substr(0, space);
  if (space != std::string_view::npos) p.address = rest.substr(space + 1);
  return p;
}

std::vector<std::pair<const Server::Worker*, Server::NetworkPeer>> Server::visible_sessions(
    uid_t viewer, const std::string& scope) const {
  const bool all = policy_->privileged(viewer);
  std::vector<std::pair<const Worker*, NetworkPeer>> out;
  for (const Worker& w : workers_) {
    if (!all && w.peer.uid != viewer) continue;
    if (w.report->state.load(std::memory_order_acquire) != WorkerReport::kRunning) continue;
    NetworkPeer net = network_peer(w);
    if (!scope.empty() && net.identity != scope) continue;
    out.emplace_back(&w, std::move(net));
  }
  return out;
}

std::string Server::stats_json(uid_t viewer, const std::string& scope) const {
  const bool all = policy_->privileged(viewer);
  std::ostringstream o;
  uint64_t total = 0;
  o << "{\"sessions\": [";
  bool first = true;
  for (const auto& [worker, net] : visible_sessions(viewer, scope)) {
    const Worker& w = *worker;
    const WorkerReport& r = *w.report;
    total += r.stats.objects.load();
    o << (first ? "" : ", ") << "{\"id\": " << w.id << ", \"pid\": " << w.peer.pid << ", \"uid\": " << w.peer.uid
      << ", \"worker_pid\": " << w.pid << ", \"objects\": " << r.stats.objects.load()
      << ", \"records\": " << r.stats.records.load() << ", \"bytes\": " << r.stats.bytes.load()
      << ", \"replies\": " << r.stats.replies.load() << ", \"memory_bytes\": " << r.stats.memory_bytes.load();
    if (w.vm >= 0)
      o << ", \"vm\": \"" << base::json_escape(vms_[static_cast<size_t>(w.vm)].spec.name) << "\", \"slot\": " << w.slot;
    if (net.network)
      o << ", \"transport\": \"grpc\", \"identity\": \"" << base::json_escape(net.identity) << "\", \"address\": \""
        << base::json_escape(net.address) << "\"";
    o << "}";
    first = false;
  }
  o << "], \"ended\": [";
  first = true;
  for (const Ended& e : ended_) {
    if (!all && e.uid != viewer) continue;
    if (!scope.empty() && e.identity != scope) continue;
    o << (first ? "" : ", ") << "{\"id\": " << e.id << ", \"pid\": " << e.pid << ", \"uid\": " << e.uid
      << ", \"reason\": \"" << to_string(e.reason) << "\", \"objects\": " << e.objects_left
      << ", \"records\": " << e.records << ", \"detail\": \"" << base::json_escape(e.detail) << "\"}";
    first = false;
  }
  o << "], \"live_objects\": " << total << ", \"waiting_handshakes\": " << waiting_for(viewer, scope)
    << ", \"draining\": " << (draining_ ? "true" : "false") << "}\n";
  return o.str();
}

size_t Server::waiting_for(uid_t viewer, const std::string& scope) const {
  // A waiting connection has said nothing yet: no network identity to narrow by.
  if (!scope.empty()) return 0;
  const bool all = policy_->privileged(viewer);
  size_t n = 0;
  for (const Queued& q : queued_) n += all || q.peer.uid == viewer;
  return n;
}

std::string Server::sessions_lines(uid_t viewer, const std::string& scope) const {
  std::ostringstream o;
  o << "draining\t" << (draining_ ? 1 : 0) << "\n";
  o << "waiting\t" << waiting_for(viewer, scope) << "\n";
  for (auto& [worker, net] : visible_sessions(viewer, scope)) {
    const Worker& w = *worker;
    const WorkerReport& r = *w.report;
    const std::string transport = w.vm >= 0 ? "vm" : net.network ? "grpc" : "unix";
    for (char& c : net.identity) c = c == '\t' || c == '\n' ? ' ' : c;
    for (char& c : net.address) c = c == '\t' || c == '\n' ? ' ' : c;
    o << "session\t" << w.id << '\t' << w.peer.pid << '\t' << w.peer.uid << '\t' << w.pid << '\t'
      << r.stats.objects.load() << '\t' << r.stats.records.load() << '\t' << r.stats.bytes.load() << '\t'
      << r.stats.replies.load() << '\t' << r.stats.memory_bytes.load() << '\t' << transport << '\t' << net.identity
      << '\t' << net.address << "\n";
  }
  return o.str();
}

std::string Server::end_session(uid_t viewer, const char* id_text, const std::string& scope) {
  char* end = nullptr;
  const unsigned long long id = std::strtoull(id_text, &end, 10);
  for (Worker& w : workers_) {
    if (w.id != id || w.report->state.load(std::memory_order_acquire) == WorkerReport::kEnded) continue;
    if (!policy_->privileged(viewer) && w.peer.uid != viewer) break;  // as if unknown: not theirs to see
    if (!scope.empty() && network_peer(w).identity != scope) break;
    w.report->stop_requested.store(WorkerReport::kStopOperator, std::memory_order_release);
    spdlog::info("session {}: ending it for uid {} (bypassctl end)", w.id, viewer);
    return "{\"ok\": true}\n";
  }
  return "{\"ok\": false, \"error\": \"no live session " + std::to_string(id) + "\"}\n";
}

std::string Server::start_draining(uid_t viewer) {
  if (!policy_->privileged(viewer)) return "{\"ok\": false, \"error\": \"only root or bypassd's user may drain\"}\n";
  if (!draining_) spdlog::info("bypassd: draining: new sessions are refused, {} live", live_sessions());
  draining_ = true;
  return "{\"ok\": true, \"live\": " + std::to_string(live_sessions()) + "}\n";
}

void Server::accept_control(int lfd) {
  base::UniqueFd fd(accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
  if (!fd) return;
  constexpr size_t kMaxControlClients = 16;
  if (control_clients_.size() >= kMaxControlClients) return;  // closed unanswered: retry later
  const auto cred = base::peer_credentials(fd.get());
  const base::PeerCredentials peer = cred ? *cred : base::PeerCredentials{};  // uid -1: "unknown peer"
  control_clients_.push_back(
      ControlClient{std::move(fd), peer, std::chrono::steady_clock::now() + std::chrono::seconds(2)});
}

void Server::answer_control(ControlClient& c) {
  // One request line, one answer; " @NAME" at its end narrows it to that network identity.
  char buf[320] = {};
  const ssize_t n = read(c.fd.get(), buf, sizeof(buf) - 1);
  buf[n > 0 ? n : 0] = 0;
  buf[strcspn(buf, "\n")] = 0;
  std::string scope;
  if (char* at = strstr(buf, " @")) {
    scope = at + 2;
    *at = 0;
    if (scope.empty()) scope = " ";  // "@" and nothing: matches no identity
  }
  reap();
  // The relay asks for the management API, which its own callers' rights already decided: it
  // sees what bypassd's own user sees.
  const uid_t viewer = is_relay(c.peer.pid) ? geteuid() : c.peer.uid;
  const std::string reply = viewer == static_cast<uid_t>(-1)        ? std::string("{\"error\": \"unknown peer\"}\n")
                            : std::strncmp(buf, "stats", 5) == 0    ? stats_json(viewer, scope)
                            : std::strncmp(buf, "sessions", 8) == 0 ? sessions_lines(viewer, scope)
                            : std::strncmp(buf, "end ", 4) == 0     ? end_session(viewer, buf + 4, scope)
                            : std::strncmp(buf, "drain", 5) == 0    ? start_draining(scope.empty() ? viewer : kNoUid)
                                                                    : std::string("{\"error\": \"unknown request\"}\n");
  // Non-blocking, once: a client that does not read gets what fits.
  [[maybe_unused]] auto w = send(c.fd.get(), reply.data(), reply.size(), MSG_NOSIGNAL);
}

void Server::note_stall(Stall kind, std::chrono::steady_clock::time_point due,
                        std::chrono::steady_clock::time_point now) {
  // Every guest's connection and every bypassctl request waits on this loop. One pass that took
  // long (or a wake-up far past its due time: the process was not run) is worth a line, so that
  // an operator can tell a slow bypassd from a starved host.
  constexpr std::chrono::milliseconds kStall{250};
  if (now - due < kStall) return;
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now - due).count();
  if (kind == Stall::kWokeLate)
    spdlog::warn("bypassd: the main loop woke {} ms late (the host did not run it: CPU or memory pressure)", ms);
  else
    spdlog::warn("bypassd: one pass of the main loop took {} ms", ms);
}

size_t Server::live_sessions() const {
  size_t n = 0;
  for (const Worker& w : workers_) n += !w.listed;
  return n;
}

bool Server::wait_for_free_slot() {
  // A guest's short-lived first connection (the ICD asks for the instance extensions on one)
  // may still be winding down when its next arrives: give ending sessions a moment.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(250);
  while (true) {
    reap();
    if (live_sessions() < config_.max_sessions) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    pollfd p{child_pipe_[0], POLLIN, 0};
    poll(&p, 1, 5);
    if (p.revents) drain(child_pipe_[0]);
  }
}

int Server::run(int stop_fd) {
  auto policy = AccessPolicy::from_config(config_);
  if (!policy) {
    spdlog::error("{}", policy.error().message);
    return 2;
  }
  policy_ = std::move(policy).value();
  // A system service's directory is open to its users (the socket's own mode and group decide);
  // a user's server keeps its directory to itself.
  if (auto dir = base::secure_socket_dir(config_.socket_path, geteuid() == 0 ? 0755 : 0700); !dir) {
    spdlog::error("cannot listen on {}: {}", config_.socket_path, dir.error().message);
    return 1;
  }
  auto listening = transport::Listener::listen(config_.socket_path);
  if (!listening) {
    spdlog::error("cannot listen on {}: {}", config_.socket_path, listening.error().message);
    return 1;
  }
  listener_ = std::move(listening).value();
  if (!listener_->path().empty()) {
    if (policy_->socket_gid() != static_cast<gid_t>(-1) &&
        chown(listener_->path().c_str(), static_cast<uid_t>(-1), policy_->socket_gid()) != 0)
      spdlog::warn("cannot give {} to group {}: {}", listener_->path(), config_.socket_group, std::strerror(errno));
    if (chmod(listener_->path().c_str(), config_.socket_mode) != 0)
      spdlog::warn("cannot set the mode of {}: {}", listener_->path(), std::strerror(errno));
  }
  if (!open_vms()) return 1;
  if (config_.isolation == Isolation::kProcess && config_.preload_drivers) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::string> loaded;
    for (const PreloadedDriver& d : preload_drivers()) {
      if (d.loaded)
        loaded.push_back(d.library);
      else
        spdlog::debug("bypassd: driver {} of {} not preloaded: {}", d.library, d.manifest, d.error);
    }
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
    spdlog::info("bypassd: driver libraries mapped for the workers ({} ms): {}", ms,
                 loaded.empty() ? std::string("none") : fmt::format("{}", fmt::join(loaded, ", ")));
  }
  // The main process is small and every new guest waits on it; the workers run the driver's
  // busy threads. Where we may (root, CAP_SYS_NICE), it runs at a higher priority than they do,
  // so a loaded host still accepts promptly (workers go back to 0 after the fork).
  if (config_.isolation == Isolation::kProcess && setpriority(PRIO_PROCESS, 0, -5) != 0)
    spdlog::debug("bypassd: runs at its inherited priority");
  if (pipe2(child_pipe_, O_CLOEXEC | O_NONBLOCK) != 0) return 1;
  g_child_pipe = child_pipe_[1];
  struct sigaction sa {};
  sa.sa_handler = on_child;
  sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  sigaction(SIGCHLD, &sa, nullptr);

  spdlog::info("bypassd listening on unix:{} (protocol {}, schema {:016x}); sessions run in {}; {}", listener_->path(),
               wire::kProtocolVersion, wire::kSchemaHash,
               config_.isolation == Isolation::kProcess
                   ? (config_.sandbox ? "sandboxed worker processes" : "worker processes (no seccomp)")
                   : "threads of bypassd (no isolation)",
               policy_->describe());
  const std::string control_path = config_.control_path.empty() ? config_.socket_path + ".ctl" : config_.control_path;
  int control_fd = listen_control(control_path, config_.socket_mode, policy_->socket_gid());
  if (control_fd < 0) spdlog::warn("no control socket at {}: bypassctl will not reach this server", control_path);
  std::vector<pollfd> fds;
  while (true) {
    fds.assign(
        {{listener_->fd(), POLLIN, 0}, {stop_fd, POLLIN, 0}, {child_pipe_[0], POLLIN, 0}, {control_fd, POLLIN, 0}});
    for (const ControlClient& c : control_clients_) fds.push_back({c.fd.get(), POLLIN, 0});
    const size_t first_watch = fds.size();
    for (const Worker& w : workers_)
      if (w.guest_watch) fds.push_back({w.guest_watch.get(), POLLRDHUP, 0});
    // A VM guest rings its slot's doorbell as it asks for a session; one without a doorbell is
    // seen at our next look, and the heartbeat is ours to bump at least every 50 ms. A
    // handshake that finishes cannot wake us: guests waiting in line look again every 2 ms.
    for (const VmState& vm : vms_) vm.device->watch_doorbells(&fds, vm.busy);
    const int timeout_ms = abandoned_poll_timeout_ms(
        helper_poll_timeout_ms(!queued_.empty() ? 2
                               : vms_.empty()   ? 500
                                                : static_cast<int>(transport::kVmHeartbeatPeriod.count())));
    const auto slept = std::chrono::steady_clock::now();
    int n = poll(fds.data(), fds.size(), timeout_ms);
    if (n < 0 && errno != EINTR) break;
    const auto woke = std::chrono::steady_clock::now();
    note_stall(Stall::kWokeLate, slept + std::chrono::milliseconds(timeout_ms), woke);
    serve_vms();
    if (fds[2].revents) drain(child_pipe_[0]);
    if (n > 0) {
      size_t k = first_watch;
      for (Worker& w : workers_) {
        if (!w.guest_watch) continue;
        if (fds[k++].revents != 0) {
          // The guest's end hung up: the worker should end by itself; the watch has done its job.
          w.guest_gone = woke;
          w.guest_watch.reset();
        }
      }
    }
    reap();
    const auto now = std::chrono::steady_clock::now();
    kill_abandoned(now);
    start_queued(now);
    restart_helper(now);
    size_t i = 4;
    for (auto it = control_clients_.begin(); it != control_clients_.end(); ++i) {
      const bool ready = n > 0 && fds[i].revents != 0;
      if (ready) answer_control(*it);
      it = ready || now >= it->deadline ? control_clients_.erase(it) : std::next(it);
    }
    if (control_fd >= 0 && (fds[3].revents & POLLIN)) accept_control(control_fd);
    if (fds[1].revents) break;
    if (fds[0].revents & POLLIN) accept_one();
    note_stall(Stall::kSlowPass, woke, std::chrono::steady_clock::now());
  }
  control_clients_.clear();
  for (Queued& q : queued_)
    transport::reject_connection(std::move(q.conn), "bypassd refused the session: it is shutting down");
  queued_.clear();
  shut_down();
  listener_.reset();
  if (control_fd >= 0) {
    close(control_fd);
    unlink(control_path.c_str());
  }
  return 0;
}

}  // namespace bypass::host
