#!/usr/bin/env python3
"""Object lifetimes and per-session limits against a hostile guest (issue 13).

Each case starts its own bypassd, a bystander guest rendering `texture` through it (compared
byte for byte with a native run), and the hostile guest tests/hostile/lifecycle_probe.cpp.
bypassd must survive every case, end only the hostile session (with a reason that names what
happened, in its log and in what the guest is told) and serve the bystander correctly.

Cases (one ctest test each):
  destroy-waited-fence   a fence destroyed while another guest thread waits on it forever
  destroy-waited-device  the device destroyed while a wait on it is pending
  instance-rounds        rounds of vkDestroyInstance with a live device and children: bypassd's
                         threads return to their count before, its heap (anonymous RSS, of
                         bypassd and any process of its) does not grow
  device-rounds          the same with vkDestroyDevice and live children
  truncate-memory        the guest reopens the memfd behind mapped host-visible memory and
                         truncates it: EPERM, and the host's driver still fills the memory
  wait-behind-waits      40 infinite waits pending: a 41st wait, on work that finishes, returns
  pending-waits          more infinite waits than the per-session limit: the session ends
                         naming the limit
  object-limit           more objects than --max-objects: the session ends naming the limit
  destroy-in-flight      buffers, their memory and command pools destroyed while the work
                         using them runs: bypassd answers the next question before that work
                         is done (no stall), as much memory again fits under --max-memory, the
                         work completes right (the copy it made holds the data), and 100 more
                         such rounds leave bypassd's memory where it was (what waited for the
                         work was destroyed after it)
"""

import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))

import harness  # noqa: E402
from harness import Bypassd, check, log  # noqa: E402

BYSTANDER_ARGS = ["--frames", "300"]
ROUNDS = 100
WARMUP_ROUNDS = 20  # whatever bypassd and lavapipe set up once is in place after these
BESIDE_ROUNDS = 20
# Unfixed, a round leaked about 2.5 MB and a thread (a device, vkDestroyInstance) or 525 kB (live
# children, vkDestroyDevice); fixed, 100 rounds grow bypassd's heap by 0-150 kB here.
MAX_RSS_GROWTH_KB = 4096
PENDING_LIMIT = 256  # ServerConfig::max_pending_waits
MAX_OBJECTS = 200


def probe_env(server):
    env = server.guest_env()
    if harness.asan_runtime():
        # What the probe leaves alive on purpose stays allocated in its own ICD: its leaks are
        # the point of the test, not ours to report.
        env["ASAN_OPTIONS"] = "detect_leaks=0"
    return env


def probe(server, workdir, tag, *args, timeout=40):
    argv = [harness.env_path("BYPASS_LIFECYCLE_PROBE")] + [str(a) for a in args]
    return harness.run(argv, probe_env(server), workdir, tag, timeout=timeout)


class Bystander:
    """texture through bypassd beside the hostile guest, and natively for reference."""

    def __init__(self, server, workdir):
        self.server = server
        self.native = os.path.join(workdir, "texture.native.out")
        self.out = os.path.join(workdir, "texture.icd.out")
        self.native_run = harness.Running(
            [harness.sample_path("texture")] + BYSTANDER_ARGS + ["--out", self.native],
            harness.native_env(workdir),
            workdir,
            "texture.native",
        )
        self.guest = harness.Running(
            [harness.sample_path("texture")] + BYSTANDER_ARGS + ["--out", self.out],
            server.guest_env(),
            workdir,
            "texture.icd",
        )
        server.wait_stats(
            lambda s: any(x["objects"] > 0 for x in harness.live_for_pid(s, self.guest.pid)),
            "the bystander to hold a session with objects",
            timeout=30,
        )

    def finish(self):
        harness.check_ok(self.native_run.wait(timeout=60), "native texture")
        g = self.guest.wait(timeout=60)
        harness.check_ok(g, "texture (the bystander beside the hostile guest)")
        harness.check_through_bypass(g, "texture")
        harness.check_same_file(self.native, self.out, "bystander texture: ICD output vs native")
        stats = self.server.wait_gone(self.guest.pid, "the bystander's session to end")
        harness.check_ended_clean(stats, self.guest.pid)
        log(f"bystander: texture identical to native ({g.seconds:.2f} s)")


