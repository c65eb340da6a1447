#!/usr/bin/env python3
"""The guest ICD when bypassd is missing, silent, killed or shut down under it.

Cases (one ctest test each):
  no-server             nothing at the endpoint: the ICD's vkCreateInstance returns
                        VK_ERROR_INITIALIZATION_FAILED within a second with one stderr line
                        naming bypassd and the endpoint; through the loader the same line and
                        the loader's VK_ERROR_INCOMPATIBLE_DRIVER
  stale-socket          a socket file nobody listens on: the same
  silent-server         a listener that never answers the handshake: fails by the deadline
  vulkaninfo-no-server  vulkaninfo through the ICD with no server: a clean error exit
  server-killed-wait    bypassd SIGKILLed while a guest waits on a fence: VK_ERROR_DEVICE_LOST
                        at once, later calls too, the guest exits normally
  server-killed-midrun  bypassd SIGKILLed under running samples: they exit non-zero naming the
                        Vulkan error, none hangs or crashes
  server-killed-feedback-wait
                        the same while the guest waits on a fence of a submitted batch (held
                        back by an event), a wait the ICD makes on the completion feedback block
                        rather than through bypassd
  feedback              fences answered from completion feedback: never early (a submission held
                        back by an event), waits with and without timeouts, reset and resubmitted
                        fences, waitAny, fill-wait-reset rounds checked; natively and through bypass
  feedback-polls        zero-timeout polls the guest answers itself: a poll that says signalled
                        finds the work done, and one after an idle wait or a wait for a later
                        fence says signalled at once; natively and through bypass
  timeline-waits        timeline semaphore waits answered from completion feedback: right after
                        fill rounds, initial values and vkSignalSemaphore, and a wait that the
                        program's own signal ends while a submission is held back; the ICD
                        counts them answered without bypassd until wait-before-signal
  repeat-queries        physical-device queries asked again (which the ICD answers from a copy)
                        answer as the first time and as natively
  memory-requirements   buffers and images made the same way asked for their memory
                        requirements again (the ICD answers from the first answer): the first
                        answers equal native, every later one equals the first, and 900 objects
                        cost bypassd next to no round trips
  small-memory          host-visible allocations of many sizes, more than the small-memory heap
                        holds, and 500 allocate-free rounds: the device and the guest see the
                        same bytes (natively too); small ones are blocks of one heap file per
                        session (two guests: two files), the rest and the overflow files of
                        their own; none stays counted once freed; with the heap off, each its own
  shadow-reads          shadow memory (BYPASS_MEMORY=shadow): the waits read back a buffer the
                        device writes (the same bytes as natively), and leave out a mapped
                        staging buffer it only reads and 32 MiB the program never maps
  pipelines             compute pipelines used right after their creation: a plain one (created
                        without waiting for bypassd), one with creation feedback and one that
                        asks to fail rather than compile (both waited for): results, feedback
                        and copies equal native, and the ICD's count says which way each went
  feedback-scribble     a guest that writes garbage over its own feedback block still gets right
                        answers, and its session ends cleanly
  server-stopped-wait   bypassd SIGTERMed while a guest waits and another renders: bypassd
                        exits 0 promptly, the guests see DEVICE_LOST with the server's reason
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))

import harness  # noqa: E402
from harness import Bypassd, check, log  # noqa: E402

# Budget for "fails at once": the ICD's connect deadline is 1 s; the whole process (loader
# start-up included) gets a generous multiple so a loaded machine does not fail the test.
HANG_LIMIT = 20.0


def icd_env(workdir, endpoint):
    env = harness.base_env(workdir)
    env["VK_DRIVER_FILES"] = harness.env_path("BYPASS_ICD_JSON")
    env["BYPASS_ENDPOINT"] = endpoint
    return env


def probe(args, env, workdir, tag, timeout=HANG_LIMIT):
    return harness.run([harness.env_path("BYPASS_PROBE")] + args, env, workdir, tag, timeout)


def nonempty_lines(text):
    return [line for line in text.splitlines() if line.strip()]


def create_instance_ms(result):
    for line in result.stdout.splitlines():
        if line.startswith("vkCreateInstance took "):
            return float(line.split()[2])
    raise harness.TestFailure(f"the probe printed no timing:\n{result.describe()}")


def check_one_line(result, endpoint_path):
    lines = nonempty_lines(result.stderr)
    check(len(lines) == 1, f"expected exactly one line on stderr, got {len(lines)}:\n{result.describe()}")
    check(
        "bypassd" in lines[0] and endpoint_path in lines[0],
        f"the stderr line should name bypassd and the endpoint {endpoint_path}: {lines[0]!r}",
    )
    return lines[0]


def check_init_failed(env, workdir, endpoint_path, limit_ms, loader_limit_ms=None):
    """vkCreateInstance fails fast, saying why on one stderr line.

    The ICD itself must return VK_ERROR_INITIALIZATION_FAILED (checked by calling it directly).
    Through the loader the application sees the loader's verdict: the Vulkan-Loader skips a
    driver whose vkCreateInstance fails and, with none left, returns VK_ERROR_INCOMPATIBLE_DRIVER
    (Debian 12's loader 1.3.239 does); a loader passing the driver's code on gives -3.
    """
    direct = probe(["icd-create-instance", harness.env_path("BYPASS_ICD_LIB")], env, workdir, "probe.direct")
    check(
        direct.returncode == 1 and "vkCreateInstance: VK_ERROR_INITIALIZATION_FAILED (-3)" in direct.stdout,
        f"the ICD's vkCreateInstance should return VK_ERROR_INITIALIZATION_FAILED:\n{direct.describe()}",
    )
    line = check_one_line(direct, endpoint_path)
    ms = create_instance_ms(direct)
    check(ms < limit_ms, f"the ICD's vkCreateInstance took {ms:.0f} ms to fail, more than {limit_ms:.0f} ms")
    log(f"ICD vkCreateInstance: VK_ERROR_INITIALIZATION_FAILED in {ms:.1f} ms: {line}")

    loaded = probe(["create-instance"], env, workdir, "probe.loader")
    check(
        loaded.returncode == 1
        and (
            "vkCreateInstance: VK_ERROR_INCOMPATIBLE_DRIVER (-9)" in loaded.stdout
            or "vkCreateInstance: VK_ERROR_INITIALIZATION_FAILED (-3)" in loaded.stdout
        ),
        f"vkCreateInstance through the loader should fail with the ICD's or the loader's error:\n"
        f"{loaded.describe()}",
    )
    check_one_line(loaded, endpoint_path)
    ms = create_instance_ms(loaded)
    loader_limit_ms = loader_limit_ms or limit_ms
    check(
        ms < loader_limit_ms,
        f"vkCreateInstance through the loader took {ms:.0f} ms to fail, more than {loader_limit_ms:.0f} ms",
    )
    log(f"through the loader: {loaded.stdout.splitlines()[-1]} in {ms:.1f} ms")


def case_no_server(workdir, _):
    path = os.path.join(workdir, "nobody-here.sock")
    check_init_failed(icd_env(workdir, "unix:" + path), workdir, path, 1000)


def case_stale_socket(workdir, _):
    # A socket file left by a dead server: connect() is refused.
    path = os.path.join(workdir, "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.bind(path)
    s.close()
    check(os.path.exists(path), "the stale socket file was not created")
    check_init_failed(icd_env(workdir, "unix:" + path), workdir, path, 1000)


def case_silent_server(workdir, _):
    # Something listens but never handshakes (a hung server): the guest must give up by its
    # deadline, 3 s per connection attempt. Inside the loader's vkCreateInstance the ICD dials
    # three times (vkEnumerateInstanceExtensionProperties twice, as a failure is not
    # remembered, then vkCreateInstance), so the application waits about 9 s.
    path = os.path.join(workdir, "silent.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.bind(path)
    s.listen(16)
    try:
        # The bounds leave 1.5 s per attempt for a loaded machine (4.1 s was seen at a load of 13).
        check_init_failed(icd_env(workdir, "unix:" + path), workdir, path, 4500, loader_limit_ms=13500)
    finally:
        s.close()


def case_vulkaninfo_no_server(workdir, _):
    path = os.path.join(workdir, "nobody-here.sock")
    env = harness.unsanitized_guest_env(icd_env(workdir, "unix:" + path))
    r = harness.run([harness.env_path("BYPASS_VULKANINFO")], env, workdir, "vulkaninfo", HANG_LIMIT)
    check(r.returncode > 0, f"vulkaninfo should fail with an error status, not {r.returncode}:\n{r.describe()}")
    check("bypassd" in r.stderr and path in r.stderr, f"stderr should name bypassd and {path}:\n{r.describe()}")
    check(
        re.search(r"vkCreateInstance failed with ERROR_(INITIALIZATION_FAILED|INCOMPATIBLE_DRIVER)", r.stderr),
        f"vulkaninfo should report the VkResult:\n{r.describe()}",
    )
    check(
        len([line for line in r.stderr.splitlines() if "bypass" in line]) == 1,
        f"the ICD should say why in one line:\n{r.describe()}",
    )
    log(f"vulkaninfo exited {r.returncode} in {r.seconds:.2f} s")


def wait_for_line(running, text, timeout=30):
    deadline = time.monotonic() + timeout
    while text not in running.stdout_text():
        check(running.proc.poll() is None, f"the guest exited before printing {text!r}:\n{running.result().describe()}")
        check(time.monotonic() < deadline, f"the guest did not print {text!r} within {timeout} s")
        time.sleep(0.02)


def check_lost(result, what, reason_part):
    """A guest that lost its host: DEVICE_LOST from the wait and from the next call, a clean exit."""
    check(result.returncode == 1, f"{what}: expected exit 1 after losing the host:\n{result.describe()}")
    check(
        "vkWaitForFences: VK_ERROR_DEVICE_LOST (-4)" in result.stdout,
        f"{what}: the fence wait should end with VK_ERROR_DEVICE_LOST:\n{result.describe()}",
    )
    check(
        "vkDeviceWaitIdle: VK_ERROR_DEVICE_LOST (-4)" in result.stdout,
        f"{what}: a call after the loss should return VK_ERROR_DEVICE_LOST:\n{result.describe()}",
    )
    lines = nonempty_lines(result.stderr)
    check(
        len(lines) == 1 and reason_part in lines[0],
        f"{what}: expected one stderr line mentioning {reason_part!r}:\n{result.describe()}",
    )


def killed_while_waiting(workdir, probe_case, where):
    """bypassd SIGKILLed while the probe waits (`where` says on what): DEVICE_LOST, no hang."""
    server = Bypassd(workdir).start()
    waiter = harness.Running([harness.env_path("BYPASS_PROBE"), probe_case], server.guest_env(), workdir, "probe")
    wait_for_line(waiter, "waiting")
    time.sleep(0.3)  # the wait is now `where`
    killed_at = time.monotonic()
    server.kill()
    r = waiter.wait(timeout=HANG_LIMIT)
    log(f"the probe ({where}) returned {time.monotonic() - killed_at:.2f} s after bypassd was killed")
    check_lost(r, "probe", "bypassd went away")


def case_server_killed_wait(workdir, _):
    killed_while_waiting(workdir, "wait-fence", "on the host's waiter thread")


def case_server_killed_feedback_wait(workdir, _):
    killed_while_waiting(workdir, "feedback-wait", "asleep on the feedback block's word")


def native_then_bypass(workdir, mode):
    """Runs `probe MODE` natively (the test's own expectations) and through a bypassd of its own;
    returns both runs."""
    server = Bypassd(workdir).start()
    native = probe([mode], harness.native_env(workdir), workdir, "probe.native", timeout=120)
    harness.check_ok(native, f"{mode} natively (the test's own expectations)")
    ours = probe([mode], server.guest_env(), workdir, "probe.icd", timeout=120)
    harness.check_ok(ours, f"{mode} through bypass")
    check(f"{mode}: ok" in ours.stdout, f"the probe did not finish:\n{ours.describe()}")
    return native, ours


def case_feedback(workdir, _):
    native_then_bypass(workdir, "feedback")


def case_feedback_polls(workdir, _):
    native_then_bypass(workdir, "feedback-polls")


def case_timeline_waits(workdir, _):
    """Timeline semaphore waits the ICD makes on the completion feedback (guest-icd/src/sync.cpp):
    the probe's fill rounds, initial values, vkSignalSemaphore and a wait that a program's own
    signal must end while a submission is held back (wait-before-signal) pass natively and
    through bypass, and the ICD's count (BYPASS_LOG=info, at vkDestroyDevice) shows every wait
    before the held submission answered without bypassd and the four after it asked."""
    server = Bypassd(workdir).start()
    native = probe(["timeline-waits"], harness.native_env(workdir), workdir, "probe.native", timeout=120)
    harness.check_ok(native, "timeline-waits natively (the test's own expectations)")
    r = probe(["timeline-waits"], dict(server.guest_env(), BYPASS_LOG="info"), workdir, "probe.icd", timeout=120)
    harness.check_ok(r, "timeline-waits through bypass")
    check("timeline-waits: ok" in r.stdout, f"the probe did not finish:\n{r.describe()}")
    harness.check_ended_clean(server.wait_gone(r.pid), r.pid)
    m = re.search(r"timeline waits: (\d+) answered here, (\d+) asked of bypassd", r.stderr)
    check(m is not None, f"no timeline wait count from the ICD:\n{r.describe()}")
    here, asked = (int(g) for g in m.groups())
    check(here >= 400 and asked == 4, f"expected the 400 rounds' waits answered here and 4 asked: {m.group(0)}")
    log(m.group(0))
    server.stop()


def case_repeat_queries(workdir, _):
    native, ours = native_then_bypass(workdir, "repeat-queries")
    # The same formats and image limits as the driver's own (the extension list is the ICD's).
    line = lambda out: re.search(r"formats with optimal features \d+, 3D depth storage image: \S+", out).group(0)
    check(line(ours.stdout) == line(native.stdout), f"answers differ from native:\n{ours.stdout}\n{native.stdout}")


def probe_counting_replies(server, side, env, workdir, mode, ready, done):
    """Runs probe `mode`, which prints `ready`, waits for a line on stdin, does what is counted,
    prints `done` and waits for stdin to close. Returns its result and, through bypass (side
    "icd"), how many replies bypassd sent the probe's session in between (None natively)."""
    argv = [harness.env_path("BYPASS_PROBE"), mode]
    running = harness.Running(argv, env, workdir, f"probe.{side}", stdin=subprocess.PIPE)
    deadline = time.monotonic() + 60

    def wait_for(mark):
        while mark not in running.stdout_text():
            check(
                time.monotonic() < deadline and running.proc.poll() is None,
                f"{side}: the probe never printed {mark!r}:\n{running.result().describe()}",
            )
            time.sleep(0.02)

    def replies():
        return harness.live_for_pid(server.stats(), running.pid)[-1]["replies"] if side == "icd" else 0

    wait_for(ready)
    before = replies()
    running.proc.stdin.write(b"go\n")
    running.proc.stdin.flush()
    wait_for(done)
    counted = replies() - before
    running.close_stdin()
    return running.wait(timeout=30), (counted if side == "icd" else None)


def case_memory_requirements(workdir, _):
    server = Bypassd(workdir).start()
    runs = {}
    for side, env in (("native", harness.native_env(workdir)), ("icd", server.guest_env())):
        r, replies = probe_counting_replies(
            server, side, env, workdir, "memory-requirements", "asked", "memory-requirements:"
        )
        harness.check_ok(r, f"memory-requirements ({side})")
        check("memory-requirements: ok" in r.stdout, f"{side}: later answers differ from the first:\n{r.describe()}")
        if side == "icd":
            harness.check_ended_clean(server.wait_gone(r.pid), r.pid)
        runs[side] = (r, replies)
    answers = lambda out: [line for line in out.splitlines() if line.startswith(("buffer ", "image "))]
    native, (ours, replies) = runs["native"][0], runs["icd"]
    check(
        answers(ours.stdout) == answers(native.stdout), f"answers differ from native:\n{ours.stdout}\n{native.stdout}"
    )
    # 900 objects asked three ways each: 2,700 round trips without the kept answers.
    log(f"600 buffers and 300 images made as before, asked three ways each: {replies} replies from bypassd")
    check(replies < 20, f"the ICD should answer requirements of objects made as before itself ({replies} replies)")


def run_small_memory(workdir, env, tag, count=1, server=None):
    """Runs `count` small-memory probes at once; returns each one's (result, {when: (device, small,
    inode)}, memory_bytes of its live session in `server`'s stats (None without one)), read while
    all of them still run."""
    argv = [harness.env_path("BYPASS_PROBE"), "small-memory"]
    running = [harness.Running(argv, env, workdir, f"probe.{tag}.{i}", stdin=subprocess.PIPE) for i in range(count)]
    deadline = time.monotonic() + 120 * harness.TIMEOUT_SCALE
    for r in running:
        while "small-memory:" not in r.stdout_text():
            check(
                time.monotonic() < deadline and r.proc.poll() is None,
                f"{tag}: the probe did not finish:\n{r.result().describe()}",
            )
            time.sleep(0.05)
    held = [harness.live_for_pid(server.stats(), r.pid)[-1]["memory_bytes"] if server else None for r in running]
    out = []
    for r, memory in zip(running, held):
        r.close_stdin()
        result = r.wait(timeout=30)
        harness.check_ok(result, f"small-memory ({tag})")
        check("small-memory: ok" in result.stdout, f"{tag}: a block lost its bytes:\n{result.describe()}")
        counts = {}
        for m in re.finditer(
            r"^(peak|after rounds): device-memory (\d+) small-memory (\d+) inode (\d+)$", result.stdout, re.M
        ):
            counts[m.group(1)] = tuple(int(g) for g in m.group(2, 3, 4))
        check(len(counts) == 2, f"{tag}: the probe printed no mapping counts:\n{result.stdout}")
        out.append((result, counts, memory))
    return out


def case_small_memory(workdir, _):
    # 8 MiB: the probe's 20 MiB of small blocks overflow it, so both placements are exercised.
    server = Bypassd(workdir, ["--small-memory-heap", str(8 << 20)]).start()
    native = run_small_memory(workdir, harness.native_env(workdir), "native")[0]
    check(native[1]["peak"][:2] == (0, 0), f"natively there are no bypass memory files: {native[1]}")
    blocks = int(re.search(r"^blocks: (\d+)", native[0].stdout, re.M).group(1))
    large = (blocks + 5) // 6  # every sixth block is past the 1 MiB limit
    ours = run_small_memory(workdir, server.guest_env(), "icd", count=2, server=server)
    for result, counts, memory in ours:
        device, small, inode = counts["peak"]
        log(f"guest {result.pid}: {blocks} blocks at the peak: heap mapped {small}x, {device} files of their own")
        check(small == 1 and inode != 0, f"the small-memory heap is mapped once per guest: {counts}")
        check(large < device < blocks - 20, f"the heap holds 8 MiB of small blocks, the rest overflow: {counts}")
        check(counts["after rounds"][:2] == (0, 1), f"the 500 rounds' small blocks are all in the heap: {counts}")
        check(memory == 0, f"bypassd still counts {memory} bytes of freed memory for guest {result.pid}")
    check(ours[0][1]["peak"][2] != ours[1][1]["peak"][2], "two sessions must not share a small-memory heap")
    for result, _, _ in ours:
        harness.check_ended_clean(server.wait_gone(result.pid), result.pid)
    server.stop()
    # The heap off: every allocation its own file, the same bytes.
    off_dir = os.path.join(workdir, "heap-off")
    os.makedirs(off_dir, exist_ok=True)
    off = Bypassd(off_dir, ["--small-memory-heap", "0"]).start()
    _, counts, _ = run_small_memory(off_dir, off.guest_env(), "heap-off")[0]
    check(counts["peak"][:2] == (blocks, 0), f"with --small-memory-heap 0 each allocation is its own file: {counts}")


def case_host_pointer(workdir, _):
    """VK_EXT_external_memory_host through bypass: memory imported from the application's pages
    (mirrored by the ICD at the barriers) behaves as natively: the device's copies reach the
    application's pages, and the mapping is the application's pointer."""
    server = Bypassd(workdir).start()
    for tag, env in (("native", harness.native_env(workdir)), ("icd", server.guest_env())):
        r = probe(["host-pointer"], env, workdir, f"probe.{tag}", timeout=120)
        harness.check_ok(r, f"host-pointer ({tag})")
        check("host-pointer: ok" in r.stdout, f"{tag}: the device's copies did not arrive:\n{r.describe()}")
        check("mapping: the application's pointer" in r.stdout, f"{tag}: the mapping:\n{r.describe()}")
        if tag == "icd":
            harness.check_through_bypass(r, "host-pointer")
            harness.check_ended_clean(server.wait_gone(r.pid), r.pid)
    # BYPASS_HOST_POINTERS=0 hides the extension (the probe then finds no device for it).
    off = probe(["host-pointer"], dict(server.guest_env(), BYPASS_HOST_POINTERS="0"), workdir, "probe.off")
    check(off.returncode != 0 and "vkCreateDevice: VK_ERROR_EXTENSION_NOT_PRESENT" in off.stdout, off.describe())
    log(
        "host-pointer: 60 rounds of device copies into the application's pages (a copy, a secondary command buffer, a compute shader, after an unrelated submission), natively and through bypass"
    )
    server.stop()


def case_pipelines(workdir, _):
    """Pipelines the ICD creates without waiting (codegen/data/async_unasked.txt): the probe's
    three rounds print the same natively and through bypass (each create's result, the creation
    feedback filled in, each copy right), and the ICD's count (BYPASS_LOG=info, at
    vkDestroyDevice) shows one pipeline sent without asking and two waited for."""
    server = Bypassd(workdir).start()
    out = {}
    for tag, env in (("native", harness.native_env(workdir)), ("icd", dict(server.guest_env(), BYPASS_LOG="info"))):
        r = probe(["pipelines"], env, workdir, f"probe.{tag}", timeout=120)
        harness.check_ok(r, f"pipelines ({tag})")
        check("pipelines: ok" in r.stdout, f"{tag}: a pipeline did not copy:\n{r.describe()}")
        out[tag] = [line for line in r.stdout.splitlines() if line.startswith("round ")]
        if tag == "icd":
            harness.check_through_bypass(r, "pipelines")
            harness.check_ended_clean(server.wait_gone(r.pid), r.pid)
            m = re.search(r"pipelines: (\d+) created without waiting, (\d+) waited for", r.stderr)
            check(m is not None, f"no pipeline count from the ICD:\n{r.describe()}")
            unasked, waited = (int(g) for g in m.groups())
            check(unasked >= 1 and waited == 2, f"expected the plain create unasked and two waited for: {m.group(0)}")
    check("round 1: feedback filled in" in out["native"], f"lavapipe left the feedback empty: {out['native']}")
    check(out["icd"] == out["native"], f"through bypass {out['icd']}, natively {out['native']}")
    log("pipelines: " + "; ".join(out["icd"]))
    server.stop()


def case_shadow_reads(workdir, _):
    """Shadow memory's read barriers after waits read only what the device may have written:
    the ICD's count (BYPASS_LOG=info, at vkDestroyDevice) shows one 8 MiB window per wait (the
    1 MiB buffer the device writes) and the staging buffer left out at each; the 32 MiB the
    program never maps has no copy to read. The written buffer holds each round's bytes after
    its wait, natively and through bypass."""
    server = Bypassd(workdir).start()
    for tag, env in (("native", harness.native_env(workdir)), ("icd", server.guest_env())):
        if tag == "icd":
            env = dict(env, BYPASS_MEMORY="shadow", BYPASS_LOG="info")
        r = probe(["shadow-reads"], env, workdir, f"probe.{tag}", timeout=120)
        harness.check_ok(r, f"shadow-reads ({tag})")
        check("shadow-reads: ok" in r.stdout, f"{tag}: the device's writes did not arrive:\n{r.describe()}")
        if tag == "native":
            continue
        harness.check_through_bypass(r, "shadow-reads")
        harness.check_ended_clean(server.wait_gone(r.pid), r.pid)
        waits = int(re.search(r"^waits: (\d+)$", r.stdout, re.M).group(1))
        m = re.search(r"waits read (\d+) windows and left out (\d+) shadows \((\d+) bytes\)", r.stderr)
        check(m is not None, f"no shadow-read count from the ICD:\n{r.describe()}")
        windows, left_out, left_bytes = (int(g) for g in m.groups())
        log(f"shadow-reads: {waits} waits read {windows} windows, left out {left_out} shadows ({left_bytes} bytes)")
        check(windows == waits, f"each wait should read the written buffer's one window: {windows} for {waits} waits")
        check(
            left_out == waits and left_bytes == waits * (1 << 20),
            f"each wait should leave out the staging buffer: {left_out} shadows, {left_bytes} bytes",
        )
    server.stop()


def case_query_not_ready(workdir, _):
    """vkGetQueryPoolResults without the wait bit leaves a query that is not available as the
    application left it, natively and through bypass (queries.cpp)."""
    server = Bypassd(workdir).start()
    outputs = {}
    for tag, env in (("native", harness.native_env(workdir)), ("icd", server.guest_env())):
        r = probe(["query-not-ready"], env, workdir, f"probe.{tag}")
        harness.check_ok(r, f"query-not-ready ({tag})")
        outputs[tag] = [line for line in r.stdout.splitlines() if line.startswith(("values only", "with availability"))]
    check(
        outputs["native"]
        == [
            "values only: VK_NOT_READY, first written, first available -, second untouched, second available -",
            "with availability: VK_NOT_READY, first written, first available 1, second untouched, second available 0",
        ],
        f"native lavapipe: {outputs['native']}",
    )
    check(outputs["icd"] == outputs["native"], f"through bypass {outputs['icd']}, natively {outputs['native']}")
    log("query-not-ready: a query not yet available keeps the application's bytes, as natively")
    server.stop()


def case_query_mirror(workdir, _):
    """Query results answered from the ICD's mirror of a pool (queries.cpp) are the driver's:
    the same results and availability as natively after writes, a host reset, a reset in a
    command buffer, a write in a secondary and 32-bit asks, values equal to the application's
    own copy; and queries long done are answered without bypassd."""
    server = Bypassd(workdir).start()
    outputs, replies = {}, None
    for side, env in (("native", harness.native_env(workdir)), ("icd", server.guest_env())):
        r, counted = probe_counting_replies(server, side, env, workdir, "query-mirror", "ready", "polled:")
        replies = counted if side == "icd" else replies
        harness.check_ok(r, f"query-mirror ({side})")
        check("query-mirror: ok" in r.stdout, f"{side}: {r.describe()}")
        if side == "icd":
            harness.check_through_bypass(r, "query-mirror")
            harness.check_ended_clean(server.wait_gone(r.pid), r.pid)
        outputs[side] = [
            line for line in r.stdout.splitlines() if ":" in line and not line.startswith(("vk", "device"))
        ]
    check(
        "rounds whose answer is the application's copy: 20 of 20" in outputs["native"]
        and "reset on the host: VK_NOT_READY, available 0 0" in outputs["native"],
        f"native lavapipe: {outputs['native']}",
    )
    check(outputs["icd"] == outputs["native"], f"through bypass {outputs['icd']}, natively {outputs['native']}")
    log(f"query-mirror: answers as natively; 200 asks for queries long done: {replies} replies from bypassd")
    check(replies < 10, f"the ICD should answer queries long done from the mirror ({replies} replies)")
    server.stop()


def case_proc_addr(workdir, _):
    """vkGetDeviceProcAddr gives what native lavapipe gives: an extension's commands (aliases of
    core commands included) only to a device that enabled the extension."""
    server = Bypassd(workdir).start()
    outputs = {}
    for tag, env in (("native", harness.native_env(workdir)), ("icd", server.guest_env())):
        r = probe(["proc-addr"], env, workdir, f"probe.{tag}")
        harness.check_ok(r, f"proc-addr ({tag})")
        outputs[tag] = [line for line in r.stdout.splitlines() if line.startswith(("without", "with the"))]
    check(
        "without, vkTrimCommandPoolKHR: NULL" in outputs["native"]
        and "with the extensions, vkTrimCommandPoolKHR: a function" in outputs["native"],
        f"native lavapipe: {outputs['native']}",
    )
    check(outputs["icd"] == outputs["native"], f"through bypass {outputs['icd']}, natively {outputs['native']}")
    log("proc-addr: extension commands only for devices that enabled them, as natively")
    server.stop()


def case_feedback_scribble(workdir, _):
    server = Bypassd(workdir).start()
    ours = probe(["feedback-scribble"], server.guest_env(), workdir, "probe.icd", timeout=120)
    harness.check_ok(ours, "feedback-scribble through bypass")
    check("feedback-scribble: ok" in ours.stdout, f"the probe did not finish its rounds:\n{ours.describe()}")
    # bypassd carries on: another guest is served as before.
    again = probe(["feedback"], server.guest_env(), workdir, "probe.again", timeout=120)
    harness.check_ok(again, "a guest after the scribbling one")


def case_server_killed_midrun(workdir, _):
    server = Bypassd(workdir).start()
    guests = {
        "compute": harness.Running(
            [harness.sample_path("compute"), "--frames", "1000", "--elements", "1048576"],
            server.guest_env(),
            workdir,
            "compute",
        ),
        "multithread": harness.Running(
            [harness.sample_path("multithread"), "--frames", "100000"], server.guest_env(), workdir, "multithread"
        ),
        "triangle": harness.Running(
            [harness.sample_path("triangle"), "--frames", "100000"], server.guest_env(), workdir, "triangle"
        ),
    }
    pids = [g.pid for g in guests.values()]
    server.wait_stats(
        lambda s: all(any(x["objects"] > 0 for x in harness.live_for_pid(s, p)) for p in pids),
        "every guest to hold a session with objects",
        timeout=30,
    )
    time.sleep(1.0)
    for name, g in guests.items():
        check(g.proc.poll() is None, f"{name} ended before bypassd was killed:\n{g.result().describe()}")
    killed_at = time.monotonic()
    server.kill()
    for name, g in guests.items():
        r = g.wait(timeout=HANG_LIMIT)
        check(r.returncode == 1, f"{name}: expected exit 1 after losing the host:\n{r.describe()}")
        check("VK_ERROR_DEVICE_LOST" in r.stderr, f"{name}: should report VK_ERROR_DEVICE_LOST:\n{r.describe()}")
        check("bypassd went away" in r.stderr, f"{name}: the ICD should say the host went away:\n{r.describe()}")
        log(
            f"{name}: exited {r.returncode} {time.monotonic() - killed_at:.2f} s after the kill: "
            f"{nonempty_lines(r.stderr)[-1]}"
        )


def case_server_stopped_wait(workdir, _):
    server = Bypassd(workdir).start()
    waiter = harness.Running([harness.env_path("BYPASS_PROBE"), "wait-fence"], server.guest_env(), workdir, "probe")
    compute = harness.Running(
        [harness.sample_path("compute"), "--frames", "1000", "--elements", "1048576"],
        server.guest_env(),
        workdir,
        "compute",
    )
    wait_for_line(waiter, "waiting")
    server.wait_stats(
        lambda s: any(x["objects"] > 0 for x in harness.live_for_pid(s, compute.pid)),
        "compute to hold a session with objects",
        timeout=30,
    )
    time.sleep(0.5)
    stopped_at = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    try:
        status = server.proc.wait(timeout=HANG_LIMIT)
    except Exception:  # noqa: BLE001 - reported as the failure it is
        raise harness.TestFailure(
            f"bypassd did not exit within {HANG_LIMIT} s of SIGTERM with a guest in a "
            f"fence wait:\n{server.log_text()[-3000:]}"
        )
    log(f"bypassd exited {status} {time.monotonic() - stopped_at:.2f} s after SIGTERM")
    check(status == 0, f"bypassd exited {status} on SIGTERM")
    r = waiter.wait(timeout=HANG_LIMIT)
    check_lost(r, "probe", "server shutting down")
    c = compute.wait(timeout=HANG_LIMIT)
    check(
        c.returncode == 1 and "VK_ERROR_DEVICE_LOST" in c.stderr,
        f"compute: expected exit 1 with VK_ERROR_DEVICE_LOST:\n{c.describe()}",
    )
    log_text = server.log_text()
    for pid in (waiter.pid, compute.pid):
        check(f"pid {pid}" in log_text, f"bypassd did not log the session of pid {pid}")
    check(
        log_text.count("end (server_shutdown: server shutting down)") == 2,
        f"expected both sessions to end with server_shutdown:\n{log_text[-3000:]}",
    )


def case_debug_messengers(workdir, _):
    """Debug-utils messengers and debug-report callbacks of two instances: each message reaches
    its own instance's callbacks only, filtered as asked, none after destruction; the same
    counts natively and through the ICD (where the callbacks live in the guest)."""
    server = harness.Bypassd(workdir).start()
    native = probe(["debug-messengers"], harness.native_env(workdir), workdir, "probe.native")
    ours = probe(["debug-messengers"], server.guest_env(), workdir, "probe.icd")
    harness.check_ok(native, "debug-messengers natively")
    harness.check_ok(ours, "debug-messengers through the ICD")
    check(ours.stdout == native.stdout, f"callback counts differ:\nnative:\n{native.stdout}\nbypass:\n{ours.stdout}")
    check(
        "warning on A: A utils=1 report=0, B utils=0 report=0" in ours.stdout,
        f"a message on A reached B's callbacks or none:\n{ours.stdout}",
    )
    log(f"callback counts identical natively and through the ICD: {nonempty_lines(ours.stdout)[-1]}")
    server.stop()


def case_exit_handler(workdir, _):
    """Vulkan from an exit handler, after the thread's thread_local objects are gone (GL through
    zink tears down there: waffle, piglit): fixed-layout records with arrays, tables, a call with
    a reply, and the teardown all work, and glibc finds no heap corruption (MALLOC_CHECK_=3 with
    its debugging malloc, and MALLOC_PERTURB_ so a read of freed memory reads garbage)."""
    server = harness.Bypassd(workdir).start()
    env = server.guest_env()
    env.update(MALLOC_CHECK_="3", MALLOC_PERTURB_="165")
    debug_malloc = "/usr/lib/x86_64-linux-gnu/libc_malloc_debug.so.0"
    # A sanitizer build has its own allocator, which must come first and finds more than glibc's
    # debugging malloc would.
    if os.path.exists(debug_malloc) and not harness.asan_runtime() and not harness.tsan_runtime():
        env["LD_PRELOAD"] = debug_malloc
    for run in range(3):
        r = probe(["exit-handler"], env, workdir, f"probe.{run}")
        harness.check_ok(r, f"Vulkan calls from an exit handler (run {run})")
        check("exit handler: Vulkan calls done" in r.stdout, f"the exit handler did not finish:\n{r.describe()}")
    server.check_alive()
    log("3 runs: 50 rounds of records and the teardown in an exit handler, exit 0, no heap corruption")
    server.stop()


if __name__ == "__main__":
    raise SystemExit(
        harness.main(
            {
                "no-server": case_no_server,
                "stale-socket": case_stale_socket,
                "silent-server": case_silent_server,
                "vulkaninfo-no-server": case_vulkaninfo_no_server,
                "server-killed-wait": case_server_killed_wait,
                "server-killed-midrun": case_server_killed_midrun,
                "server-killed-feedback-wait": case_server_killed_feedback_wait,
                "feedback": case_feedback,
                "feedback-scribble": case_feedback_scribble,
                "feedback-polls": case_feedback_polls,
                "timeline-waits": case_timeline_waits,
                "repeat-queries": case_repeat_queries,
                "memory-requirements": case_memory_requirements,
                "small-memory": case_small_memory,
                "shadow-reads": case_shadow_reads,
                "pipelines": case_pipelines,
                "host-pointer": case_host_pointer,
                "query-not-ready": case_query_not_ready,
                "query-mirror": case_query_mirror,
                "proc-addr": case_proc_addr,
                "server-stopped-wait": case_server_stopped_wait,
                "debug-messengers": case_debug_messengers,
                "exit-handler": case_exit_handler,
            }
        )
    )
