#!/usr/bin/env python3
"""The samples through the bypass ICD against the same samples on lavapipe directly.

Cases (one ctest test each, see CMakeLists.txt):
  output SAMPLE     byte-identical --out natively and through the ICD
  validation SAMPLE through the ICD with the Khronos validation layer: zero errors
  concurrent        four samples at once on one bypassd, all outputs identical to native
  guest-killed      guests SIGKILLed mid-frame (and one mid-wait) while others run on;
                    their sessions end and release every object, the others stay correct
  soak              one bypassd through many rounds of concurrent guests, kills and garbage
                    (label `soak`; BYPASS_SOAK_ROUNDS, default 20)
"""

import os
import re
import signal
import time

import harness
from harness import Bypassd, check, log

# Per sample: the arguments of the comparison runs (small, so the suite stays fast; the
# inputs change every frame, so two frames already catch a stale replay).
OUTPUT_ARGS = {
    "triangle": ["--frames", "3"],
    "compute": ["--frames", "2", "--elements", "1048576"],
    "texture": ["--frames", "2"],
    "multithread": ["--frames", "2"],
    "multithread-primary": ["--frames", "2", "--mode", "primary"],
    "sync": ["--frames", "1"],
    # two instances (two bypass sessions) share memory through fds; --import-garbage adds an
    # import of a file that is not memory, which the validation run leaves out (invalid usage)
    "external_memory": ["--frames", "2", "--import-garbage"],
}

# Longer runs for the tests where guests overlap (about a second each on this machine).
LONG_ARGS = {
    "triangle": ["--frames", "400"],
    "compute": ["--frames", "6", "--elements", "1048576"],
    "texture": ["--frames", "60"],
    "multithread": ["--frames", "20", "--threads", "3"],
}

# Guests that must outlive the kills of guest-killed (several seconds: the kills come about
# 2 s after they start, later on a loaded machine).
SURVIVOR_ARGS = {
    "triangle": ["--frames", "3000"],
    "texture": ["--frames", "600"],
}


def sample_binary(name):
    return name.split("-")[0]


def released_count(log_text, session_id):
    """Objects the server released for a session when it ended, from its end log line."""
    m = re.search(rf"session {session_id}: end \((.*)\), (\d+) objects released$", log_text, re.M)
    check(m is not None, f"bypassd logged no end line for session {session_id}")
    return int(m.group(2))


def native_reference(name, args, workdir):
    out = os.path.join(workdir, f"{name}.native.out")
    r = harness.run_sample(
        sample_binary(name), harness.native_env(workdir), workdir, f"{name}.native", args + ["--out", out]
    )
    harness.check_ok(r, f"native {name}")
    return out


class NativeReferences:
    """Native runs started in the background, beside the ICD runs they are compared with."""

    def __init__(self, args_of, workdir):
        self.runs = {}
        for name, args in args_of.items():
            out = os.path.join(workdir, f"{name}.native.out")
            argv = [harness.sample_path(sample_binary(name))] + args + ["--out", out]
            self.runs[name] = (harness.Running(argv, harness.native_env(workdir), workdir, f"{name}.native"), out)

    def output(self, name):
        run, out = self.runs[name]
        harness.check_ok(run.wait(timeout=150), f"native {name}")
        return out


def check_clean_end(server, stats, pid, what):
    """The guest `pid` ended its sessions cleanly: it destroyed everything it made itself."""
    main = harness.check_ended_clean(stats, pid)
    check(main["records"] > 0, f"{what}: session {main['id']} carried no records")
    for e in harness.ended_for_pid(stats, pid):
        left = released_count(server.log_text(), e["id"])
        check(
            left == 0,
            f"{what}: the guest exited cleanly but bypassd had to release {left} objects of "
            f"session {e['id']} (a destroy did not reach the host)",
        )


def stop_server(server):
    status = server.stop()
    check(status == 0, f"bypassd exited {status} on SIGTERM (expected a clean 0)")
    check("shutting down" in server.log_text(), "bypassd did not log its shutdown")


