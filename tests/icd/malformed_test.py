#!/usr/bin/env python3
"""Hostile input: a raw client (tests/icd/raw_client.cpp) sends bypassd bad messages.

Cases (one ctest test each):
  stream     one bypassd, a good guest rendering through the ICD all along, and one raw
             session per kind of bad batch: each bad session must end with one log line
             naming the session and the reason, the client must get that reason (kMsgError)
             and then see the peer gone, nothing after the bad batch may be answered, and the
             good guest's output must equal native
  free-in-flight
             a guest frees host-visible memory while its submitted work still writes it
             (invalid usage, but guests are untrusted): bypassd must survive, the good guest
             beside it must finish correctly
  handshake  a wrong schema hash and a wrong protocol version are refused with a line naming
             both sides' values, on the client and in bypassd's log; the server serves on
"""

import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))

import harness  # noqa: E402
from harness import Bypassd, check, log  # noqa: E402

# Mode of raw_client -> the session's end reason, and a regular expression its detail must match.
PROTOCOL = harness.EndReason.PROTOCOL_ERROR
USAGE = harness.EndReason.INVALID_USAGE
BAD_BATCHES = {
    "garbage": (PROTOCOL, r".+"),
    "garbage-payload": (PROTOCOL, r"vkDestroyBuffer.*verification"),
    "unknown-command": (PROTOCOL, r"unknown command"),
    "unknown-control": (PROTOCOL, r"unknown control command"),
    "bad-handle": (USAGE, r"vkDestroyBuffer.*device"),
    "bad-handle-sync": (USAGE, r"EnumeratePhysicalDevices.*unknown instance id"),
    "truncated-header": (PROTOCOL, r"truncated record header"),
    "record-too-long": (PROTOCOL, r"record size 1024 out of bounds"),
    "record-too-short": (PROTOCOL, r"record size 4 out of bounds"),
    "wrong-kind": (PROTOCOL, r"unexpected message kind 99"),
    "external-memory-unknown": (USAGE, r"external memory: unknown memory id"),
    "import-without-fd": (PROTOCOL, r"vkAllocateMemory: VkImportMemoryFdInfoKHR without its fd"),
    "present-name-before-join": (PROTOCOL, r"present: name before join"),
}

# texture: a few seconds, to run beside the bad sessions (its native reference runs at the same
# time, so the test takes no longer for it).
GOOD_GUEST_ARGS = ["--frames", "800"]


def raw_client(server, mode, workdir):
    return harness.run(
        [harness.env_path("BYPASS_RAW_CLIENT"), server.endpoint, mode],
        harness.base_env(workdir),
        workdir,
        f"raw.{mode}",
        timeout=30,
    )


def check_stats_roundtrip(lines, what):
    check(len(lines) >= 2 and lines[0].startswith("connected "), f"{what}: no session:\n" + "\n".join(lines))
    check(
        re.match(r"reply seq=1 command=61441 result=0 objects=0 ", lines[1]),
        f"{what}: the well-formed stats request got no proper reply:\n" + "\n".join(lines),
    )


def session_log_lines(log_text, session_id):
    return [line for line in log_text.splitlines() if re.search(rf"\bsession {session_id}:", line)]


def check_bad_session(server, mode, expected, r):
    end_reason, pattern = expected
    lines = r.stdout.splitlines()
    check(r.returncode == 0, f"{mode}: raw_client failed:\n{r.describe()}")
    check_stats_roundtrip(lines, mode)
    sent = [i for i, line in enumerate(lines) if line.startswith("sent ")]
    check(len(sent) == 1, f"{mode}: the bad batch was not sent:\n{r.describe()}")
    after = lines[sent[0] + 1 :]
    # What the host sent back after the bad batch: exactly its reason, then nothing.
    check(
        not any(line.startswith("reply ") for line in after),
        f"{mode}: bypassd answered after the bad batch (the session should have ended):\n{r.describe()}",
    )
    errors = [line[len("error ") :] for line in after if line.startswith("error ")]
    check(len(errors) == 1, f"{mode}: expected one kMsgError with the reason, got {len(errors)}:\n{r.describe()}")
    reason = errors[0]
    check(re.search(pattern, reason), f"{mode}: reason {reason!r} does not match {pattern!r}")
    check(
        after and after[-1] in ("end peer gone", "end closed"),
        f"{mode}: the client should see the peer gone after the error:\n{r.describe()}",
    )
    # The server's side: the session is over, with the same reason, every object released.
    stats = server.wait_gone(r.pid, f"{mode}: the session to end")
    e = harness.check_ended(stats, r.pid, end_reason, reason)
    check(e["detail"] == reason, f"{mode}: bypassd's detail {e['detail']!r} differs from the client's {reason!r}")
    check(not harness.live_for_pid(stats, r.pid), f"{mode}: session still live: {stats}")
    # One log line names the session and the reason (plus the routine start line).
    lines_of_session = session_log_lines(server.log_text(), e["id"])
    bad = [line for line in lines_of_session if "[warning]" in line or "[error]" in line]
    check(len(bad) == 1, f"{mode}: expected one warning line for session {e['id']}, got:\n" + "\n".join(bad))
    check(
        f"end ({end_reason}: {reason})" in bad[0],
        f"{mode}: the log line does not carry the reason {end_reason} and detail {reason!r}: {bad[0]}",
    )
    log(f"{mode}: session {e['id']} ended: {bad[0].split('] ', 2)[-1]}")


