"""Shared pieces of the end-to-end tests: real processes, real sockets, no mocks.

Every test gets its own temporary directory (socket, control socket, XDG_RUNTIME_DIR, outputs,
logs), its own bypassd, and leaves no process behind: children are started with
PR_SET_PDEATHSIG so they die with the test even if ctest SIGKILLs it on a timeout, and every
child still running when the test ends is SIGTERMed, then SIGKILLed.

Paths come from the environment that tests/e2e/CMakeLists.txt sets (generator expressions,
so they follow the build tree): BYPASSD, BYPASSCTL, BYPASS_ICD_JSON, BYPASS_SAMPLES_DIR,
BYPASS_PROBE, BYPASS_RAW_CLIENT, BYPASS_LVP_JSON.
"""

import contextlib
import ctypes
import difflib
import enum
import filecmp
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

SAMPLES = ("triangle", "compute", "texture", "multithread")

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_children = []  # every Popen this test started, for the final sweep
_servers = []  # every Bypassd, so a failure report says whether it died under the test


class TestFailure(Exception):
    """An assertion of the test failed; the message says what was expected and what was seen."""


def check(condition, message):
    if not condition:
        raise TestFailure(message)


# A ThreadSanitizer build (BYPASS_TSAN=ON) runs every process of ours several times slower: the
# waits that call a process hung (and ctest's timeouts, in CMake) stretch by this factor.
TIMEOUT_SCALE = float(os.environ.get("BYPASS_TIMEOUT_SCALE") or 1)


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def env_path(name):
    value = os.environ.get(name)
    if not value:
        raise TestFailure(f"environment variable {name} is not set (run the test through ctest)")
    return value


def sample_path(name):
    return os.path.join(env_path("BYPASS_SAMPLES_DIR"), name)


def _die_with_parent():
    # Runs in the child between fork and exec: SIGKILL when the test process dies.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def spawn(argv, env, stdout=None, stderr=None, stdin=subprocess.DEVNULL, user=None):
    """Starts a child that dies with us; tracked for the final sweep. `user`: a uid to run it as
    (its own group, no supplementary groups)."""
    as_user = {} if user is None else {"user": user, "group": user, "extra_groups": []}
    proc = subprocess.Popen(
        argv, env=env, stdout=stdout, stderr=stderr, stdin=stdin, preexec_fn=_die_with_parent, close_fds=True, **as_user
    )
    proc.argv_text = " ".join(argv)
    _children.append(proc)
    return proc