def case_output(workdir, name, memory=None):
    check(name in OUTPUT_ARGS, f"unknown sample {name}")
    args = OUTPUT_ARGS[name]
    native = native_reference(name, args, workdir)
    server = Bypassd(workdir).start()
    out = os.path.join(workdir, f"{name}.icd.out")
    env = server.guest_env()
    if memory:
        env["BYPASS_MEMORY"] = memory
    r = harness.run_sample(sample_binary(name), env, workdir, f"{name}.icd", args + ["--out", out])
    harness.check_ok(r, f"{name} through the ICD")
    harness.check_through_bypass(r, name)
    harness.check_same_file(native, out, f"{name}: ICD output vs native")
    mode = f" with BYPASS_MEMORY={memory}" if memory else ""
    log(f"{name}: {os.path.getsize(out)} bytes identical natively and through the ICD{mode} ({r.seconds:.2f} s)")
    stats = server.wait_gone(r.pid, f"the session of pid {r.pid} to end")
    check_clean_end(server, stats, r.pid, name)
    check(stats["sessions"] == [] and stats["live_objects"] == 0, f"sessions still live after the guest left: {stats}")
    stop_server(server)


def case_validation(workdir, name):
    check(name in OUTPUT_ARGS, f"unknown sample {name}")
    server = Bypassd(workdir).start()
    env = server.guest_env()
    env["BYPASS_SAMPLE_VALIDATION"] = "1"
    env["VK_LOADER_DEBUG"] = "layer"  # the loader's own word that the layer is in the chain
    args = [a for a in OUTPUT_ARGS[name] if a != "--import-garbage"]
    r = harness.run_sample(sample_binary(name), env, workdir, f"{name}.validation", args)
    harness.check_ok(r, f"{name} through the ICD with validation")
    harness.check_through_bypass(r, name)
    for what in (
        'Insert instance layer "VK_LAYER_KHRONOS_validation"',
        'Inserted device layer "VK_LAYER_KHRONOS_validation"',
    ):
        check(what in r.stderr, f"{name}: the loader did not report: {what}")
    errors = [line for line in r.stderr.splitlines() if line.startswith("validation error") or "VUID-" in line]
    check(not errors, f"{name}: validation errors:\n" + "\n".join(errors[:20]))
    warnings = [line for line in r.stderr.splitlines() if line.startswith("validation warning")]
    log(f"{name}: validation layer on instance and device, 0 errors, {len(warnings)} warnings ({r.seconds:.2f} s)")
    stats = server.wait_gone(r.pid, f"the session of pid {r.pid} to end")
    check_clean_end(server, stats, r.pid, name)
    stop_server(server)


def start_guests(server, names, args_of, workdir, tag):
    guests = {}
    for name in names:
        out = os.path.join(workdir, f"{name}.{tag}.out")
        argv = [harness.sample_path(sample_binary(name))] + args_of[name] + ["--out", out]
        guests[name] = (harness.Running(argv, server.guest_env(), workdir, f"{name}.{tag}"), out)
    return guests


def wait_for_sessions(server, guests, what):
    """Waits until every guest (harness.Running) holds a live session with objects (its instance
    exists); one that exits first fails the wait at once, with its output."""

    def ready(s):
        for g in guests:
            if g.proc.poll() is not None:
                raise harness.TestFailure(f"a guest exited while waiting for {what}:\n{g.result().describe()}")
        return all(any(x["objects"] > 0 for x in harness.live_for_pid(s, g.pid)) for g in guests)

    return server.wait_stats(ready, what, timeout=30)


def case_concurrent(workdir, _):
    names = list(LONG_ARGS)
    natives = NativeReferences(LONG_ARGS, workdir)
    server = Bypassd(workdir).start()
    guests = start_guests(server, names, LONG_ARGS, workdir, "icd")
    pids = [g.pid for g, _ in guests.values()]
    # Hold every guest as soon as its session has objects, until all four are there: then four
    # sessions are live at once for certain, whatever the machine's speed.
    held = set()
    deadline = time.monotonic() + 60
    while len(held) < len(pids):
        check(time.monotonic() < deadline, f"not all guests reached bypassd within 60 s; held {sorted(held)}")
        stats = server.stats()
        for name, (g, _) in guests.items():
            if g.pid in held:
                continue
            check(
                g.proc.poll() is None,
                f"{name} finished before all four guests were connected; "
                f"raise its frame count:\n{g.result().describe()}",
            )
            if any(x["objects"] > 0 for x in harness.live_for_pid(stats, g.pid)):
                os.kill(g.pid, signal.SIGSTOP)
                held.add(g.pid)
        time.sleep(0.01)
    stats = server.stats()
    live = {s["pid"] for s in stats["sessions"]}
    check(set(pids) <= live, f"expected the four guests' sessions live at once, got {stats}")
    harness.check_stats_consistent(stats)
    log(f"four sessions live at once, {stats['live_objects']} objects between them")
    for pid in pids:
        os.kill(pid, signal.SIGCONT)
    for name, (g, out) in guests.items():
        r = g.wait(timeout=150)
        harness.check_ok(r, f"{name} (one of four concurrent guests)")
        harness.check_through_bypass(r, name)
        harness.check_same_file(natives.output(name), out, f"{name} (concurrent): ICD output vs native")
        log(f"{name}: identical to native ({r.seconds:.2f} s)")
    stats = server.wait_gone(pids, "all four sessions to end")
    for name, (g, _) in guests.items():
        check_clean_end(server, stats, g.pid, name)
    check(stats["sessions"] == [] and stats["live_objects"] == 0, f"sessions live after all guests left: {stats}")
    stop_server(server)


