// A session's worker: the handshake, the decoder loop and the driver work of one guest, in a
// process of its own (or, with --isolation thread, a thread of bypassd). bypassd's main process
// only accepts, applies the access policy and the limits, and watches its workers.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <string>

#include <functional>

#include "bypass/base/result.h"
#include "bypass/base/unique_fd.h"
#include "bypass/host/config.h"
#include "bypass/host/end_reason.h"
#include "bypass/host/session.h"
#include "bypass/transport/vm.h"

namespace bypass::host {

// One page shared between bypassd and a worker (MAP_SHARED, made before the fork). The worker
// writes; bypassd reads for its logs and bypassctl. Lock-free atomics only, so both sides may
// touch it at any time, and bypassd trusts nothing in it beyond display: a compromised worker
// can only lie about its own session.
struct WorkerReport {
  enum State : uint32_t { kHandshaking = 0, kRunning = 1, kEnded = 2 };
  std::atomic<uint32_t> state{kHandshaking};
  // Set by bypassd: end the session now (kStopShutdown: bypassd is shutting down;
  // kStopOperator: an operator ended it).
  std::atomic<uint32_t> stop_requested{0};
  static constexpr uint32_t kStopShutdown = 1, kStopOperator = 2;
  std::atomic<uint32_t> end_reason{0};  // EndReason, written before state becomes kEnded
  char peer_name[72] = {};              // what the guest called itself, once running
  SessionStats stats;
  char end_detail[512] = {};  // NUL-terminated, written before state becomes kEnded
};
static_assert(sizeof(WorkerReport) <= 4096, "one page");
static_assert(std::atomic<uint64_t>::is_always_lock_free && std::atomic<uint32_t>::is_always_lock_free,
              "shared across processes");

// Maps a fresh report page; null when mmap fails.
WorkerReport* map_worker_report();
void unmap_worker_report(WorkerReport* report);

// Runs one guest's session on `connection` in the calling thread: the handshake (with the
// configured deadline), then Session::run. Fills `report` as it goes; returns when the session
// has ended and everything it owned is released.
void serve_connection(base::UniqueFd connection, uint64_t id, const ServerConfig& config, WorkerReport* report);

// The same for a guest of a VM waiting in `slot` of its device (bypassd --vm), with the slot's
// doorbell connection if QEMU made one (VmDevice::doorbell()).
void serve_vm_slot(transport::VmDevice& device, uint32_t slot, const std::string& vm_name, uint64_t id,
                   const ServerConfig& config, WorkerReport* report, base::UniqueFd doorbell);

// Starts a worker process for one session: forks (the caller must be single-threaded), closes
// every descriptor but `connection` and stderr, enters the sandbox, serves, and exits. Returns
// the worker's pid, or -1 with *error.
base::Result<pid_t> spawn_worker(base::UniqueFd connection, uint64_t id, const ServerConfig& config,
                                 WorkerReport* report);
// The general form: the worker runs `serve` (given `connection`, which may be empty) once it is
// sandboxed. `guest_socket`: `connection` is a guest's session socket, which hears why a worker
// that could not start refused it (a VM's doorbell is not: it hears nothing).
base::Result<pid_t> spawn_worker(base::UniqueFd connection, uint64_t id, const ServerConfig& config,
                                 WorkerReport* report, const std::function<void(base::UniqueFd)>& serve,
                                 bool guest_socket);

}  // namespace bypass::host