def stop_process(proc, grace=10.0):
    """SIGTERM, wait up to `grace` seconds, then SIGKILL. Returns the exit status."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGCONT)  # a guest a test had stopped must see the SIGTERM
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log(f"{proc.argv_text}: still running {grace} s after SIGTERM, sending SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
    return proc.returncode


def sweep_children():
    for proc in _children:
        if proc.poll() is None:
            log(f"cleanup: stopping leftover {proc.argv_text} (pid {proc.pid})")
            stop_process(proc, grace=3.0)


def base_env(tmpdir):
    env = dict(os.environ)
    # Nothing from the caller's Vulkan setup may leak in: the test says which driver is used.
    for key in (
        "VK_ICD_FILENAMES",
        "VK_ADD_DRIVER_FILES",
        "VK_INSTANCE_LAYERS",
        "VK_LOADER_LAYERS_ENABLE",
        "VK_LOADER_LAYERS_DISABLE",
        "VK_LOADER_DEBUG",
        "BYPASS_ENDPOINT",
        "BYPASS_SAMPLE_VALIDATION",
        "DISPLAY",
        "WAYLAND_DISPLAY",
    ):
        env.pop(key, None)
    env["XDG_RUNTIME_DIR"] = tmpdir  # lavapipe wants one; a private one keeps tests apart
    return env


def lavapipe_library():
    with open(env_path("BYPASS_LVP_JSON")) as f:
        return json.load(f)["ICD"]["library_path"]


def asan_runtime():
    """The ASan runtime of a sanitized build (BYPASS_SANITIZE=ON), else None."""
    return os.environ.get("BYPASS_ASAN_RUNTIME") or None


def native_env(tmpdir):
    """For processes that load lavapipe: bypassd and the native reference runs."""
    env = base_env(tmpdir)
    env["VK_DRIVER_FILES"] = env_path("BYPASS_LVP_JSON")
    if asan_runtime():
        # Keep lavapipe loaded to the end so LeakSanitizer sees what it holds as lavapipe's,
        # not as leaks from an unloaded module (see docs/samples.md).
        env["LD_PRELOAD"] = f"{asan_runtime()} {lavapipe_library()}"
    return env


def tsan_runtime():
    """The ThreadSanitizer runtime of a BYPASS_TSAN=ON build, else None."""
    return os.environ.get("BYPASS_TSAN_RUNTIME") or None


def unsanitized_guest_env(env):
    """A guest env for a program not built by us (vulkaninfo) loading a sanitized ICD."""
    if asan_runtime():
        env = dict(env)
        env["LD_PRELOAD"] = asan_runtime()
        env["ASAN_OPTIONS"] = "detect_leaks=0"  # the program's own leaks are not ours to judge
    elif tsan_runtime():
        env = dict(env)
        env["LD_PRELOAD"] = tsan_runtime()
    return env


class Bypassd:
    """One bypassd on a private socket, logging to a file."""

    def __init__(self, workdir, extra_args=(), user=None):
        self.workdir = workdir
        self.user = user
        self.socket = os.path.join(workdir, "bypassd.sock")
        self.control = self.socket + ".ctl"
        self.log_path = os.path.join(workdir, "bypassd.log")
        self.extra_args = list(extra_args)
        self.proc = None
        self._log_file = None
        _servers.append(self)

    @property
    def endpoint(self):
        return "unix:" + self.socket

    def start(self, timeout=20.0):
        self._log_file = open(self.log_path, "ab")
        argv = [env_path("BYPASSD"), "--socket", self.socket, "--log-level", "debug"] + self.extra_args
        self.proc = spawn(
            argv, native_env(self.workdir), stdout=self._log_file, stderr=subprocess.STDOUT, user=self.user
        )
        deadline = time.monotonic() + timeout * TIMEOUT_SCALE
        while time.monotonic() < deadline:
            check(
                self.proc.poll() is None,
                f"bypassd exited with status {self.proc.returncode} while starting:\n{self.log_text()}",
            )
            if os.path.exists(self.socket) and os.path.exists(self.control):
                return self
            time.sleep(0.02)
        raise TestFailure(f"bypassd did not create {self.socket} within {timeout} s:\n{self.log_text()}")

    def check_alive(self, when=""):
        if self.proc.poll() is not None:
            status = self.proc.returncode
            how = f"signal {-status} ({signal.Signals(-status).name})" if status < 0 else f"status {status}"
            raise TestFailure(f"bypassd died{' ' + when if when else ''}: {how}\n{self.log_text()[-3000:]}")

    def guest_env(self, tmpdir=None):
        env = base_env(tmpdir or self.workdir)
        env["VK_DRIVER_FILES"] = env_path("BYPASS_ICD_JSON")
        env["BYPASS_ENDPOINT"] = self.endpoint
        return env

    def stats(self, user=None):
        as_user = {} if user is None else {"user": user, "group": user, "extra_groups": []}
        out = subprocess.run(
            [env_path("BYPASSCTL"), "--control", self.control, "--json", "stats"],
            capture_output=True,
            text=True,
            timeout=10,
            **as_user,
        )
        check(out.returncode == 0, f"bypassctl stats failed ({out.returncode}): {out.stderr.strip()}")
        try:
            return json.loads(out.stdout)
        except json.JSONDecodeError as e:
            raise TestFailure(f"bypassctl printed invalid JSON ({e}): {out.stdout!r}") from e

    def wait_stats(self, predicate, what, timeout=15.0):
        """Polls stats until predicate(stats) is true; returns those stats."""
        deadline = time.monotonic() + timeout * TIMEOUT_SCALE
        stats = None
        while time.monotonic() < deadline:
            stats = self.stats()
            if predicate(stats):
                return stats
            time.sleep(0.05)
        raise TestFailure(f"timed out after {timeout} s waiting for {what}; last stats: {json.dumps(stats)}")

    def wait_gone(self, pids, what=None, timeout=15.0):
        """Waits until every pid's sessions have all ended (none live, at least one ended)."""
        pids = [pids] if isinstance(pids, int) else list(pids)
        return self.wait_stats(
            lambda s: all(ended_for_pid(s, p) and not live_for_pid(s, p) for p in pids),
            what or f"the sessions of pids {pids} to end",
            timeout,
        )

    def wait_ended(self, session_id, what=None, timeout=15.0):
        """Waits until session `session_id` is listed as ended and nothing is live; returns
        (stats, its entry). Named by id, not taken as the last entry: the last one may be an
        earlier session of the same guest (the loader's short pre-instance session)."""
        stats = self.wait_stats(
            lambda s: s["sessions"] == [] and s["live_objects"] == 0 and any(e["id"] == session_id for e in s["ended"]),
            what or f"session {session_id} to end",
            timeout,
        )
        return stats, next(e for e in stats["ended"] if e["id"] == session_id)

    def stop(self):
        """SIGTERM and wait: a clean shutdown must exit 0."""
        if self.proc is None:
            return None
        # A sanitized bypassd ends with LeakSanitizer's leak check, which ptrace-attaches every
        # thread: on a loaded machine that alone has taken over 10 s after a clean shutdown.
        status = stop_process(self.proc, grace=40.0 if asan_runtime() else 10.0)
        if self._log_file:
            self._log_file.close()
            self._log_file = None
        return status

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def log_text(self):
        if self._log_file:
            self._log_file.flush()
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""


