#!/usr/bin/env python3
"""The crossover NIC between two QEMU guests (label `vm`; root).

The link daemon on this machine serves a VM device (bypass-xover create --device FILE under
/dev/shm); two guests booted by scripts/vm.sh map it as their ivshmem BAR and each runs
`bypass-xover endpoint --device ivshmem:` inside, which makes a TAP device in the guest's own
kernel (its tun module). Frames travel guest TAP -> device pool -> host switch -> other guest's
TAP, with no file descriptor crossing: the rings are polled and peer death is heartbeats.

  crossover [BYTES]  VM b pings VM a, then streams BYTES (default 100 MiB) over TCP to it with a
                     CRC-32 on both ends; VM a pings the uplink's address (a namespace on this
                     machine), which the cross-talk detector sends up, not across; then VM b's
                     MAC moves to the uplink (VM b takes another one, the uplink takes VM b's
                     and speaks): the switch re-learns it and VM a's frames to that MAC take
                     the uplink, as between namespaces; once the guests power off, both ports
                     go down by heartbeat and the daemon lives on
"""

import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log  # noqa: E402
from vm_test import Vm, VmDevices  # noqa: E402

SUBNET = "10.77.0"
MAC_B = "02:bb:00:00:00:02"  # VM b's, until it moves to the uplink
NEW_B = "02:bb:00:00:00:99"  # what VM b takes then


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


def endpoint_script(side, address, then, mac=None):
    # The endpoint makes xo0 once the daemon accepted it; the rest waits for that.
    mac_option = f" --mac {mac}" if mac else ""
    return (
        f"{xover()} endpoint --device ivshmem: --side {side}{mac_option} --addr {address}/24 2> endpoint.log &\n"
        "i=0; while ! ip link show xo0 >/dev/null 2>&1; do i=$((i+1)); [ $i -gt 600 ] && exit 90; sleep 0.1; done\n"
        + then
    )


