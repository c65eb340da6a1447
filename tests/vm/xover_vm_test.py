#!/usr/bin/env python3
"""The crossover NIC between two QEMU guests (label `vm`; root).

The link daemon on this machine serves a VM device (bypass-xover create --device FILE under
/dev/shm); two guests booted by scripts/vm.sh map it as their ivshmem BAR and each runs
`bypass-xover endpoint --device ivshmem:` inside, which makes a TAP device in the guest's own
kernel (its tun module). Frames travel guest TAP -> device pool -> host switch -> other guest's
TAP, with no file descriptor crossing: the rings are polled and peer death is heartbeats.

  crossover [BYTES]  VM b pings VM a, then streams BYTES (default 100 MiB) over TCP to it with a
                     CRC-32 on both ends; VM a pings the uplink's address (a namespace on this
                     machine), which the cross-talk detector sends up, not across; once the
                     guests power off, both ports go down by heartbeat and the daemon lives on
"""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log  # noqa: E402
from vm_test import Vm, VmDevices  # noqa: E402

SUBNET = "10.77.0"


def xover():
    return os.path.join(harness.env_path("BYPASS_BUILD_DIR"), "crossover", "bypass-xover")


def probe():
    # The image holds our binaries at their own paths (scripts/vm.sh).
    return os.path.join(harness.env_path("BYPASS_BUILD_DIR"), "tests", "crossover", "xover_probe")


def status(socket_path):
    out = subprocess.run(
        [xover(), "status", "x", "--json", "--socket", socket_path], capture_output=True, text=True, timeout=20
    )
    return json.loads(out.stdout) if out.returncode == 0 else None


def wait_status(socket_path, predicate, what, timeout):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = status(socket_path)
        if last is not None and predicate(last):
            return last
        time.sleep(0.2)
    raise harness.TestFailure(f"timed out waiting for {what}; last status: {last}")


def endpoint_script(side, address, then):
    # The endpoint makes xo0 once the daemon accepted it; the rest waits for that.
    return (
        f"{xover()} endpoint --device ivshmem: --side {side} --addr {address}/24 2> endpoint.log &\n"
        "i=0; while ! ip link show xo0 >/dev/null 2>&1; do i=$((i+1)); [ $i -gt 600 ] && exit 90; sleep 0.1; done\n"
        + then
    )


def read_out(vm, name):
    path = os.path.join(vm.out, name)
    check(os.path.exists(path), f"{name} did not come out of the VM ({vm.out})")
    with open(path) as f:
        return f.read()


def parse_stream(text, what):
    words = text.split()
    check(len(words) >= 4 and words[0] in ("sent", "received"), f"{what}: unexpected probe output {text!r}")
    return int(words[1]), words[3], float(words[5]) if len(words) > 5 else 0.0


def case_crossover(workdir, arg):
    nbytes = int(arg) if arg else 100 << 20
    devices = VmDevices()
    netns = f"xvu-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    daemon = None
    try:
        device = devices.path("xover")
        socket_path = os.path.join(workdir, "xover.sock")
        daemon = harness.Running(
            [
                xover(),
                "create",
                "xvm",
                "--foreground",
                "-v",
                "--device",
                device,
                "--socket",
                socket_path,
                "--uplink-netns",
                netns,
                "--uplink-addr",
                f"{SUBNET}.3/24",
            ],
            dict(os.environ),
            workdir,
            "xover",
        )
        wait_status(socket_path, lambda s: s["ports"]["uplink"]["live"], "the link daemon", 20)
        timeout = ["--timeout", "400", "--memory", "512"]
        a = Vm(
            device,
            workdir,
            "vm-a",
            [
                "sh",
                "-c",
                endpoint_script(
                    "a",
                    f"{SUBNET}.1",
                    f"{probe()} recv 5001 300 > recv.txt\n"
                    f"ping -c 3 -W 5 {SUBNET}.3 > ping-uplink.txt; echo $? > ping-uplink.status\n",
                ),
            ],
            options=timeout,
        )
        b = Vm(
            device,
            workdir,
            "vm-b",
            [
                "sh",
                "-c",
                endpoint_script(
                    "b",
                    f"{SUBNET}.2",
                    f"n=0; until ping -c 1 -W 1 {SUBNET}.1 >/dev/null 2>&1; do n=$((n+1)); [ $n -gt 300 ] && break; done\n"
                    f"ping -c 3 -W 5 {SUBNET}.1 > ping.txt; echo $? > ping.status\n"
                    f"{probe()} send {SUBNET}.1 5001 {nbytes} 300 > send.txt\n",
                ),
            ],
            options=timeout,
        )
        ra, rb = a.wait(timeout=420), b.wait(timeout=420)
        check(ra.returncode == 0, f"VM a failed:\n{ra.describe()}")
        check(rb.returncode == 0, f"VM b failed:\n{rb.describe()}")
        check(read_out(b, "ping.status").strip() == "0", f"VM b could not ping VM a:\n{read_out(b, 'ping.txt')}")
        sent, crc_sent, _ = parse_stream(read_out(b, "send.txt"), "VM b")
        received, crc_received, seconds = parse_stream(read_out(a, "recv.txt"), "VM a")
        check(sent == nbytes and received == nbytes, f"sent {sent}, received {received}, wanted {nbytes}")
        check(crc_sent == crc_received, f"CRC-32 differs: sent {crc_sent}, received {crc_received}")
        log(f"{nbytes} bytes VM b -> VM a over the crossover, CRC-32 {crc_sent} on both ends, {seconds:.2f} s")
        check(
            read_out(a, "ping-uplink.status").strip() == "0",
            f"VM a could not ping the uplink:\n{read_out(a, 'ping-uplink.txt')}",
        )
        s = status(socket_path)
        check(s is not None, "the link daemon does not answer after the guests")
        check(s["crossover"] >= 100, f"few frames went across: {s}")
        check(s["to_uplink"] >= 3, f"the pings to the uplink's address did not take the uplink: {s}")
        log(f"switch: crossover {s['crossover']}, to uplink {s['to_uplink']}, from uplink {s['from_uplink']}")
        # Both guests powered off: their endpoints' heartbeats stopped, so both ports go down.
        wait_status(
            socket_path,
            lambda st: not st["ports"]["a"]["live"] and not st["ports"]["b"]["live"],
            "both VM ports to go down by heartbeat",
            30,
        )
        check(daemon.proc.poll() is None, "the link daemon died")
        log("both VM ports down by heartbeat once the guests were gone; the daemon lives on")
    finally:
        if daemon is not None:
            harness.stop_process(daemon.proc)
        subprocess.run(["ip", "netns", "del", netns], check=False)
        devices.remove()


if __name__ == "__main__":
    raise SystemExit(harness.main({"crossover": case_crossover}))