class EndReason(enum.IntEnum):
    """Why bypassd ended a session: bypassctl's "reason" is the member's name in lower case.

    Mirrors host-server/include/bypass/host/end_reason.h, value for value; the e2e_end_reasons
    test checks the two agree (`bypassd --list-end-reasons`). docs/host-server.md says what
    each means.
    """

    GUEST_GOODBYE = 1
    PEER_GONE = 2
    PROTOCOL_ERROR = 3
    INVALID_USAGE = 4
    OBJECT_LIMIT = 5
    PENDING_LIMIT = 6
    OUT_OF_MEMORY = 7
    SEND_TIMEOUT = 8
    DRIVER_ERROR = 9
    SERVER_SHUTDOWN = 10
    HANDSHAKE_FAILED = 11
    WORKER_DIED = 12
    WORKER_SETUP_FAILED = 13
    ENDED_BY_OPERATOR = 14

    def __str__(self):
        return self.name.lower()


# The guest ended its own session (said goodbye, or its process went away).
CLEAN_REASONS = (EndReason.GUEST_GOODBYE, EndReason.PEER_GONE)


def reason_of(ended):
    """The EndReason of one entry of bypassctl's "ended" list."""
    name = ended.get("reason", "")
    check(
        name.upper() in EndReason.__members__ and name == name.lower(),
        f"session {ended.get('id')} ended with {name!r}, which is not an end reason: {ended}",
    )
    return EndReason[name.upper()]


def is_clean(ended):
    return reason_of(ended) in CLEAN_REASONS


def ended_for_pid(stats, pid):
    return [e for e in stats["ended"] if e["pid"] == pid]


def live_for_pid(stats, pid):
    return [s for s in stats["sessions"] if s["pid"] == pid]


def check_stats_consistent(stats):
    total = sum(s["objects"] for s in stats["sessions"])
    check(
        stats["live_objects"] == total,
        f"live_objects {stats['live_objects']} != sum of live sessions' objects {total}: {json.dumps(stats)}",
    )


def check_ended(stats, pid, reasons=CLEAN_REASONS, detail=None):
    """The main session of `pid` ended with one of `reasons` (an EndReason or a tuple of them),
    `detail` (when given) in its detail, holding no objects.

    A guest through the ICD may have had more than one session: the ICD asks for the instance
    extensions on a short-lived connection before the instance's own. The main session is the
    last one; the others must have ended cleanly.
    """
    reasons = (reasons,) if isinstance(reasons, EndReason) else tuple(reasons)
    ended = sorted(ended_for_pid(stats, pid), key=lambda e: e["id"])
    check(ended, f"expected an ended session for pid {pid}: {json.dumps(stats)}")
    for e in ended:
        check(e["objects"] == 0, f"session {e['id']} (pid {pid}) ended with {e['objects']} objects left: {e}")
    for e in ended[:-1]:
        check(is_clean(e), f"session {e['id']} (pid {pid}) ended with {e['reason']} ({e['detail']!r})")
    e = ended[-1]
    check(
        reason_of(e) in reasons,
        f"session {e['id']} (pid {pid}) ended with {e['reason']} ({e['detail']!r}), "
        f"expected {' or '.join(str(r) for r in reasons)}",
    )
    if detail is not None:
        check(
            detail in e["detail"],
            f"session {e['id']} (pid {pid}) ended with detail {e['detail']!r}, " f"expected it to mention {detail!r}",
        )
    return e


def check_ended_clean(stats, pid):
    """The guest ended its own sessions (goodbye or gone), holding no objects."""
    return check_ended(stats, pid, CLEAN_REASONS)


class Run:
    """A finished process: status, output, how long it took."""

    def __init__(self, argv, returncode, stdout, stderr, seconds, pid):
        self.argv = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.seconds = seconds
        self.pid = pid

    def describe(self):
        return (
            f"`{' '.join(self.argv)}` exited {self.returncode} after {self.seconds:.2f} s\n"
            f"--- stdout\n{self.stdout[-4000:]}\n--- stderr\n{self.stderr[-4000:]}"
        )


