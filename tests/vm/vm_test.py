#!/usr/bin/env python3
"""Vulkan programs in a real QEMU guest, through bypassd on this machine (label `vm`).

Each case starts its own bypassd serving one or two VM devices (--vm NAME:PATH, files under
/dev/shm) and boots guests with scripts/vm.sh: a Debian kernel and a busybox initramfs holding
the loader, the ICD, vulkaninfo and the samples; the ICD reaches bypassd over the ivshmem BAR
(BYPASS_ENDPOINT=ivshmem:). Outputs come back out of the guest and are compared byte for byte
with native runs on this machine.

  vulkaninfo      vulkaninfo in a VM equals vulkaninfo in a process guest, apart from the listed
                  differences (what needs a file descriptor is not offered)
  samples [MODE]  triangle, compute, texture, multithread and sync in one VM, outputs identical
                  to native; MODE shadow: with BYPASS_MEMORY=shadow
  two-vms         two VMs at once on one bypassd, each rendering, outputs identical
  vm-killed       QEMU SIGKILLed mid-frame: its session ends, every object is released, and a
                  new VM on the same device renders correctly
  bypassd-killed  bypassd SIGKILLed under a running guest program: it exits promptly with
                  VK_ERROR_DEVICE_LOST
  doorbell        an idle session on the slot's doorbell (a virtio-serial port) against the same
                  with vm.sh --no-doorbell (polling): the worker's wake-ups and QEMU's CPU time
                  per idle second, and the sync sample's output through the doorbell
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import harness  # noqa: E402
from harness import Bypassd, check, log  # noqa: E402

# Small runs: a TCG guest runs the ICD's side some ten times slower than the host.
SAMPLE_ARGS = {
    "triangle": ["--frames", "3"],
    "compute": ["--frames", "2", "--elements", "262144"],
    "texture": ["--frames", "2"],
    "multithread": ["--frames", "2"],
    "sync": ["--frames", "1"],
}

# vulkaninfo in a VM against vulkaninfo in a process guest: what may differ, and why.
VM_MISSING_EXTENSIONS = {
    "VK_KHR_external_memory_fd": "no file descriptor crosses a VM boundary (docs/vm.md)",
}


def vm_sh():
    return harness.env_path("BYPASS_VM_SH")


class VmDevices:
    """Device files under /dev/shm (QEMU maps them as the ivshmem BAR), removed at the end."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="bypass-vm-", dir="/dev/shm")

    def path(self, name):
        return os.path.join(self.dir, name)

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class Vm:
    """One `scripts/vm.sh run` in the background."""

    def __init__(self, device, workdir, tag, command, env=(), options=()):
        """`device`: a device file, or a list of them (one ivshmem device each, in order)."""
        self.out = os.path.join(workdir, f"{tag}.out")
        self.pidfile = os.path.join(workdir, f"{tag}.qemu.pid")
        argv = [
            vm_sh(),
            "--build",
            harness.env_path("BYPASS_BUILD_DIR"),
        ]
        for one in [device] if isinstance(device, str) else device:
            argv += ["--device", one]
        argv += [
            "--out",
            self.out,
            "--timeout",
            "150",
        ] + list(options)
        for kv in env:
            argv += ["--env", kv]
        argv += ["run", "--"] + list(command)
        env_vars = dict(os.environ, BYPASS_VM_PIDFILE=self.pidfile)
        self.run = harness.Running(argv, env_vars, workdir, tag)

    def wait(self, timeout=170):
        return self.run.wait(timeout=timeout)

    def read_out(self, name):
        """A file the guest's command wrote (vm.sh copies them to `out` once the guest is off)."""
        path = os.path.join(self.out, name)
        check(os.path.exists(path), f"{name} did not come out of the VM ({self.out})")
        with open(path) as f:
            return f.read()

    def qemu_pid(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(self.pidfile):
                text = open(self.pidfile).read().strip()
                if text:
                    return int(text)
            check(self.run.proc.poll() is None, f"vm.sh ended before QEMU started:\n{self.run.result().describe()}")
            time.sleep(0.05)
        raise harness.TestFailure("QEMU did not start")


def native_outputs(names, workdir):
    refs = {}
    for name in names:
        out = os.path.join(workdir, f"{name}.native.out")
        argv = [harness.sample_path(name)] + SAMPLE_ARGS[name] + ["--out", out]
        refs[name] = (harness.Running(argv, harness.native_env(workdir), workdir, f"{name}.native"), out)
    return refs


def native_output(refs, name):
    run, out = refs[name]
    harness.check_ok(run.wait(timeout=150), f"native {name}")
    return out


def samples_command(names):
    """One shell line running each sample in turn, writing NAME.out in the guest's directory."""
    parts = []
    for name in names:
        argv = " ".join([harness.sample_path(name)] + SAMPLE_ARGS[name] + ["--out", f"{name}.out"])
        parts.append(f"{argv} || exit $?")
    return ["sh", "-c", "; ".join(parts)]


def check_vm_samples(vm, result, names, refs, what):
    harness.check_ok(result, what)
    for name in names:
        check(
            result.stdout.count("bypass (") >= 1,
            f"{what}: no sample ran on the bypass device:\n" f"{result.describe()}",
        )
        harness.check_same_file(
            native_output(refs, name), os.path.join(vm.out, f"{name}.out"), f"{what}: {name} in the VM vs native"
        )
    timing = re.search(r"vm.sh: (\w+) guest, kernel up after ([0-9.?]+) s, whole run ([0-9.?]+) s", result.stderr)
    if timing:
        log(f"{what}: {timing.group(1)} guest, kernel up after {timing.group(2)} s, whole run {timing.group(3)} s")


def start_server(workdir, devices, names, extra=()):
    args = []
    for name in names:
        args += ["--vm", f"{name}:{devices.path(name)}"]
    return Bypassd(workdir, extra_args=args + list(extra)).start()


def wait_no_objects(server, what, timeout=30):
    return server.wait_stats(lambda s: s["sessions"] == [] and s["live_objects"] == 0, what, timeout=timeout)


def render_then_stop(server, devices, workdir, tag, sample, refs, what):
    """One sample in a new VM on vm1, its output identical to native; then bypassd stops clean."""
    vm = Vm(devices.path("vm1"), workdir, tag, samples_command([sample]))
    check_vm_samples(vm, vm.wait(), [sample], refs, what)
    wait_no_objects(server, f"{what}: the sessions to end")
    check(server.stop() == 0, "bypassd did not exit cleanly")


def case_samples(workdir, mode):
    names = list(SAMPLE_ARGS)
    refs = native_outputs(names, workdir)
    devices = VmDevices()
    try:
        server = start_server(workdir, devices, ["vm1"])
        env = ["BYPASS_MEMORY=shadow"] if mode == "shadow" else []
        # Then the slot's heap run full: VK_ERROR_OUT_OF_DEVICE_MEMORY, and memory again once freed.
        command = samples_command(names)
        command[-1] += f"; {harness.env_path('BYPASS_PROBE')} fill-memory 16 > fill.txt || exit $?"
        vm = Vm(devices.path("vm1"), workdir, "vm1", command, env)
        result = vm.wait()
        check_vm_samples(vm, result, names, refs, f"samples in a VM{' (shadow memory)' if mode else ''}")
        log(f"{', '.join(names)}: outputs identical to native{' with BYPASS_MEMORY=shadow' if mode else ''}")
        fill = open(os.path.join(vm.out, "fill.txt")).read()
        filled = re.search(r"^filled: (\d+) blocks of 16 MiB, then (\w+)$", fill, re.M)
        check(
            filled
            and filled.group(2) == "VK_ERROR_OUT_OF_DEVICE_MEMORY"
            and int(filled.group(1)) > 0
            and "vkAllocateMemory after freeing: VK_SUCCESS" in fill,
            f"the full heap:\n{fill}",
        )
        log(
            f"device heap: {filled.group(1)} blocks of 16 MiB, then VK_ERROR_OUT_OF_DEVICE_MEMORY; "
            f"memory again after freeing"
        )
        stats = wait_no_objects(server, "the VM's sessions to end")
        ended = stats["ended"]
        check(ended and all(harness.is_clean(e) for e in ended), f"sessions did not end cleanly: {ended}")
        check(all(e["objects"] == 0 for e in ended), f"objects left when sessions ended: {ended}")
        check(server.stop() == 0, "bypassd did not exit cleanly")
    finally:
        devices.remove()


def case_two_vms(workdir, _):
    names = ["triangle", "compute", "texture"]
    refs = native_outputs(names, workdir)
    devices = VmDevices()
    try:
        server = start_server(workdir, devices, ["vm1", "vm2"])
        a = Vm(devices.path("vm1"), workdir, "vm1", samples_command(names))
        b = Vm(devices.path("vm2"), workdir, "vm2", samples_command(list(reversed(names))))
        ra, rb = a.wait(), b.wait()
        check_vm_samples(a, ra, names, refs, "VM 1 of 2")
        check_vm_samples(b, rb, names, refs, "VM 2 of 2")
        log("two VMs at once: every output identical to native")
        wait_no_objects(server, "both VMs' sessions to end")
        check(server.stop() == 0, "bypassd did not exit cleanly")
    finally:
        devices.remove()


def case_vm_killed(workdir, _):
    refs = native_outputs(["triangle"], workdir)
    devices = VmDevices()
    try:
        server = start_server(workdir, devices, ["vm1"])
        victim = Vm(
            devices.path("vm1"),
            workdir,
            "victim",
            [harness.sample_path("triangle"), "--frames", "100000", "--out", "never.out"],
        )
        qemu = victim.qemu_pid()
        stats = server.wait_stats(
            lambda s: any(x["objects"] > 10 and x.get("vm") == "vm1" for x in s["sessions"]),
            "the VM's session to hold objects",
            timeout=90,
        )
        held = sum(x["objects"] for x in stats["sessions"])
        sid = next(x["id"] for x in stats["sessions"] if x["objects"] > 10 and x.get("vm") == "vm1")
        time.sleep(0.5)  # mid-frame
        os.kill(qemu, signal.SIGKILL)
        killed_at = time.monotonic()
        stats, e = server.wait_ended(sid, "the killed VM's session to end", timeout=30)
        took = time.monotonic() - killed_at
        victim.wait(timeout=30)
        log(
            f"QEMU killed while its session held {held} objects: session {e['id']} ended after "
            f"{took:.1f} s ({e['reason']}: {e['detail']}), live objects 0"
        )
        # QEMU's death closed the slot's doorbell: the worker learns it at once, not from the
        # guest's heartbeat standing still for 4 s.
        check(took < 3.0, f"the killed VM's session took {took:.1f} s to end: the doorbell's end went unnoticed")
        check(e["objects"] == 0, f"objects left after the session of the killed VM: {e}")
        harness.check_stats_consistent(stats)
        server.check_alive("after the VM was killed")
        # A new VM on the same device renders correctly.
        render_then_stop(server, devices, workdir, "after", "triangle", refs, "a new VM after the kill")
    finally:
        devices.remove()


def monitor_command(path, command, timeout=60.0):
    """Runs one command on QEMU's human monitor and returns once QEMU has taken it: after its
    prompt, the command, and the next prompt. A command written before QEMU's busy main loop
    read the connection, on a socket closed at once, can be lost (vm_reset once waited 120 s
    for a reset that never came)."""
    deadline = time.monotonic() + timeout * harness.TIMEOUT_SCALE

    def until_prompt(m, seen):
        while b"(qemu)" not in seen:
            check(time.monotonic() < deadline, f"QEMU's monitor gave no prompt within {timeout} s: {seen!r}")
            m.settimeout(max(0.1, deadline - time.monotonic()))
            chunk = m.recv(4096)
            check(chunk, f"QEMU's monitor closed the connection: {seen!r}")
            seen += chunk
        return seen.split(b"(qemu)", 1)[1]

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as m:
        m.connect(path)
        rest = until_prompt(m, b"")
        m.sendall(command.encode() + b"\n")
        until_prompt(m, rest)


def case_vm_reset(workdir, _):
    """A VM reset mid-frame (QEMU's system_reset: QEMU lives on, the guest's memory and processes
    are gone): its session ends with everything it held released, and the rebooted guest, which
    runs its command again, gets a new session that works."""
    devices = VmDevices()
    monitor = os.path.join(workdir, "monitor.sock")
    try:
        server = start_server(workdir, devices, ["vm1"])
        vm = Vm(
            devices.path("vm1"),
            workdir,
            "reset",
            [harness.sample_path("triangle"), "--frames", "100000", "--out", "never.out"],
            options=["--monitor", monitor, "--allow-reboot"],
        )
        qemu = vm.qemu_pid()
        stats = server.wait_stats(
            lambda s: any(x["objects"] > 10 for x in s["sessions"]), "the VM's session to hold objects", timeout=90
        )
        first = max(x["id"] for x in stats["sessions"])
        held = sum(x["objects"] for x in stats["sessions"])
        time.sleep(0.5)  # mid-frame
        monitor_command(monitor, "system_reset")
        reset_at = time.monotonic()
        stats = server.wait_stats(
            lambda s: any(e["id"] == first for e in s["ended"])
            and any(x["id"] > first and x["objects"] > 10 for x in s["sessions"]),
            "the session from before the reset to end and the rebooted guest to render again",
            timeout=120,
        )
        ended = next(e for e in stats["ended"] if e["id"] == first)
        check(ended["objects"] == 0, f"objects left after the reset: {ended}")
        check(os.path.exists(f"/proc/{qemu}"), "QEMU should have lived through the reset")
        log(
            f"reset with {held} objects held: session {first} ended ({ended['reason']}: {ended['detail']}); "
            f"the rebooted guest's session renders {time.monotonic() - reset_at:.1f} s after the reset"
        )
        server.check_alive("after the reset")
        os.kill(qemu, signal.SIGKILL)
        vm.wait(timeout=30)
        wait_no_objects(server, "the rebooted guest's session to end after QEMU was killed")
        check(server.stop() == 0, "bypassd did not exit cleanly")
    finally:
        devices.remove()


def case_bypassd_killed(workdir, _):
    devices = VmDevices()
    try:
        server = start_server(workdir, devices, ["vm1"])
        vm = Vm(
            devices.path("vm1"),
            workdir,
            "vm1",
            [harness.sample_path("triangle"), "--frames", "100000", "--out", "never.out"],
        )
        server.wait_stats(
            lambda s: any(x["objects"] > 10 for x in s["sessions"]), "the VM's session to hold objects", timeout=90
        )
        time.sleep(0.5)
        server.proc.kill()
        server.proc.wait()
        killed_at = time.monotonic()
        result = vm.wait(timeout=60)
        check(result.returncode != 0, f"the guest program did not fail when bypassd died:\n{result.describe()}")
        check(
            "VK_ERROR_DEVICE_LOST" in result.stderr,
            f"the guest program did not report VK_ERROR_DEVICE_LOST:\n{result.describe()}",
        )
        log(
            f"bypassd killed: the guest program exited with VK_ERROR_DEVICE_LOST, VM done "
            f"{time.monotonic() - killed_at:.1f} s later (status {result.returncode})"
        )
    finally:
        devices.remove()


def worker_pid(session_id, timeout=10):
    """bypassd's worker process for a session (it names itself bypassd-s<id>)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/comm") as f:
                        if f.read().strip() == f"bypassd-s{session_id}":
                            return int(entry)
                except OSError:
                    pass
        time.sleep(0.05)
    raise harness.TestFailure(f"no worker process bypassd-s{session_id}")


def switches(pid):
    """Context switches of every thread of a process so far."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                        total += int(line.split(":")[1])
        except OSError:
            pass  # a thread that ended meanwhile
    return total


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_session(server, devices, workdir, tag, options):
    """A guest asleep in vkWaitForFences on a fence nobody signals (e2e_probe wait-fence) while
    its worker waits for its next command: the session's wake-up mode from bypassd's log, and per
    idle second the worker's context switches and QEMU's CPU time. bypassctl then ends the
    session, and the guest's wait returns VK_ERROR_DEVICE_LOST."""
    probe = harness.env_path("BYPASS_PROBE")
    known = {e["id"] for e in server.stats()["ended"]} | {x["id"] for x in server.stats()["sessions"]}
    vm = Vm(
        devices.path("vm1"), workdir, tag, ["sh", "-c", f"{probe} wait-fence > wait.txt 2>&1; true"], options=options
    )
    qemu = vm.qemu_pid()
    stats = server.wait_stats(
        lambda s: any(x["id"] not in known and x.get("vm") == "vm1" and x["objects"] >= 3 for x in s["sessions"]),
        f"{tag}: the idle guest's session to hold its device and fence",
        timeout=90,
    )
    # Every guest opens a short session for the loader first: the probe's is the one still live.
    time.sleep(1.0)  # past the set-up's last replies
    live = [x for x in server.stats()["sessions"] if x["id"] not in known and x.get("vm") == "vm1"]
    check(len(live) == 1, f"{tag}: want the probe's one live session: {live}")
    sid = live[0]["id"]
    worker = worker_pid(sid)
    s0, c0, m0, t0 = switches(worker), cpu_seconds(qemu), switches(server.proc.pid), time.monotonic()
    time.sleep(3.0)
    s1, c1, m1, t1 = switches(worker), cpu_seconds(qemu), switches(server.proc.pid), time.monotonic()
    # bypassd's main process looks at its VM slots every 50 ms (guests ring as they ask for a
    # session), not every 5 ms: some 20 wake-ups a second, with or without the guest's doorbell.
    main_rate = (m1 - m0) / (t1 - t0)
    log(f"{tag}: bypassd's main process woke {main_rate:.0f} times a second")
    check(main_rate < 100, f"{tag}: bypassd's main process woke {main_rate:.0f} times a second while idle")
    mode = re.search(rf"session {sid}: VM vm1 slot \d+: .*\(wake-ups: (\w+)\)", server.log_text())
    check(mode, f"{tag}: bypassd did not log session {sid}'s wake-ups:\n{server.log_text()[-2000:]}")
    ended = subprocess.run(
        [harness.env_path("BYPASSCTL"), "--control", server.control, "end", str(sid)], capture_output=True, text=True
    )
    check(ended.returncode == 0, f"bypassctl end {sid}: {ended.stderr.strip()}")
    harness.check_ok(vm.wait(), f"{tag}: the idle guest")
    waited = vm.read_out("wait.txt")
    check("VK_ERROR_DEVICE_LOST" in waited, f"{tag}: the guest's fence wait did not end in a lost device:\n{waited}")
    return mode.group(1), (s1 - s0) / (t1 - t0), (c1 - c0) / (t1 - t0)


def case_doorbell(workdir, _):
    refs = native_outputs(["sync"], workdir)
    devices = VmDevices()
    try:
        server = start_server(workdir, devices, ["vm1"], ["--management"])  # for bypassctl end
        bell_mode, bell_wakes, bell_cpu = idle_session(server, devices, workdir, "doorbell", [])
        poll_mode, poll_wakes, poll_cpu = idle_session(server, devices, workdir, "polling", ["--no-doorbell"])
        log(
            f"idle session, per second: doorbell ({bell_mode}) {bell_wakes:.0f} worker wake-ups, QEMU "
            f"{bell_cpu * 100:.0f}% CPU; --no-doorbell ({poll_mode}) {poll_wakes:.0f} wake-ups, {poll_cpu * 100:.0f}% CPU"
        )
        check(bell_mode == "doorbell", f"the session with vm.sh's doorbells used {bell_mode}")
        check(poll_mode == "polling", f"the session without doorbells used {poll_mode}")
        # Polling, the worker's receiving thread naps some 5,000 times a second, and so does the
        # guest's waiting thread inside QEMU; on the doorbell each wakes once per liveness slice
        # (20 a second), besides the heartbeats.
        check(
            bell_wakes * 10 < poll_wakes,
            f"the idle worker woke {bell_wakes:.0f} times a second on the doorbell, {poll_wakes:.0f} polling",
        )
        check(
            bell_cpu < poll_cpu,
            f"QEMU used {bell_cpu * 100:.0f}% CPU idle on the doorbell, {poll_cpu * 100:.0f}% polling",
        )
        # Round trips and fence waits through the doorbell: the sync sample's output is native's.
        render_then_stop(server, devices, workdir, "sync", "sync", refs, "the sync sample on the doorbell")
    finally:
        devices.remove()


def quiet_loader_env(env, home):
    """No layers from this machine's configuration: the guest image has none either."""
    env = dict(env)
    env["XDG_DATA_DIRS"] = "/nonexistent"
    env["XDG_CONFIG_DIRS"] = "/nonexistent"
    env["HOME"] = home
    return env


def case_vulkaninfo(workdir, _):
    vulkaninfo = harness.env_path("BYPASS_VULKANINFO")
    devices = VmDevices()
    try:
        server = start_server(workdir, devices, ["vm1"])
        local = harness.run(
            [vulkaninfo],
            quiet_loader_env(harness.unsanitized_guest_env(server.guest_env()), workdir),
            workdir,
            "vulkaninfo.process",
            60,
        )
        harness.check_ok(local, "vulkaninfo in a process guest")
        vm = Vm(devices.path("vm1"), workdir, "vm1", ["sh", "-c", f"{vulkaninfo} > vulkaninfo.txt"])
        result = vm.wait()
        harness.check_ok(result, "vulkaninfo in a VM")
        in_vm = open(os.path.join(vm.out, "vulkaninfo.txt")).read().splitlines()
        check(any("bypass (" in line for line in in_vm), "vulkaninfo in the VM does not show the bypass device")
        # Expected: the process guest's output without what needs a file descriptor.
        expected, removed, section = [], {}, None
        count_re = re.compile(r"^(Instance|Device) Extensions: count = (\d+)$")
        ext_re = re.compile(r"^\s+(VK_\w+)\s+: extension revision \d+$")
        for line in local.stdout.splitlines():
            m = count_re.match(line)
            if m:
                section = m.group(1)
            ext = ext_re.match(line)
            if ext and ext.group(1) in VM_MISSING_EXTENSIONS:
                removed[section] = removed.get(section, 0) + 1
                continue
            expected.append(line)
        expected = [
            count_re.sub(
                lambda mm: f"{mm.group(1)} Extensions: count = " f"{int(mm.group(2)) - removed.get(mm.group(1), 0)}",
                line,
            )
            for line in expected
        ]
        # Each guest numbers its own sessions: the ICD's name carries its pid (none is printed).
        if expected != in_vm:
            diff = harness.text_diff(
                "\n".join(expected), "\n".join(in_vm), "process guest (less fd extensions)", "VM guest"
            )
            raise harness.TestFailure(f"vulkaninfo in the VM differs beyond the allowed differences:\n{diff}")
        log(
            f"vulkaninfo: {len(in_vm)} lines equal in a VM and in a process guest, apart from "
            f"{', '.join(VM_MISSING_EXTENSIONS)} ({sum(removed.values())} lines)"
        )
        wait_no_objects(server, "vulkaninfo's sessions to end")
        check(server.stop() == 0, "bypassd did not exit cleanly")
    finally:
        devices.remove()


if __name__ == "__main__":
    raise SystemExit(
        harness.main(
            {
                "samples": case_samples,
                "two-vms": case_two_vms,
                "vm-killed": case_vm_killed,
                "vm-reset": case_vm_reset,
                "bypassd-killed": case_bypassd_killed,
                "vulkaninfo": case_vulkaninfo,
                "doorbell": case_doorbell,
            }
        )
    )
