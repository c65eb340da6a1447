// The sandbox a session's worker process enters before it reads anything from its guest (the
// worker runs the driver on hostile input, so it gets only what the driver needs), and the one
// bypass-grpcd enters once its sockets are bound (it parses TLS, HTTP/2 and our frames from the
// network).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "bypass/base/result.h"

namespace bypass::host {

// Which system-call filter: the two differ only in what the relay needs for the network.
enum class SandboxProfile {
  kWorker,  // no network at all: no connect, bind, listen, accept
  kRelay,   // bypass-grpcd: accept (TCP, its bound ports) and connect (UNIX sockets, the only
            // kind it may create) allowed; threads only (clone without CLONE_THREAD, fork and
            // clone3 refused), no bind or listen once its ports are bound
};

struct SandboxOptions {
  SandboxProfile profile = SandboxProfile::kWorker;
  bool seccomp = true;                 // the system-call filter below
  uid_t uid = static_cast<uid_t>(-1);  // switch to this user (and gid, groups) first; -1 = stay
  gid_t gid = static_cast<gid_t>(-1);
  std::string user;         // for initgroups(): the supplementary groups (e.g. render)
  uint64_t data_limit = 0;  // RLIMIT_DATA in bytes; 0 = unlimited
};

// Applies to the calling process, all its threads (the filter is installed with
// SECCOMP_FILTER_FLAG_TSYNC, which carries no_new_privs along; glibc's setuid and setgroups
// reach every thread):
//  - the user switch, when asked for;
//  - no core dumps and not dumpable (no other process of the same uid may ptrace it or read
//    its memory through /proc), no new privileges (no setuid programs);
//  - RLIMIT_DATA: every private allocation the guest can cause, however it causes it;
//  - a seccomp filter that refuses (EPERM) what no driver needs and a compromised worker could
//    use against the host or other guests: exec, ptrace and cross-process memory access, new
//    namespaces, mounts, modules, BPF, perf, keyrings, network sockets, signals to any
//    process but itself, raw I/O ports, clock and host name changes, setuid.
// The error names the step that failed (kIo with its errno).
base::Result<void> enter_sandbox(const SandboxOptions& options);

// Fills in the user switch of `options`: `user`'s uid, with `group`'s gid as the primary group
// when one is given (else the user's own). An unknown name is an error that names `option`
// ("--worker-user NAME: no such user").
base::Result<void> switch_to_user(SandboxOptions& options, const std::string& user, const char* option,
                                  const std::string& group = "", const char* group_option = "");

}  // namespace bypass::host
