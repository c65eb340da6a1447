// bypassd's configuration: command line, config file and defaults.
#pragma once

#include <sys/types.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace bypass::host {

// Where a session's driver work runs. `process` (the default): a worker process per session,
// sandboxed, so a driver crash or a guest that corrupts the driver's memory ends that session
// only. `thread`: a thread of bypassd, as before isolation; no boundary between guests, kept
// for measuring what isolation costs and for debugging.
enum class Isolation { kProcess, kThread };

struct ServerConfig {
  std::string socket_path;          // unix socket the guests connect to
  std::string control_path;         // unix socket bypassctl talks to ("" = socket_path + ".ctl")
  std::string device_name;          // substring of the physical device name to expose ("" = all)
  size_t ring_bytes = 8u << 20;     // per ring, per session
  size_t max_message = 256u << 20;  // largest reassembled message (a batch) per session
  size_t max_sessions = 64;
  uint64_t max_objects = 1u << 20;          // per session
  uint64_t max_memory_bytes = 16ull << 30;  // per session, host-visible memory shared with it
  // Per session: blocking calls (waits) handed to waiter threads and not yet answered. Each
  // holds a copy of its message and arguments; a guest queueing more ends its session.
  size_t max_pending_waits = 256;
  std::string log_level = "info";
  // glibc's M_TRIM_THRESHOLD: free heap kept for reuse instead of handed back to the kernel (0:
  // glibc's adaptive default). lavapipe allocates and frees tens of MB per frame; handed back,
  // every frame faults them in again (about 8,800 page faults, most of a 1,000-draw frame's time).
  size_t malloc_trim_bytes = 64u << 20;
  // glibc's M_TOP_PAD: the slack a heap keeps (and grows by) at its top (0: glibc's default).
  // Without it a thread arena's heaps (lavapipe's submit thread allocates a frame's worth in one)
  // could fall into a mode where every frame grows the heap again page by page: about 250,000
  // page faults and a tenth of the frame rate for the whole session, in one session in eight on
  // a 2-vCPU VM (docs/benchmarks.md). It costs address space (VmData), and 1-2 MiB of an idle
  // session's resident memory. Set in each worker after its fork (worker.cpp); in bypassd itself
  // only for --isolation thread.
  size_t malloc_top_pad_bytes = 16u << 20;
  // Per socket session: small host-visible allocations (up to small_memory_max()) are blocks of
  // one memfd of this size the guest maps once, instead of a memfd, an fd and two mappings each
  // (host-server/src/memory.cpp). Made at the first such allocation; pages freed blocks leave
  // behind stay resident for the next ones, so it bounds that too. 0: every allocation its own.
  size_t small_memory_heap_bytes = 32u << 20;
  uint64_t small_memory_max() const { return std::min<uint64_t>(1u << 20, small_memory_heap_bytes / 8); }

  // ---- isolation (host-server/src/worker.cpp, sandbox.cpp)
  Isolation isolation = Isolation::kProcess;
  bool sandbox = true;      // seccomp filter, no new privileges, not dumpable
  std::string worker_user;  // a root bypassd runs workers as this user ("" = its own)
  // Map the drivers' libraries into the main process before forking (src/driver_preload.h): each
  // worker then starts with them loaded and relocated. No Vulkan call is made.
  bool preload_drivers = true;
  // RLIMIT_DATA of a worker: every private allocation the guest can cause in the driver
  // (recorded commands, device-local memory, queued waits, reassembly). 0 = max_memory + 4 GiB.
  uint64_t worker_data_bytes = 0;

  // ---- deadlines (milliseconds)
  uint32_t handshake_timeout_ms = 2000;  // a connection that says nothing is dropped after this
  uint32_t send_timeout_ms = 5000;       // a guest that reads no reply for this long is ended
  uint32_t shutdown_timeout_ms = 5000;   // then workers that did not end are killed

  // ---- access (host-server/src/access.cpp)
  mode_t socket_mode = 0660;
  std::string socket_group = "bypass";    // group of both sockets, allowed to connect; "" = none
  std::vector<std::string> allow_users;   // names or uids, besides root and bypassd's own uid
  std::vector<std::string> allow_groups;  // names or gids (primary or supplementary), likewise
  size_t max_pending_per_uid = 4;         // handshakes in progress per uid
  // Connections of a uid at that cap wait in line (for at most handshake_timeout_ms) up to this
  // many, so a burst of guests starting at once is served; beyond it they are refused.
  size_t max_queued_per_uid = 16;

  // ---- VM guests (--vm NAME:PATH[:SIZE_MIB[:SLOTS]]): a shared-memory device file per VM that
  // QEMU maps as an ivshmem-plain BAR (transport/include/bypass/transport/vm.h)
  struct Vm {
    std::string name;
    std::string path;
    uint64_t size = uint64_t{256} << 20;
    uint32_t slots = 4;
  };
  std::vector<Vm> vms;
  size_t vm_ring_bytes = 1u << 20;  // per ring per slot: the rest of a slot is host-visible memory

  // bypass-grpcd, when bypassd started it (--listen, --management): reaped and reported by the
  // server like a worker, so its death is one error line instead of a silent zombie, and
  // started again through start_helper (a new pid, or -1) after a back-off (kHelperBackoff*).
  pid_t helper_pid = -1;
  std::function<pid_t()> start_helper;
};

// The RLIMIT_DATA a worker runs under (see worker_data_bytes).
inline uint64_t worker_data_limit(const ServerConfig& c) {
  return c.worker_data_bytes != 0 ? c.worker_data_bytes : c.max_memory_bytes + (4ull << 30);
}

}  // namespace bypass::host
