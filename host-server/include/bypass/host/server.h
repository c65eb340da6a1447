// bypassd's main process: accepts guests, applies the access policy and the limits, and runs
// each session in a worker (a sandboxed process of its own by default; worker.h). It never
// reads a guest's protocol stream or calls the driver itself, so no guest can crash it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <deque>
#include <list>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bypass/host/access.h"
#include "bypass/host/config.h"
#include "bypass/host/worker.h"
#include "bypass/transport/vm.h"

namespace bypass::host {

class Server {
 public:
  explicit Server(ServerConfig config) : config_(std::move(config)) {}
  ~Server();
  // Serves until `stop_fd` becomes readable (a signal's self-pipe); returns the exit code.
  int run(int stop_fd);

 private:
  struct Worker {
    uint64_t id = 0;
    pid_t pid = -1;              // the worker process (Isolation::kProcess)
    std::thread thread;          // or the worker thread (Isolation::kThread)
    base::PeerCredentials peer;  // the guest, from SO_PEERCRED at accept
    WorkerReport* report = nullptr;
    std::chrono::steady_clock::time_point started;
    bool exited = false;  // the process was reaped (or the thread joined)
    bool listed = false;  // its end is in ended_ (as soon as it reported kEnded, before the reap)
    int wait_status = 0;  // waitpid()'s status once reaped
    int vm = -1;          // index in vms_ for a VM guest's session, else -1
    uint32_t slot = 0;    // and its slot in that VM's device
    bool relay = false;   // opened by bypass-grpcd (its pid): a network guest's session
    // A socket guest's connection, kept only to learn when its guest goes away (POLLRDHUP; never
    // read): a worker busy in the driver cannot notice that itself.
    base::UniqueFd guest_watch;
    std::optional<std::chrono::steady_clock::time_point> guest_gone;
    bool killed_abandoned = false;  // killed for staying busy after its guest went away
  };
  // A VM served through its shared-memory device (--vm).
  struct VmState {
    ServerConfig::Vm spec;
    std::optional<transport::VmDevice> device;
    std::vector<bool> busy;  // a worker serves the slot; it is freed once the worker is gone
  };
  struct Ended {
    uint64_t id;
    pid_t pid;
    uid_t uid;
    EndReason reason;
    std::string detail;
    uint64_t objects_left;
    uint64_t records;
    std::string identity;  // a network guest's, as its relay named it ("" otherwise)
  };
  // Who a network guest is, as bypass-grpcd named its session ("grpc IDENTITY ADDRESS").
  struct NetworkPeer {
    bool network = false;
    std::string identity, address;
  };
  NetworkPeer network_peer(const Worker& w) const;
  // The running sessions `viewer` may see (all for a privileged one, else its own), narrowed to
  // one network identity by a non-empty `scope`, each with who its network guest is.
  std::vector<std::pair<const Worker*, NetworkPeer>> visible_sessions(uid_t viewer, const std::string& scope) const;

  void accept_one();
  // A connection accepted while its uid had --max-pending-handshakes in progress: it waits here
  // (up to --handshake-timeout) and is started in arrival order once one of them finishes.
  struct Queued {
    base::UniqueFd conn;
    base::PeerCredentials peer;
    std::chrono::steady_clock::time_point since;
  };
  size_t queued_for(uid_t uid) const;
  // The refusals a connection gets at accept or when its wait in line ends.
  static constexpr const char* kDrainingRefusal =
      "bypassd refused the session: it is draining (bypassctl drain): no new sessions";
  std::string full_refusal() const;  // --max-sessions reached
  // The waiting connections `viewer` may know of (all for a privileged one, else its own).
  size_t waiting_for(uid_t viewer, const std::string& scope) const;
  // Starts the queued connections whose uid has room; refuses those whose wait ran out.
  void start_queued(std::chrono::steady_clock::time_point now);
  bool open_vms();
  // Heartbeat, stale slots, and a worker for every slot a guest requested.
  void serve_vms();
  bool start_vm_worker(int vm, uint32_t slot);
  bool start_worker(base::UniqueFd conn, const base::PeerCredentials& peer);
  void reap();
  // Kills the workers whose guest went away kAbandonedGrace ago and that are still running
  // (busy in the driver with work nobody waits for); the poll timeout until the next such kill.
  void kill_abandoned(std::chrono::steady_clock::time_point now);
  int abandoned_poll_timeout_ms(int otherwise) const;
  void helper_exited(int status);
  // Starts bypass-grpcd again once its back-off has passed; the poll timeout until then.
  void restart_helper(std::chrono::steady_clock::time_point now);
  int helper_poll_timeout_ms(int otherwise) const;
  // The next start of bypass-grpcd after the current back-off, which then doubles (up to 5 s).
  void schedule_helper_restart(std::chrono::steady_clock::time_point now);
  // bypass-grpcd, known by its pid (it may run as another user: --worker-user).
  bool is_relay(pid_t pid) const { return config_.helper_pid > 0 && pid == config_.helper_pid; }
  // A wake-up of the main loop that came late (the host did not run it), or one of its passes
  // that took long: logged from 250 ms on.
  enum class Stall { kWokeLate, kSlowPass };
  void note_stall(Stall kind, std::chrono::steady_clock::time_point due, std::chrono::steady_clock::time_point now);
  void finish(Worker& w);
  void shut_down();
  // Control requests (bypassctl): accepted, then answered when their line arrives, from the
  // same poll loop; a client that says nothing is dropped after kControlDeadline and never
  // holds up an accept.
  struct ControlClient {
    base::UniqueFd fd;
    base::PeerCredentials peer;
    std::chrono::steady_clock::time_point deadline;
  };
  void accept_control(int listen_fd);
  void answer_control(ControlClient& c);
  size_t live_sessions() const;
  bool wait_for_free_slot();
  // `scope`, when not empty, narrows what a viewer sees or ends to the network sessions of that
  // identity (the management API for a caller who is not an --admin: "stats @NAME").
  std::string stats_json(uid_t viewer, const std::string& scope) const;
  // The live sessions a line each, tab-separated (bypass-grpcd's management API reads them).
  std::string sessions_lines(uid_t viewer, const std::string& scope) const;
  std::string end_session(uid_t viewer, const char* id_text, const std::string& scope);
  std::string start_draining(uid_t viewer);
  size_t pending_handshakes(uid_t uid) const;

  ServerConfig config_;
  std::optional<AccessPolicy> policy_;
  std::optional<transport::Listener> listener_;
  std::list<Worker> workers_;
  std::list<Queued> queued_;
  uint64_t next_id_ = 1;
  std::deque<Ended> ended_;       // the most recent sessions that ended, for bypassctl
  int child_pipe_[2] = {-1, -1};  // SIGCHLD's self-pipe
  std::list<ControlClient> control_clients_;
  std::vector<VmState> vms_;
  bool draining_ = false;  // bypassctl drain: new sessions are refused
  // bypass-grpcd's restarts (all on the main thread): when the running one started, when the
  // dead one is due to start again (while helper_pid is -1 and helper_due_), the next back-off.
  std::chrono::steady_clock::time_point helper_started_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point helper_restart_at_;
  bool helper_due_ = false;
  bool shutting_down_ = false;  // set by shut_down(): a relay that dies then is not restarted
  std::chrono::milliseconds helper_backoff_{0};
  uint64_t helper_restarts_ = 0;
};

}  // namespace bypass::host