def process_tree(pid):
    """pid and every process below it (a session may run in a worker process of bypassd's)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def threads_and_rss(server):
    """Threads and resident anonymous kB (the heap; not library code paged in on first use,
    nor shared memory) of bypassd and its processes together."""
    threads = rss = 0
    for p in process_tree(server.proc.pid):
        try:
            threads += len(os.listdir(f"/proc/{p}/task"))
            with open(f"/proc/{p}/status") as f:
                rss += next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))
        except (OSError, StopIteration):
            continue
    return threads, rss


def settled(server, want_threads, timeout=10.0):
    """threads_and_rss once the threads are down to `want_threads`, or after `timeout` s."""
    deadline = time.monotonic() + timeout
    threads, rss = threads_and_rss(server)
    while threads > want_threads and time.monotonic() < deadline:
        time.sleep(0.05)
        threads, rss = threads_and_rss(server)
    return threads, rss


def wait_line(running, prefix, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(line.startswith(prefix) for line in running.stdout_text().splitlines()):
            return
        if running.proc.poll() is not None:
            raise harness.TestFailure(
                f"the probe ended before printing {prefix!r}:\n" f"{running.wait(timeout=1).describe()}"
            )
        time.sleep(0.05)
    raise harness.TestFailure(f"the probe did not print {prefix!r} within {timeout} s")


def check_growth(mode, before, after):
    (threads0, rss0), (threads1, rss1) = before, after
    log(
        f"{mode}: bypassd threads {threads0} -> {threads1}, anonymous RSS {rss0} kB -> {rss1} kB "
        f"({rss1 - rss0:+d} kB) over {ROUNDS} rounds"
    )
    check(threads1 == threads0, f"bypassd's threads grew from {threads0} to {threads1} over {ROUNDS} rounds")
    check(rss1 - rss0 < MAX_RSS_GROWTH_KB, f"bypassd's RSS grew by {rss1 - rss0} kB over {ROUNDS} rounds")


def hostile_ended(server, r, end_reason, detail):
    """The hostile guest's session ended with `end_reason` and `detail` (bypassd's stats, its
    log, the guest's stderr); the guest itself did not hang. Returns the ended session."""
    stats = server.wait_gone(r.pid, "the hostile session to end")
    ended = harness.ended_for_pid(stats, r.pid)
    bad = [e for e in ended if not harness.is_clean(e)]
    check(
        len(bad) == 1 and harness.reason_of(bad[0]) == end_reason and detail in bad[0]["detail"],
        f"expected one session of pid {r.pid} to end with {end_reason} ({detail!r}), got {ended}\n{r.describe()}",
    )
    e = bad[0]
    check(e["objects"] == 0, f"the hostile session ended holding {e['objects']} objects: {e}")
    lines = [line for line in server.log_text().splitlines() if f"session {e['id']}:" in line and "[warning]" in line]
    check(
        len(lines) == 1 and f"end ({end_reason}: " in lines[0] and detail in lines[0],
        f"expected one warning naming {end_reason} and {detail!r}, got {lines}",
    )
    check(f"bypassd ended the session: {detail}" in r.stderr, f"the guest was not told {detail!r}:\n{r.describe()}")
    server.check_alive(f"after the hostile session ({end_reason})")
    log(f"hostile session {e['id']} ended: {e['reason']}: {e['detail']}")
    return e


def finish(server, bystander=None):
    if bystander:
        bystander.finish()
    server.check_alive("at the end")
    stats = server.stats()
    check(stats["sessions"] == [] and stats["live_objects"] == 0, f"objects live after every guest left: {stats}")
    status = server.stop()
    check(status == 0, f"bypassd exited {status} on SIGTERM")


