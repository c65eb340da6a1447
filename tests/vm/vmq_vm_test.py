#!/usr/bin/env python3
"""VM-queue messages between two QEMU guests through vmqd on this machine (label `vm`; root).

vmqd serves a VM device (vmqd --device FILE under /dev/shm): the page pools and the domains'
rings live in it, and each guest booted by scripts/vm.sh maps it as its ivshmem BAR. Inside,
`vmq_probe` attaches a domain through a device slot (Domain::connect("ivshmem:")), so pages
change owner between the guests by remapping the BAR, with no file descriptor crossing: the
rings are polled and peer death is heartbeats.

  vmqueue  VM b sends VM a 4 KiB and 2 MiB messages, CRC-32 over every payload compared on both
           ends, VM a sees VM b's identity as claimed (no SO_PEERCRED across a VM); then a domain
           in VM a writes garbage into its own ring (vmqd ends it, nobody else), and one in VM b
           dies holding pages (vmqd notices the silence and takes them back): at the end every
           pool page is free again and vmqd lives on
  killed   VM b's QEMU SIGKILLed while it streams messages to VM a: vmqd finds VM b's domain
           silent, VM a's receive ends with kPeerDead after what arrived, every pool page comes
           back and vmqd lives on
  isolated each VM has a control device of its own beside the shared pool device (vmqd --vm):
           VM a's vandal writes garbage over every slot and ring it can map, and over the pool
           device's header, while two domains in VM b move pages; it reaches only VM a's slots,
           VM b's transfer is whole, and vmqd ends nobody and gets every page back
"""

import contextlib
import os
import re
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check, log  # noqa: E402
from vm_test import Vm, VmDevices  # noqa: E402

PAGES_4K = 4096
PAGES_2M = 8
# Small and fast: 120 messages of 8 pages and 4 of one 2 MiB page (some 12 MiB).
MESSAGES, PAGES, HUGE = 120, 8, 4


def build(*parts):
    return os.path.join(harness.env_path("BYPASS_BUILD_DIR"), *parts)


def probe():
    # The image holds our binaries at their own paths (scripts/vm.sh).
    return build("tests", "vmqueue", "vmq_probe")


def parse(text, what):
    m = re.search(r"(sent|received) (\d+) messages (\d+) pages (\d+) bytes crc32 ([0-9a-f]+) seconds ([0-9.]+)", text)
    check(m is not None, f"{what}: unexpected probe output {text!r}")
    return int(m.group(2)), int(m.group(3)), int(m.group(4)), m.group(5), float(m.group(6))


def start_vmqd(workdir, device, extra=()):
    vmqd = harness.Running(
        [
            build("vmqueue", "vmqd"),
            "-v",
            "--socket",
            os.path.join(workdir, "vmq.sock"),
            "--device",
            device,
            "--vm-slots",
            "4",
            "--pages-4k",
            str(PAGES_4K),
            "--pages-2m",
            str(PAGES_2M),
            *extra,
        ],
        dict(os.environ),
        workdir,
        "vmqd",
    )
    deadline = time.monotonic() + 20
    while "VM device" not in vmqd.stdout_text():
        check(vmqd.proc.poll() is None, f"vmqd exited:\n{vmqd.result().describe()}")
        check(time.monotonic() < deadline, "vmqd did not make its device in time")
        time.sleep(0.05)
    return vmqd


def stop_vmqd(vmqd):
    """Stops vmqd (it must still be alive) and returns its final statistics."""
    check(vmqd.proc.poll() is None, f"vmqd died:\n{vmqd.result().describe()}")
    check(harness.stop_process(vmqd.proc) == 0, f"vmqd did not stop cleanly:\n{vmqd.result().describe()}")
    out = vmqd.result().stdout
    stats = re.search(
        r"(\d+) domains served, (\d+) messages, (\d+) pages moved, (\d+) pages free, (\d+) VM domains silent, "
        r"(\d+) sessions ended for protocol errors",
        out,
    )
    check(stats is not None, f"no statistics from vmqd:\n{out}")
    return out, [int(g) for g in stats.groups()]


@contextlib.contextmanager
def vmqd_device(workdir):
    """A VM device file served by a vmqd of its own: yields (device, vmqd); both are gone after."""
    devices = VmDevices()
    vmqd = None
    try:
        device = devices.path("vmq")
        vmqd = start_vmqd(workdir, device)
        yield device, vmqd
    finally:
        if vmqd is not None:
            harness.stop_process(vmqd.proc)
        devices.remove()


def vm_running(device, workdir, name, script):
    """A QEMU guest on `device` that runs the shell `script`, with the tests' time limit."""
    return Vm(device, workdir, name, ["sh", "-c", script], options=["--timeout", "240"])


