#include "bypass/host/sandbox.h"

#include <grp.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pwd.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <vector>

namespace bypass::host {

namespace {

// A ThreadSanitizer build (scripts/tsan.sh) maps terabytes of shadow memory before the worker
// starts, and an AddressSanitizer build (BYPASS_SANITIZE) reserves its allocator's space and
// shadow the same way; RLIMIT_DATA counts both, so under any limit the next allocation fails
// (ASan: "Failed to mmap"). Such builds are for finding bugs, never for serving guests, so they
// run their workers without that limit.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitizerShadow = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
constexpr bool kSanitizerShadow = true;
#else
constexpr bool kSanitizerShadow = false;
#endif
#else
constexpr bool kSanitizerShadow = false;
#endif

#if defined(__x86_64__)
constexpr uint32_t kAuditArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
constexpr uint32_t kAuditArch = AUDIT_ARCH_AARCH64;
#else
#error "bypassd's sandbox knows x86_64 and aarch64"
#endif

// Refused outright. Each is a way out of the worker or into another process, none is used by a
// Vulkan driver. (Names absent on an architecture are skipped.)
constexpr long kDenied[] = {
    __NR_execve,
    __NR_execveat,
    __NR_ptrace,
    __NR_process_vm_readv,
    __NR_process_vm_writev,
#ifdef __NR_kcmp
    __NR_kcmp,
#endif
#ifdef __NR_pidfd_getfd
    __NR_pidfd_getfd,
#endif
#ifdef __NR_pidfd_send_signal
    __NR_pidfd_send_signal,
#endif
#ifdef __NR_process_madvise
    __NR_process_madvise,
#endif
    __NR_unshare,
    __NR_setns,
    __NR_mount,
    __NR_umount2,
    __NR_pivot_root,
    __NR_chroot,
#ifdef __NR_fsopen
    __NR_fsopen,
    __NR_fsmount,
    __NR_move_mount,
    __NR_open_tree,
#endif
    __NR_init_module,
    __NR_finit_module,
    __NR_delete_module,
    __NR_kexec_load,
#ifdef __NR_kexec_file_load
    __NR_kexec_file_load,
#endif
    __NR_bpf,
    __NR_perf_event_open,
    __NR_keyctl,
    __NR_add_key,
    __NR_request_key,
    __NR_swapon,
    __NR_swapoff,
    __NR_reboot,
    __NR_acct,
    __NR_settimeofday,
    __NR_clock_settime,
    __NR_adjtimex,
    __NR_clock_adjtime,
    __NR_sethostname,
    __NR_setdomainname,
#ifdef __NR_iopl
    __NR_iopl,
    __NR_ioperm,
#endif
    __NR_quotactl,
    __NR_open_by_handle_at,
    __NR_name_to_handle_at,
    __NR_fanotify_init,
    __NR_setuid,
    __NR_setgid,
    __NR_setreuid,
    __NR_setregid,
    __NR_setresuid,
    __NR_setresgid,
    __NR_setfsuid,
    __NR_setfsgid,
    __NR_setgroups,
    __NR_personality,
    __NR_bind,
    __NR_listen,
#ifdef __NR_mknod
    __NR_mknod,
#endif
    __NR_mknodat,
};

// Refused to a worker besides kDenied (bypass-grpcd needs them: it accepts network guests and
// connects to bypassd's UNIX socket per session).
constexpr long kDeniedWorker[] = {
    __NR_connect,
    __NR_accept,
    __NR_accept4,
};

// Refused to bypass-grpcd besides kDenied: new processes. Its threads are clone() with
// CLONE_THREAD, checked below; clone3 passes its flags in memory a filter cannot read, so it
// fails with ENOSYS, on which glibc falls back to clone().
constexpr long kDeniedRelay[] = {
#ifdef __NR_fork
    __NR_fork,
    __NR_vfork,
#endif
};

// Allowed at once (none of them is in kDenied): futex waits and wakes on the rings and in the
// driver, the reply and fd paths, timed sleeps, memory the driver maps and unmaps.
constexpr long kHot[] = {
    __NR_futex,
    __NR_sched_yield,
    __NR_read,
    __NR_write,
    __NR_recvmsg,
    __NR_sendmsg,
    __NR_ppoll,
#ifdef __NR_poll
    __NR_poll,
#endif
    __NR_clock_nanosleep,
    __NR_nanosleep,
    __NR_clock_gettime,
    __NR_madvise,
    __NR_mmap,
    __NR_munmap,
    __NR_mprotect,
    __NR_getpid,
    __NR_gettid,
    __NR_membarrier,
};

struct Filter {
  std::vector<sock_filter> code;
  void stmt(uint16_t op, uint32_t k) { code.push_back(BPF_STMT(op, k)); }
  void jump(uint16_t op, uint32_t k, uint8_t jt, uint8_t jf) { code.push_back(BPF_JUMP(op, k, jt, jf)); }
  void load_nr() { stmt(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)); }
  // Low 32 bits of argument i (pids and socket domains fit).
  void load_arg(int i) { stmt(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, args) + 8 * i); }
  void ret(uint32_t action) { stmt(BPF_RET | BPF_K, action); }
};

constexpr uint32_t kRefuse = SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA);