def kill_and_check(server, victim, what, survivors):
    """SIGKILLs a guest and checks its session ends, releasing what it held."""
    before = server.stats()
    held = sum(x["objects"] for x in harness.live_for_pid(before, victim.pid))
    check(held > 0, f"{what}: no live session with objects before the kill: {before}")
    for name, g in survivors.items():
        check(
            g.proc.poll() is None,
            f"{name} finished before {what} was killed; raise its frame count:\n" f"{g.result().describe()}",
        )
    os.kill(victim.pid, signal.SIGKILL)
    victim.proc.wait()
    stats = server.wait_gone(victim.pid, f"{what}'s session to end")
    e = harness.check_ended(stats, victim.pid, harness.EndReason.PEER_GONE)
    check(not harness.live_for_pid(stats, victim.pid), f"{what}: session still listed as live: {stats}")
    released = released_count(server.log_text(), e["id"])
    check(released > 0, f"{what}: killed while holding {held} objects, but bypassd released {released}")
    harness.check_stats_consistent(stats)
    live = {s["pid"] for s in stats["sessions"]}
    survivors_live = {name for name, g in survivors.items() if g.pid in live}
    log(
        f"{what} killed while holding {held} objects: session {e['id']} ended ({e['reason']}), "
        f"{released} objects released; {stats['live_objects']} objects live in {sorted(survivors_live)}"
    )
    return e


def case_guest_killed(workdir, _):
    natives = NativeReferences(SURVIVOR_ARGS, workdir)
    server = Bypassd(workdir).start()
    survivors = start_guests(server, list(SURVIVOR_ARGS), SURVIVOR_ARGS, workdir, "survivor")
    running = {name: g for name, (g, _) in survivors.items()}
    # Victims: compute and multithread told to run far longer than the test, and a probe
    # blocked in vkWaitForFences on a fence nobody signals (the host waits on its behalf).
    compute = harness.Running(
        [harness.sample_path("compute"), "--frames", "1000", "--elements", "1048576"],
        server.guest_env(),
        workdir,
        "compute.victim",
    )
    multi = harness.Running(
        [harness.sample_path("multithread"), "--frames", "100000"], server.guest_env(), workdir, "multithread.victim"
    )
    waiter = harness.Running(
        [harness.env_path("BYPASS_PROBE"), "wait-fence"], server.guest_env(), workdir, "probe.victim"
    )
    wait_for_sessions(
        server,
        [compute, multi, waiter] + list(running.values()),
        "every guest to hold a session with objects",
    )
    deadline = time.monotonic() + 20
    while "waiting" not in waiter.stdout_text():
        check(
            time.monotonic() < deadline and waiter.proc.poll() is None,
            f"the probe never reached its fence wait:\n{waiter.result().describe()}",
        )
        time.sleep(0.02)
    time.sleep(0.5)  # mid-frame: both samples are deep in their loops by now
    kill_and_check(server, compute, "compute (mid-frame)", running)
    time.sleep(0.3)
    kill_and_check(server, multi, "multithread (mid-frame, 4 recording threads)", running)
    kill_and_check(server, waiter, "probe (blocked in vkWaitForFences)", running)
    for name, (g, out) in survivors.items():
        r = g.wait(timeout=150)
        harness.check_ok(r, f"{name} (survivor)")
        harness.check_through_bypass(r, name)
        harness.check_same_file(natives.output(name), out, f"{name} (survivor): ICD output vs native")
        log(f"{name}: survived the kills, identical to native ({r.seconds:.2f} s)")
    pids = [g.pid for g in running.values()]
    stats = server.wait_gone(pids, "the survivors to end")
    for name, g in running.items():
        check_clean_end(server, stats, g.pid, name)
    check(stats["sessions"] == [] and stats["live_objects"] == 0, f"objects live after every guest left: {stats}")
    stop_server(server)