def case_vmqueue(workdir, _):
    with vmqd_device(workdir) as (device, vmqd):
        a = vm_running(
            device,
            workdir,
            "vm-a",
            f"{probe()} recv ivshmem: vm-a vm-b > recv.txt 2> recv.err || exit $?\n"
            f"{probe()} hostile ivshmem: evil-a > hostile.txt 2> hostile.err || exit $?\n",
        )
        b = vm_running(
            device,
            workdir,
            "vm-b",
            f"{probe()} send ivshmem: vm-b vm-a {MESSAGES} {PAGES} {HUGE} > send.txt 2> send.err || exit $?\n"
            f"{probe()} hold ivshmem: mute-b 100 > hold.txt 2> hold.err || exit $?\n",
        )
        ra, rb = a.wait(timeout=260), b.wait(timeout=260)
        gone = time.monotonic()
        check(ra.returncode == 0, f"VM a failed:\n{ra.describe()}")
        check(rb.returncode == 0, f"VM b failed:\n{rb.describe()}")
        sent = parse(b.read_out("send.txt"), "VM b")
        received_text = a.read_out("recv.txt")
        received = parse(received_text, "VM a")
        check(
            sent[:4] == received[:4],
            f"sent {sent[:4]} (messages, pages, bytes, crc32), received {received[:4]}",
        )
        check(sent[0] == MESSAGES + HUGE and sent[1] == MESSAGES * PAGES + HUGE, f"sent {sent}")
        check("peer vm-b claimed 1" in received_text, f"VM a's view of VM b: {received_text!r}")
        rate = re.search(r"in-send ([0-9.]+) sends/s (\d+)", b.read_out("send.txt"))
        log(
            f"{sent[0]} messages, {sent[1]} pages ({sent[2]} bytes) VM b -> VM a through vmqd, CRC-32 {sent[3]} "
            f"on both ends, {sent[4]:.2f} s in all, {rate.group(1) if rate else '?'} s of it in send() "
            f"({rate.group(2) if rate else '?'} sends/s, one broker round trip each)"
        )
        hostile = a.read_out("hostile.txt")
        check("the broker ended this domain" in hostile, f"the hostile domain: {hostile!r}")
        log("a VM domain writing garbage into its ring was ended by vmqd")
        check("holding 100 pages" in b.read_out("hold.txt"), "the dying domain did not take its pages")
        # The dying domain's heartbeat stood still: give vmqd its guest timeout (4 s) and a margin.
        time.sleep(max(0.0, gone + 6.0 - time.monotonic()))
        out, (served, messages, moved, free, silent, protocol) = stop_vmqd(vmqd)
        check(served == 4, f"vmqd served {served} domains, wanted 4:\n{out}")
        check(messages >= MESSAGES + HUGE + 2 and moved >= sent[1], f"vmqd moved too little:\n{out}")
        check(protocol == 1, f"the hostile domain was not the one ended:\n{out}")
        check(silent == 1, f"the dying domain was not found silent:\n{out}")
        check(free == PAGES_4K + PAGES_2M, f"pages left owned after every domain went: {free} free:\n{out}")
        log(f"vmqd: {messages} messages, {moved} pages moved; the silent domain's pages back: all {free} free")


def case_killed(workdir, _):
    with vmqd_device(workdir) as (device, vmqd):
        a = vm_running(
            device,
            workdir,
            "vm-a",
            f"{probe()} recv ivshmem: vm-a vm-b > recv.txt 2> recv.err; echo $? > recv.status\n",
        )
        # Far more than it can send before the kill.
        b = vm_running(
            device, workdir, "vm-b", f"{probe()} send ivshmem: vm-b vm-a 1000000 8 0 > send.txt 2> send.err\n"
        )
        qemu_b = b.qemu_pid()
        deadline = time.monotonic() + 180
        while "introduced" not in vmqd.result().stderr:
            check(time.monotonic() < deadline, f"the two VM domains were not introduced:\n{vmqd.result().stderr}")
            check(b.run.proc.poll() is None, f"VM b ended early:\n{b.run.result().describe()}")
            time.sleep(0.1)
        time.sleep(2.0)  # mid-stream
        os.kill(qemu_b, signal.SIGKILL)
        killed_at = time.monotonic()
        b.wait(timeout=30)
        ra = a.wait(timeout=120)
        check(ra.returncode == 0, f"VM a failed:\n{ra.describe()}")
        text = a.read_out("recv.txt")
        m = re.search(r"received (\d+) messages (\d+) pages .*then: (.*)", text)
        check(m is not None, f"VM a's receive did not end with an error: {text!r}")
        check(int(m.group(1)) > 0, f"nothing arrived before the kill: {text!r}")
        check(m.group(3) == "peer domain is gone", f"VM a's receive ended with {m.group(3)!r}, not kPeerDead")
        log(
            f"VM b's QEMU killed mid-stream: VM a had {m.group(1)} messages, then kPeerDead "
            f"({time.monotonic() - killed_at:.1f} s after the kill, VM a's power-off included)"
        )
        check(
            re.search(r"'vm-b' in slot \d+ silent", vmqd.result().stderr),
            f"vmqd did not find VM b silent:\n{vmqd.result().stderr}",
        )
        time.sleep(1.0)  # VM a's domain left as its VM powered off
        out, (served, messages, moved, free, silent, protocol) = stop_vmqd(vmqd)
        check(served == 2 and silent == 1 and protocol == 0, f"vmqd's counts:\n{out}")
        check(free == PAGES_4K + PAGES_2M, f"pages left owned after the killed VM: {free} free:\n{out}")
        log(f"vmqd: {messages} messages, {moved} pages moved; the killed VM's domain silent, all {free} pages free")