std::vector<sock_filter> build_filter(pid_t self, SandboxProfile profile) {
  Filter f;
  // Another architecture's system-call numbers (e.g. i386 through int 0x80) mean other calls:
  // refuse them all.
  f.stmt(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch));
  f.jump(BPF_JMP | BPF_JEQ | BPF_K, kAuditArch, 1, 0);
  f.ret(SECCOMP_RET_KILL_PROCESS);
  f.load_nr();
#if defined(__x86_64__)
  // x32 calls carry this bit and would dodge the numbers below.
  f.jump(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u, 0, 1);
  f.ret(kRefuse);
#endif
  // The calls a session makes per command or per wait, allowed before the list is walked: the
  // filter runs on every system call, and these are most of them.
  for (long nr : kHot) {
    f.jump(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(nr), 0, 1);
    f.ret(SECCOMP_RET_ALLOW);
  }
  const auto refuse = [&f](long nr) {
    f.jump(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(nr), 0, 1);
    f.ret(kRefuse);
  };
  for (long nr : kDenied) refuse(nr);
  if (profile == SandboxProfile::kWorker) {
    for (long nr : kDeniedWorker) refuse(nr);
  } else {
    for (long nr : kDeniedRelay) refuse(nr);
#ifdef __NR_clone3
    f.jump(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 0, 1);
    f.ret(SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA));
#endif
    // clone(): threads only (the flags are the first argument on x86_64 and aarch64).
    f.jump(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 0, 4);
    f.load_arg(0);
    f.jump(BPF_JMP | BPF_JSET | BPF_K, CLONE_THREAD, 0, 1);
    f.ret(SECCOMP_RET_ALLOW);
    f.ret(kRefuse);
  }
  // socket(): UNIX sockets only (socketpair for presentation); no network.
  f.jump(BPF_JMP | BPF_JEQ | BPF_K, __NR_socket, 0, 4);
  f.load_arg(0);
  f.jump(BPF_JMP | BPF_JEQ | BPF_K, AF_UNIX, 0, 1);
  f.ret(SECCOMP_RET_ALLOW);
  f.ret(kRefuse);
  // Signals: to this process (and its threads) only. abort() and raise() use these.
  for (long nr : {static_cast<long>(__NR_kill), static_cast<long>(__NR_tgkill)}) {
    f.jump(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(nr), 0, 4);
    f.load_arg(0);
    f.jump(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(self), 0, 1);
    f.ret(SECCOMP_RET_ALLOW);
    f.ret(kRefuse);
  }
  // tkill names a thread id alone, which may be another process's.
  f.jump(BPF_JMP | BPF_JEQ | BPF_K, __NR_tkill, 0, 1);
  f.ret(kRefuse);
  f.ret(SECCOMP_RET_ALLOW);
  return f.code;
}

base::Error<base::Errc> fail(const char* step) { return base::errno_error(base::Errc::kIo, step, errno); }

}  // namespace

base::Result<void> switch_to_user(SandboxOptions& o, const std::string& user, const char* option,
                                  const std::string& group, const char* group_option) {
  const passwd* pw = getpwnam(user.c_str());
  if (!pw) return base::make_error(base::Errc::kInvalidArgument, std::string(option) + " " + user + ": no such user");
  o.user = user;
  o.uid = pw->pw_uid;
  o.gid = pw->pw_gid;
  if (group.empty()) return {};
  const struct group* gr = getgrnam(group.c_str());
  if (!gr)
    return base::make_error(base::Errc::kInvalidArgument, std::string(group_option) + " " + group + ": no such group");
  o.gid = gr->gr_gid;  // primary, and with initgroups one of the process's groups
  return {};
}

base::Result<void> enter_sandbox(const SandboxOptions& o) {
  if (o.uid != static_cast<uid_t>(-1)) {
    // A change of user clears the parent-death signal: armed again after it, so a worker or a
    // relay that runs as another user still ends with bypassd.
    int death_signal = 0;
    prctl(PR_GET_PDEATHSIG, &death_signal, 0, 0, 0);
    if (!o.user.empty() && initgroups(o.user.c_str(), o.gid) != 0) return fail("initgroups");
    if (setgid(o.gid) != 0) return fail("setgid");
    if (setuid(o.uid) != 0) return fail("setuid");
    if (death_signal != 0 && prctl(PR_SET_PDEATHSIG, death_signal, 0, 0, 0) != 0) return fail("PR_SET_PDEATHSIG");
  }
  const rlimit no_core{0, 0};
  if (setrlimit(RLIMIT_CORE, &no_core) != 0) return fail("RLIMIT_CORE");
  if (o.data_limit != 0 && !kSanitizerShadow) {
    const rlimit data{o.data_limit, o.data_limit};
    if (setrlimit(RLIMIT_DATA, &data) != 0) return fail("RLIMIT_DATA");
  }
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) return fail("PR_SET_DUMPABLE");
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return fail("PR_SET_NO_NEW_PRIVS");
  if (!o.seccomp) return {};
  std::vector<sock_filter> code = build_filter(getpid(), o.profile);
  const sock_fprog prog{static_cast<unsigned short>(code.size()), code.data()};
  // TSYNC: a relay has gRPC's threads by now; they get the filter (and no_new_privs) too.
  if (syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog) != 0) return fail("seccomp");
  return {};
}

}  // namespace bypass::host
