// The sandbox a session's worker process enters before it reads anything from its guest: the
// worker runs the driver on hostile input, so it gets only what the driver needs.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "bypass/base/result.h"

namespace bypass::host {

struct SandboxOptions {
  bool seccomp = true;                 // the system-call filter below
  uid_t uid = static_cast<uid_t>(-1);  // switch to this user (and gid, groups) first; -1 = stay
  gid_t gid = static_cast<gid_t>(-1);
  std::string user;         // for initgroups(): the supplementary groups (e.g. render)
  uint64_t data_limit = 0;  // RLIMIT_DATA in bytes; 0 = unlimited
};

// Applies to the calling process, which must be single-threaded (a freshly forked worker):
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

}  // namespace bypass::host