def start_good_guests(server, workdir):
    """A texture run beside the bad sessions (its native reference alongside), and a probe that
    holds a device until told to finish, so one good session spans every bad one for certain."""
    native = os.path.join(workdir, "texture.native.out")
    native_run = harness.Running(
        [harness.sample_path("texture")] + GOOD_GUEST_ARGS + ["--out", native],
        harness.native_env(workdir),
        workdir,
        "texture.native",
    )
    out = os.path.join(workdir, "texture.icd.out")
    good = harness.Running(
        [harness.sample_path("texture")] + GOOD_GUEST_ARGS + ["--out", out], server.guest_env(), workdir, "texture.icd"
    )
    holder = harness.Running(
        [harness.env_path("BYPASS_PROBE"), "hold"], server.guest_env(), workdir, "probe.hold", stdin=subprocess.PIPE
    )
    server.wait_stats(
        lambda s: all(any(x["objects"] > 0 for x in harness.live_for_pid(s, p)) for p in (good.pid, holder.pid)),
        "the good guests to hold sessions with objects",
        timeout=30,
    )
    return native_run, native, good, out, holder


def finish_good_guests(server, native_run, native, good, out, holder):
    check(holder.proc.poll() is None, f"the holding probe ended early:\n{holder.result().describe()}")
    holder.close_stdin()
    h = holder.wait(timeout=30)
    harness.check_ok(h, "the probe holding a device beside the bad sessions")
    check(
        "vkDeviceWaitIdle: VK_SUCCESS (0)" in h.stdout,
        f"the holding probe's device should still work:\n" f"{h.describe()}",
    )
    harness.check_ok(native_run.wait(timeout=150), "native texture")
    g = good.wait(timeout=150)
    harness.check_ok(g, "texture (the good guest beside the bad sessions)")
    harness.check_through_bypass(g, "texture")
    harness.check_same_file(native, out, "texture beside bad sessions: ICD output vs native")
    stats = server.wait_gone([good.pid, holder.pid], "the good guests' sessions to end")
    for pid in (good.pid, holder.pid):
        harness.check_ended_clean(stats, pid)
    check(stats["sessions"] == [] and stats["live_objects"] == 0, f"objects live after every guest left: {stats}")
    log(f"good guests: texture identical to native ({g.seconds:.2f} s), the holding probe's device still worked")


def case_stream(workdir, _):
    server = Bypassd(workdir).start()
    good_guests = start_good_guests(server, workdir)
    good = good_guests[2]

    r = raw_client(server, "stats", workdir)
    check_stats_roundtrip(r.stdout.splitlines(), "stats")
    stats = server.wait_gone(r.pid, "the well-behaved raw session to end")
    harness.check_ended_clean(stats, r.pid)

    overlapped = 0
    for mode, expected in BAD_BATCHES.items():
        r = raw_client(server, mode, workdir)
        check_bad_session(server, mode, expected, r)
        overlapped += good.proc.poll() is None
    log(f"texture was running during {overlapped} of {len(BAD_BATCHES)} bad sessions")

    finish_good_guests(server, *good_guests)
    status = server.stop()
    check(status == 0, f"bypassd exited {status} on SIGTERM")


def case_free_in_flight(workdir, _):
    server = Bypassd(workdir).start()
    good_guests = start_good_guests(server, workdir)
    r = harness.run([harness.env_path("BYPASS_PROBE"), "free-in-flight"], server.guest_env(), workdir, "probe", 60)
    check("freed while in flight" in r.stdout, f"the probe did not get as far as the free:\n{r.describe()}")
    time.sleep(0.5)
    check(
        server.proc.poll() is None,
        f"bypassd died (status {server.proc.returncode}) when a guest freed memory its queued work still "
        f"writes:\n{server.log_text()[-2000:]}\nprobe:\n{r.describe()}",
    )
    log(f"probe: {r.stdout.splitlines()[-1]} (exit {r.returncode}); bypassd alive")
    finish_good_guests(server, *good_guests)
    status = server.stop()
    check(status == 0, f"bypassd exited {status} on SIGTERM")


def server_schema(server):
    m = re.search(r"protocol (\d+), schema ([0-9a-f]{16})", server.log_text())
    check(m is not None, "bypassd did not log its protocol and schema")
    return m.group(1), m.group(2)


def case_handshake(workdir, _):
    server = Bypassd(workdir).start()
    protocol, schema = server_schema(server)
    for mode, ours, theirs in (
        ("bad-schema", "0123456789abcdef", schema),
        ("bad-version", "protocol 999", f"protocol {protocol}"),
    ):
        r = raw_client(server, mode, workdir)
        lines = r.stdout.splitlines()
        check(
            r.returncode == 0 and lines and lines[0].startswith("connect-failed "),
            f"{mode}: the handshake should be refused:\n{r.describe()}",
        )
        error = lines[0][len("connect-failed ") :]
        check(ours in error and theirs in error, f"{mode}: the refusal should name {ours!r} and {theirs!r}: {error!r}")
        deadline = time.monotonic() + 5
        while ours not in server.log_text():
            check(time.monotonic() < deadline, f"{mode}: bypassd logged no refusal naming {ours!r}")
            time.sleep(0.05)
        refusal = [line for line in server.log_text().splitlines() if ours in line]
        check(len(refusal) == 1 and theirs in refusal[0], f"{mode}: expected one log line naming both: {refusal}")
        log(f"{mode}: client: {error}")
        log(f"{mode}: bypassd: {refusal[0]}")
    stats = server.stats()
    check(stats["sessions"] == [] and stats["ended"] == [], f"a refused handshake should make no session: {stats}")
    r = raw_client(server, "stats", workdir)
    check_stats_roundtrip(r.stdout.splitlines(), "stats after the refusals")
    status = server.stop()
    check(status == 0, f"bypassd exited {status} on SIGTERM")


if __name__ == "__main__":
    raise SystemExit(
        harness.main({"stream": case_stream, "handshake": case_handshake, "free-in-flight": case_free_in_flight})
    )