def process_fds(pid):
    """bypassd's open file descriptors, as {fd: what it points at}."""
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            pass  # closed while we looked
    return out


def settled_fds(pid, limit, timeout=5.0):
    """The fd table once it is no larger than `limit`, or the last one seen after `timeout` s:
    a descriptor in flight (a stats request being served) must not read as a leak."""
    deadline = time.monotonic() + timeout
    while True:
        fds = process_fds(pid)
        if limit is None or len(fds) <= limit or time.monotonic() > deadline:
            return fds
        time.sleep(0.1)


def process_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def case_soak(workdir, _):
    """One long-lived bypassd through many rounds of guests, kills and bad clients.

    Each round: the four samples at once (outputs compared with native), a compute and a
    multithread guest SIGKILLed mid-frame, a raw client sending garbage. After every round no
    session and no object may be left, and from round 2 on bypassd's open file descriptors
    must be back to what they were after round 1 (a leak grows them every round).
    """
    rounds = int(os.environ.get("BYPASS_SOAK_ROUNDS", "20"))
    natives = NativeReferences(LONG_ARGS, workdir)
    reference = {name: natives.output(name) for name in LONG_ARGS}
    server = Bypassd(workdir).start()
    baseline_fds = None
    for i in range(rounds):
        sub = os.path.join(workdir, f"round{i}")
        os.mkdir(sub)
        guests = start_guests(server, list(LONG_ARGS), LONG_ARGS, sub, "icd")
        victims = [
            harness.Running(
                [harness.sample_path("compute"), "--frames", "1000", "--elements", "1048576"],
                server.guest_env(),
                sub,
                "compute.victim",
            ),
            harness.Running(
                [harness.sample_path("multithread"), "--frames", "100000"],
                server.guest_env(),
                sub,
                "multithread.victim",
            ),
        ]
        wait_for_sessions(server, victims, "the victims to hold sessions")
        time.sleep(0.1 * (i % 7))  # a different moment of the frame each round
        for v in victims:
            os.kill(v.pid, signal.SIGKILL)
            v.proc.wait()
        server.check_alive(f"in round {i + 1}, after the kills")
        bad = harness.run(
            [harness.env_path("BYPASS_RAW_CLIENT"), server.endpoint, "garbage"], harness.base_env(sub), sub, "raw", 30
        )
        server.check_alive(f"in round {i + 1}, after the garbage session")
        check(
            "error " in bad.stdout,
            f"round {i + 1}: the garbage session did not end with an error:\n" f"{bad.describe()}",
        )
        for name, (g, out) in guests.items():
            r = g.wait(timeout=300)
            harness.check_ok(r, f"round {i + 1}: {name}")
            harness.check_same_file(reference[name], out, f"round {i + 1}: {name}: ICD output vs native")
        pids = [g.pid for g, _ in guests.values()] + [v.pid for v in victims] + [bad.pid]
        stats = server.wait_gone(pids, f"round {i + 1}: every session to end", timeout=30)
        check(stats["sessions"] == [] and stats["live_objects"] == 0, f"round {i + 1}: left behind: {stats}")
        for v in victims:
            harness.check_ended(stats, v.pid, harness.EndReason.PEER_GONE)
        fds = settled_fds(server.proc.pid, None if baseline_fds is None else len(baseline_fds))
        rss = process_rss_kib(server.proc.pid)
        if baseline_fds is None:
            baseline_fds = fds
        check(
            len(fds) <= len(baseline_fds),
            f"round {i + 1}: bypassd holds {len(fds)} fds, {len(baseline_fds)} after round 1 (a leak): "
            f"new: { {fd: what for fd, what in fds.items() if baseline_fds.get(fd) != what} }",
        )
        log(
            f"soak round {i + 1}/{rounds}: 4 guests identical to native, 2 killed, 1 garbage session; "
            f"bypassd {len(fds)} fds, {rss // 1024} MiB resident"
        )
    stop_server(server)


if __name__ == "__main__":
    raise SystemExit(
        harness.main(
            {
                "output": case_output,
                # shadow memory: guest-side copies moved by memshare dirty-page barriers
                "shadow": lambda workdir, name: case_output(workdir, name, memory="shadow"),
                "validation": case_validation,
                "concurrent": case_concurrent,
                "guest-killed": case_guest_killed,
                "soak": case_soak,
            }
        )
    )