def case_destroy_waited(workdir, what):
    server = Bypassd(workdir).start()
    bystander = Bystander(server, workdir)
    r = probe(server, workdir, "probe", f"destroy-waited-{what}")
    check(r.returncode == 0, f"the probe crashed or failed:\n{r.describe()}")
    check("vkWaitForFences: VK_ERROR_DEVICE_LOST" in r.stdout, f"the pending wait should end lost:\n{r.describe()}")
    command = "vkDestroyFence" if what == "fence" else "vkDestroyDevice"
    hostile_ended(
        server, r, harness.EndReason.INVALID_USAGE, f"{command}: {what} is in use by a pending vkWaitForFences"
    )
    finish(server, bystander)


def case_rounds(workdir, level):
    # RSS should follow what bypassd holds, not how its allocator caches: freed heap goes back
    # to the kernel at once (by default 64 MiB stay per malloc arena), one arena instead of one
    # per thread that ever contended, no cache of exited threads' stacks. Set for the guests
    # too (base_env copies this environment), where it does no harm.
    os.environ["GLIBC_TUNABLES"] = "glibc.malloc.arena_max=1:glibc.pthread.stack_cache_size=0"
    server = Bypassd(workdir, ["--malloc-trim", "131072"]).start()
    mode = f"{level}-rounds"
    if level == "instance":
        # A session per round: measured when the rounds' sessions have all ended.
        r = probe(server, workdir, "warmup", mode, WARMUP_ROUNDS)
        harness.check_ok(r, f"{WARMUP_ROUNDS} warm-up rounds")
        server.wait_gone(r.pid)
        before = settled(server, 0, timeout=1.0)
        r = probe(server, workdir, "rounds", mode, ROUNDS)
        harness.check_ok(r, f"{ROUNDS} rounds")
        check(f"rounds: {ROUNDS}" in r.stdout, f"the probe did not finish its rounds:\n{r.describe()}")
        harness.check_ended_clean(server.wait_gone(r.pid), r.pid)
        check_growth(mode, before, settled(server, before[0]))
    else:
        # One session for every round: measured while it lives, after its warm-up rounds and
        # after as many more.
        argv = [harness.env_path("BYPASS_LIFECYCLE_PROBE"), mode, str(ROUNDS)]
        running = harness.Running(argv, probe_env(server), workdir, "rounds", stdin=subprocess.PIPE)
        wait_line(running, "warm:")
        before = settled(server, 0, timeout=1.0)
        running.proc.stdin.write(b"go\n")
        running.proc.stdin.flush()
        wait_line(running, "rounds:")
        after = settled(server, before[0])
        running.close_stdin()
        r = running.wait(timeout=30)
        harness.check_ok(r, f"{2 * ROUNDS} rounds")
        harness.check_ended_clean(server.wait_gone(r.pid), r.pid)
        check_growth(mode, before, after)
    # Again with a bystander rendering: it is served correctly, and nothing is left behind.
    idle_threads = settled(server, 0, timeout=1.0)[0]
    bystander = Bystander(server, workdir)
    r = probe(server, workdir, "rounds.beside", "instance-rounds", BESIDE_ROUNDS)
    harness.check_ok(r, f"{BESIDE_ROUNDS} rounds beside the bystander")
    bystander.finish()
    threads = settled(server, idle_threads)[0]
    check(threads == idle_threads, f"bypassd's threads: {threads} after every guest left, {idle_threads} before")
    finish(server)


def memory_kib(server):
    """Resident anonymous and shared-memory kB of bypassd and its processes: the guest's memory
    a worker still maps (host-visible allocations are memfds) counts as RssShmem."""
    total = 0
    for p in process_tree(server.proc.pid):
        try:
            with open(f"/proc/{p}/status") as f:
                total += sum(int(line.split()[1]) for line in f if line.startswith(("RssAnon:", "RssShmem:")))
        except OSError:
            continue
    return total