def case_isolated(workdir, _):
    devices = VmDevices()
    vmqd = None
    try:
        pool, ctl_a, ctl_b = devices.path("vmq"), devices.path("vmq-a"), devices.path("vmq-b")
        vmqd = start_vmqd(workdir, pool, ["--vm", f"a:{ctl_a}:2", "--vm", f"b:{ctl_b}:2"])
        # VM a: the pool device first, its control device second (the domain finds which is which).
        a = Vm(
            [pool, ctl_a],
            workdir,
            "vm-a",
            ["sh", "-c", f"{probe()} vandal ivshmem: 25 > vandal.txt"],
            options=["--timeout", "240"],
        )
        # VM b starts its transfer once the vandal's garbage shows in the pool device's header.
        b = Vm(
            [ctl_b, pool],
            workdir,
            "vm-b",
            [
                "sh",
                "-c",
                f"{probe()} wait-garbage ivshmem: 200 > wait.txt || exit 3\n"
                f"{probe()} recv ivshmem: b-recv b-send > recv.txt 2> recv.err &\n"
                f"{probe()} send ivshmem: b-send b-recv {MESSAGES} {PAGES} {HUGE} > send.txt 2> send.err || exit $?\n"
                "wait $! || exit $?\n",
            ],
            options=["--timeout", "240"],
        )
        ra, rb = a.wait(timeout=260), b.wait(timeout=260)
        check(ra.returncode == 0, f"VM a failed:\n{ra.describe()}")
        check(rb.returncode == 0, f"VM b failed:\n{rb.describe()}")
        vandal = a.read_out("vandal.txt")
        check("vandal: 2 devices, 2 slots overwritten" in vandal, f"what the vandal reached: {vandal!r}")
        sent = parse(b.read_out("send.txt"), "VM b's sender")
        received = parse(b.read_out("recv.txt"), "VM b's receiver")
        check(sent[:4] == received[:4], f"sent {sent[:4]}, received {received[:4]} (messages, pages, bytes, crc32)")
        check(sent[0] == MESSAGES + HUGE, f"sent {sent}")
        log(
            f"VM a's vandal ({vandal.strip()}) beside VM b's {sent[0]} messages in {sent[4]:.1f} s, CRC-32 {sent[3]} on both ends"
        )
        err = vmqd.result().stderr
        check(re.search(r"attached in VM 'b' slot", err), f"VM b's domains did not attach in its own slots:\n{err}")
        # A VM's own control device has a doorbell per slot (vm.sh wires the ports): VM b's domains
        # and vmqd kick each other through it instead of polling the rings.
        attached = re.findall(r"attached in VM 'b' slot .* wake-ups: (\w+)", err)
        check(attached and all(m == "doorbell" for m in attached), f"VM b's domains' wake-ups: {attached}\n{err}")
        log(f"VM b's {len(attached)} domains woke through their slots' doorbells")
        out, (served, messages, moved, free, silent, protocol) = stop_vmqd(vmqd)
        vmqd = None
        check(served == 2 and silent == 0 and protocol == 0, f"vmqd's counts:\n{out}")
        check(free == PAGES_4K + PAGES_2M, f"pages left owned: {free} free:\n{out}")
    finally:
        if vmqd is not None:
            harness.stop_process(vmqd.proc)
        devices.remove()


if __name__ == "__main__":
    raise SystemExit(harness.main({"vmqueue": case_vmqueue, "killed": case_killed, "isolated": case_isolated}))