class Running:
    """A started process whose output goes to files (so a pipe can never fill and stall it)."""

    def __init__(self, argv, env, workdir, tag, stdin=subprocess.DEVNULL, user=None):
        self.argv = argv
        self.out_path = os.path.join(workdir, tag + ".stdout")
        self.err_path = os.path.join(workdir, tag + ".stderr")
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        self.start = time.monotonic()
        self.proc = spawn(argv, env, stdout=self._out, stderr=self._err, stdin=stdin, user=user)
        self.pid = self.proc.pid

    def stdout_text(self):
        with open(self.out_path, "r", errors="replace") as f:
            return f.read()

    def close_stdin(self):
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()

    def wait(self, timeout):
        """Waits up to `timeout` s; a process still running then is a hang: killed and reported."""
        timeout *= TIMEOUT_SCALE
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process(self.proc, grace=2.0)
            self._close()
            raise TestFailure(
                f"`{' '.join(self.argv)}` still running after {timeout} s (hang); killed it\n"
                + self.result().describe()
            )
        self._close()
        return self.result()

    def _close(self):
        for f in (self._out, self._err):
            if not f.closed:
                f.close()

    def result(self):
        with open(self.out_path, "r", errors="replace") as f:
            out = f.read()
        with open(self.err_path, "r", errors="replace") as f:
            err = f.read()
        return Run(self.argv, self.proc.returncode, out, err, time.monotonic() - self.start, self.pid)


def run(argv, env, workdir, tag, timeout, user=None):
    return Running(argv, env, workdir, tag, user=user).wait(timeout)


def run_sample(name, env, workdir, tag, args=(), timeout=120):
    argv = [sample_path(name)] + list(args)
    return run(argv, env, workdir, tag, timeout)


def check_ok(result, what):
    check(result.returncode == 0, f"{what} failed:\n{result.describe()}")


def check_through_bypass(result, what):
    # The samples print the device they use; a loader that fell back to another driver would
    # make every comparison vacuous.
    check("bypass (" in result.stdout, f"{what} did not run on the bypass device:\n{result.describe()}")


def check_same_file(expected, actual, what):
    check(os.path.exists(actual), f"{what}: {actual} was not written")
    if not filecmp.cmp(expected, actual, shallow=False):
        a = open(expected, "rb").read()
        b = open(actual, "rb").read()
        first = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
        raise TestFailure(
            f"{what}: {actual} differs from {expected} (sizes {len(a)} vs {len(b)}, "
            f"first difference at byte {first})"
        )


def text_diff(a, b, name_a, name_b, limit=60):
    lines = list(difflib.unified_diff(a.splitlines(), b.splitlines(), name_a, name_b, lineterm="", n=1))
    if len(lines) > limit:
        lines = lines[:limit] + [f"... ({len(lines) - limit} more diff lines)"]
    return "\n".join(lines)


def main(cases):
    """Runs the case named on the command line: `script.py CASE [ARG]`.

    `cases` maps a name to fn(workdir, arg). The work directory is removed when the case
    passes and kept (its path printed) when it fails, with bypassd's log printed too.
    """
    if len(sys.argv) < 2 or sys.argv[1] not in cases:
        print(f"usage: {sys.argv[0]} CASE [ARG]; cases: {', '.join(sorted(cases))}", file=sys.stderr)
        return 2
    name = sys.argv[1]
    arg = sys.argv[2] if len(sys.argv) > 2 else None
    workdir = tempfile.mkdtemp(prefix=f"bypass-{name}-")
    status = 1
    try:
        cases[name](workdir, arg)
        status = 0
    except TestFailure as e:
        print(f"FAILED: {e}", flush=True)
        for server in _servers:
            if server.proc is not None and server.proc.poll() is not None and server.proc.returncode != 0:
                status = server.proc.returncode
                how = f"signal {-status}" if status < 0 else f"status {status}"
                print(f"NOTE: bypassd on {server.socket} had died ({how}) before the cleanup", flush=True)
    except Exception:  # noqa: BLE001 - a crash of the test itself is a failure too, with its trace
        traceback.print_exc()
    finally:
        sweep_children()
    if status == 0:
        shutil.rmtree(workdir, ignore_errors=True)
        print(f"PASSED: {name}{' ' + arg if arg else ''}")
    else:
        for log_file in sorted(os.listdir(workdir)):
            if log_file.endswith(".log"):
                with open(os.path.join(workdir, log_file), "r", errors="replace") as f:
                    text = f.read()
                print(f"--- {log_file} (last 6000 characters)\n{text[-6000:]}")
        print(f"work directory kept: {workdir}")
    return status