def learnt(st, mac):
    """The port the switch learnt `mac` at, or None."""
    return next((m["port"] for m in st.get("macs", []) if m["mac"] == mac), None)


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
                    f"ping -c 3 -W 5 {SUBNET}.3 > ping-uplink.txt; echo $? > ping-uplink.status\n"
                    # The uplink's address at VM b's MAC: across to VM b (which drops it) until
                    # the MAC moves, then up.
                    f"ip neigh replace {SUBNET}.3 lladdr {MAC_B} dev xo0\n"
                    f"n=0; until ping -c 1 -W 1 {SUBNET}.3 >/dev/null 2>&1; do n=$((n+1)); [ $n -gt 200 ] && break; done\n"
                    f"ping -c 3 -W 5 {SUBNET}.3 > ping-moved.txt; echo $? > ping-moved.status\n"
                    # Tell VM b it may power off: over the crossover, to its new MAC.
                    f"ip neigh replace {SUBNET}.2 lladdr {NEW_B} dev xo0\n"
                    f"{probe()} send {SUBNET}.2 5002 4096 120 > done.txt\n",
                ),
            ],
            # Both VMs map the one device: each gets its own side's doorbell only.
            options=timeout + ["--doorbell-slots", "0"],
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
                    f"{probe()} send {SUBNET}.1 5001 {nbytes} 300 > send.txt\n"
                    # Give up the MAC (the switch learns the new one from the pings' frames),
                    # then stay up until VM a has reached the uplink at the old one.
                    f"ip link set dev xo0 address {NEW_B}\n"
                    f"ping -c 2 -W 1 {SUBNET}.1 >/dev/null 2>&1\n"
                    f"{probe()} recv 5002 240 > done.txt\n",
                    mac=MAC_B,
                ),
            ],
            options=timeout + ["--doorbell-slots", "1"],
        )
        # VM b took its new MAC: the uplink takes the old one and speaks, which moves it.
        wait_status(socket_path, lambda st: learnt(st, NEW_B) == "b", f"VM b's new MAC {NEW_B} learnt", 400)
        before = status(socket_path)
        subprocess.run(
            ["ip", "netns", "exec", netns, "ip", "link", "set", "dev", "xo-up0", "address", MAC_B], check=True
        )
        subprocess.run(
            ["ip", "netns", "exec", netns, "ping", "-c", "3", "-W", "2", f"{SUBNET}.1"],
            check=False,
            capture_output=True,
        )
        moved = wait_status(socket_path, lambda st: learnt(st, MAC_B) == "uplink", f"{MAC_B} learnt at the uplink", 30)
        check(
            moved["mac_moves"] > before["mac_moves"],
            f"the switch did not count a move: {before['mac_moves']} -> {moved['mac_moves']}",
        )
        # VM a's pings to the moved MAC may come before this snapshot (the uplink's own pings
        # take seconds): count from before the move.
        to_uplink = before["to_uplink"]
        ra, rb = a.wait(timeout=420), b.wait(timeout=420)
        check(ra.returncode == 0, f"VM a failed:\n{ra.describe()}")
        check(rb.returncode == 0, f"VM b failed:\n{rb.describe()}")
        check(b.read_out("ping.status").strip() == "0", f"VM b could not ping VM a:\n{b.read_out('ping.txt')}")
        sent, crc_sent, _ = parse_stream(b.read_out("send.txt"), "VM b")
        received, crc_received, seconds = parse_stream(a.read_out("recv.txt"), "VM a")
        check(sent == nbytes and received == nbytes, f"sent {sent}, received {received}, wanted {nbytes}")
        check(crc_sent == crc_received, f"CRC-32 differs: sent {crc_sent}, received {crc_received}")
        log(f"{nbytes} bytes VM b -> VM a over the crossover, CRC-32 {crc_sent} on both ends, {seconds:.2f} s")
        check(
            a.read_out("ping-uplink.status").strip() == "0",
            f"VM a could not ping the uplink:\n{a.read_out('ping-uplink.txt')}",
        )
        check(
            a.read_out("ping-moved.status").strip() == "0",
            f"VM a could not reach the uplink at VM b's old MAC:\n{a.read_out('ping-moved.txt')}",
        )
        s = status(socket_path)
        check(s is not None, "the link daemon does not answer after the guests")
        check(s["to_uplink"] - to_uplink >= 3, f"VM a's frames to the moved MAC did not take the uplink: {s}")
        log(f"VM b's MAC {MAC_B} moved to the uplink (mac_moves {s['mac_moves']}); VM a reached it there")
        check(s["crossover"] >= 100, f"few frames went across: {s}")
        check(s["to_uplink"] >= 3, f"the pings to the uplink's address did not take the uplink: {s}")
        log(f"switch: crossover {s['crossover']}, to uplink {s['to_uplink']}, from uplink {s['from_uplink']}")
        # Both guests powered off: their QEMUs closed the doorbells, so both ports go down.
        wait_status(
            socket_path,
            lambda st: not st["ports"]["a"]["live"] and not st["ports"]["b"]["live"],
            "both VM ports to go down",
            30,
        )
        check(daemon.proc.poll() is None, "the link daemon died")
        err = daemon.result().stderr
        for side in ("a", "b"):
            check(
                re.search(rf"VM endpoint {side} attached, .*wake-ups: doorbell", err),
                f"VM {side}'s endpoint did not attach with its doorbell:\n{err}",
            )
            check(f"VM endpoint {side} gone (its doorbell closed)" in err, f"VM {side}'s doorbell end:\n{err}")
        log(
            "both endpoints woke through their doorbells; both ports down as the QEMUs closed them; the daemon lives on"
        )
    finally:
        if daemon is not None:
            harness.stop_process(daemon.proc)
        subprocess.run(["ip", "netns", "del", netns], check=False)
        devices.remove()


if __name__ == "__main__":
    raise SystemExit(harness.main({"crossover": case_crossover}))