def case_destroy_in_flight(workdir, _):
    os.environ["GLIBC_TUNABLES"] = "glibc.malloc.arena_max=1:glibc.pthread.stack_cache_size=0"
    # Room for one of the probe's 64 MiB blocks and its small buffers, not for two blocks.
    server = Bypassd(workdir, ["--malloc-trim", "131072", "--max-memory", str(100 << 20)]).start()
    bystander = Bystander(server, workdir)
    argv = [harness.env_path("BYPASS_LIFECYCLE_PROBE"), "destroy-in-flight", str(ROUNDS)]
    running = harness.Running(argv, probe_env(server), workdir, "probe", stdin=subprocess.PIPE)
    wait_line(running, "warm:")
    out = running.stdout_text()
    check(
        "answered in flight: yes" in out,
        f"bypassd should answer while the destroyed objects' work still runs, not wait for it:\n{out}",
    )
    check("copy: right" in out, f"the work in flight when its objects were destroyed should finish right:\n{out}")
    check(
        "allocated again: yes" in out,
        f"memory freed while in flight should not keep a new allocation over --max-memory:\n{out}",
    )
    time.sleep(0.3)
    before = memory_kib(server)
    running.proc.stdin.write(b"go\n")
    running.proc.stdin.flush()
    wait_line(running, "rounds:")
    after = memory_kib(server)
    running.close_stdin()
    r = running.wait(timeout=30)
    harness.check_ok(r, "the probe")
    m = re.search(r"rounds: (\d+) wrong: (\d+) answered in flight: (\d+)", r.stdout)
    check(m is not None and m.group(2) == "0", f"every round's copy should hold its fill:\n{r.describe()}")
    # Most rounds destroy while their fills still run (all of them unless the machine stalls).
    in_flight = int(m.group(3))
    check(in_flight >= ROUNDS, f"only {in_flight} of {2 * ROUNDS} rounds destroyed while their work ran")
    # A round retires 4 MiB of the guest's memory: kept after its work, 100 rounds hold 400 MiB.
    log(
        f"destroy-in-flight: {in_flight} of {2 * ROUNDS} rounds destroyed in flight; bypassd's anonymous + "
        f"shared RSS {before} kB -> {after} kB over the last {ROUNDS}"
    )
    check(after - before < 32 * 1024, f"bypassd's memory grew by {after - before} kB over {ROUNDS} rounds")
    harness.check_ended_clean(server.wait_gone(r.pid), r.pid)
    finish(server, bystander)


def case_truncate_memory(workdir, _):
    server = Bypassd(workdir).start()
    bystander = Bystander(server, workdir)
    r = probe(server, workdir, "probe", "truncate-memory")
    harness.check_ok(r, "the truncating probe")
    check("ftruncate: EPERM" in r.stdout, f"truncating the shared memfd should fail with EPERM:\n{r.describe()}")
    check("grow: EPERM" in r.stdout, f"growing the shared memfd should fail with EPERM:\n{r.describe()}")
    check(
        "fill: every word written" in r.stdout and "done" in r.stdout,
        f"the host's fill of the memory should work:\n{r.describe()}",
    )
    harness.check_ended_clean(server.wait_gone(r.pid), r.pid)
    server.check_alive("after the truncate")
    log("truncate-memory: ftruncate and growth refused (EPERM), the memory still works")
    finish(server, bystander)


def case_wait_behind_waits(workdir, _):
    server = Bypassd(workdir).start()
    bystander = Bystander(server, workdir)
    r = probe(server, workdir, "probe", "wait-behind-waits", 40)
    check(
        "wait behind 40 pending waits: VK_SUCCESS" in r.stdout,
        f"a wait on finished work should return whatever waits are pending ahead of it:\n{r.describe()}",
    )
    log(next(line for line in r.stdout.splitlines() if line.startswith("wait behind")))
    server.wait_gone(r.pid)
    finish(server, bystander)


def case_pending_waits(workdir, _):
    server = Bypassd(workdir).start()
    bystander = Bystander(server, workdir)
    threads0 = threads_and_rss(server)[0]
    r = probe(server, workdir, "probe", "pending-waits", PENDING_LIMIT + 44)
    check(r.returncode == 0, f"the probe crashed or failed:\n{r.describe()}")
    lost = r.stdout.count("vkWaitForFences: VK_ERROR_DEVICE_LOST")
    check(lost == PENDING_LIMIT + 44, f"every wait should end lost, {lost} did:\n{r.describe()}")
    hostile_ended(
        server,
        r,
        harness.EndReason.PENDING_LIMIT,
        f"vkWaitForFences: too many pending blocking calls (limit {PENDING_LIMIT})",
    )
    threads1 = settled(server, threads0)[0]
    log(f"pending-waits: bypassd threads {threads0} with the bystander before, {threads1} after")
    check(threads1 <= threads0, f"bypassd kept waiter threads: {threads1} threads, {threads0} before")
    finish(server, bystander)


def case_object_limit(workdir, _):
    server = Bypassd(workdir, ["--max-objects", str(MAX_OBJECTS)]).start()
    bystander = Bystander(server, workdir)
    r = probe(server, workdir, "probe", "create-fences", MAX_OBJECTS + 50)
    check(r.returncode == 0, f"the probe crashed or failed:\n{r.describe()}")
    hostile_ended(
        server,
        r,
        harness.EndReason.OBJECT_LIMIT,
        f"vkCreateFence.pFence: object limit reached (--max-objects {MAX_OBJECTS})",
    )
    finish(server, bystander)


def case_abandoned(workdir, _):
    """A guest that submits a minute of work and is killed: its worker, busy in the driver, is
    killed 5 s after the guest went away (it would run for a minute or more otherwise), the session is
    listed as peer_gone saying so, and the bystander renders on."""
    server = Bypassd(workdir).start()
    bystander = Bystander(server, workdir)
    guest = harness.Running(
        [harness.env_path("BYPASS_LIFECYCLE_PROBE"), "abandon", "1024"], probe_env(server), workdir, "probe"
    )
    wait_line(guest, "submitted")
    sessions = harness.live_for_pid(server.stats(), guest.pid)
    check(len(sessions) == 1, f"the probe's session: {sessions}")
    worker = sessions[0].get("worker_pid")
    guest.proc.kill()
    gone = time.monotonic()
    guest.wait(timeout=10)
    stats = server.wait_gone(guest.pid, "the abandoned session to end", timeout=20)
    took = time.monotonic() - gone
    ended = sorted(harness.ended_for_pid(stats, guest.pid), key=lambda e: e["id"])
    check(
        harness.reason_of(ended[-1]) == harness.EndReason.PEER_GONE
        and "stayed busy in the driver" in ended[-1]["detail"],
        f"the abandoned session should end peer_gone, its worker killed: {ended}",
    )
    check(4.5 <= took <= 15, f"the busy worker went {took:.1f} s after its guest (5 s grace)")
    if worker:
        check(not os.path.exists(f"/proc/{worker}"), f"worker pid {worker} is still there")
    check(
        "its guest went away 5 s ago and the worker is still busy" in server.log_text(),
        "bypassd did not say why it killed the worker",
    )
    log(f"abandoned: the busy worker was killed {took:.1f} s after its guest (about a minute of fills left)")
    finish(server, bystander)


if __name__ == "__main__":
    sys.exit(
        harness.main(
            {
                "destroy-waited-fence": lambda w, a: case_destroy_waited(w, "fence"),
                "destroy-waited-device": lambda w, a: case_destroy_waited(w, "device"),
                "instance-rounds": lambda w, a: case_rounds(w, "instance"),
                "device-rounds": lambda w, a: case_rounds(w, "device"),
                "truncate-memory": case_truncate_memory,
                "pending-waits": case_pending_waits,
                "wait-behind-waits": case_wait_behind_waits,
                "object-limit": case_object_limit,
                "destroy-in-flight": case_destroy_in_flight,
                "abandoned": case_abandoned,
            }
        )
    )
