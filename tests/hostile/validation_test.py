#!/usr/bin/env python3
"""Validation before the driver: a hostile guest's invalid calls never reach lavapipe.

  validation_test.py all PROBE

One bypassd; a bystander guest (the texture sample) renders through it the whole time, its
output compared with a native run at the end; one hostile guest (tests/hostile/
validation_probe.cpp) per case makes one invalid call of the kind that crashed bypassd or
handed a guest the server's memory before the checks (a zeroed VkImageCreateInfo, mip levels
0 and 601, copies of 16 KiB, 64 KiB and 1 MiB out of a 4 KiB buffer, a fill and an update past
a buffer's end, an indirect dispatch past one, a descriptor range or array element past one,
a query outside its pool, push constants past the layout's, a set past the layout's, a dynamic
offset past a buffer's end, enum values no Vulkan defines, a private-data object handle that
names nothing of the guest's). Each must:
  - get an error: its session ends with a reason naming the command, the member and the
    numbers, which the guest reads on stderr, and its next waiting call returns
    VK_ERROR_DEVICE_LOST (a refused vkAllocateMemory or vkGetQueryPoolResults gets its
    VkResult and goes on);
  - read back only bytes it wrote itself, or zeros (the copies);
  - leave bypassd alive with one warning line naming the session and the reason.
A valid run of the same calls must succeed with correct results: the checks refuse nothing a
valid guest does.
"""

import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))

import harness  # noqa: E402
from harness import Bypassd, check, log  # noqa: E402

# probe arguments -> the detail (a regular expression) bypassd must give; the end reason is
# invalid_usage for all of them.
REFUSED = [
    (["image-zeroed"], r"^vkCreateImage: VkImageCreateInfo\.samples: 0 is not a valid VkSampleCountFlagBits$"),
    (["mip-levels-0"], r"^vkCreateImage\.pCreateInfo: mipLevels 0 is not in 1\.\.7 for extent 64x64x1$"),
    (["mip-levels-601"], r"^vkCreateImage\.pCreateInfo: mipLevels 601 is not in 1\.\.7 for extent 64x64x1$"),
    (
        ["copy-buffer", "16384"],
        r"^vkCmdCopyBuffer\.pRegions\[0\]: srcOffset 0 \+ size 16384 exceeds the buffer's 4096 bytes$",
    ),
    (
        ["copy-buffer", "65536"],
        r"^vkCmdCopyBuffer\.pRegions\[0\]: srcOffset 0 \+ size 65536 exceeds the buffer's 4096 bytes$",
    ),
    (
        ["copy-buffer", "1048576"],
        r"^vkCmdCopyBuffer\.pRegions\[0\]: srcOffset 0 \+ size 1048576 exceeds the buffer's 4096 bytes$",
    ),
    (["fill-past-end"], r"^vkCmdFillBuffer: dstOffset 0 \+ size 16384 exceeds the buffer's 4096 bytes$"),
    (["update-past-end"], r"^vkCmdUpdateBuffer: dstOffset 4080 \+ dataSize 64 exceeds the buffer's 4096 bytes$"),
    (["indirect-offset"], r"^vkCmdDispatchIndirect: offset 1048576 \+ 12 bytes exceeds the buffer's 64 bytes$"),
    (
        ["descriptor-range"],
        r"^vkUpdateDescriptorSets\.pDescriptorWrites\[0\]: pBufferInfo\[0\]: "
        r"offset 0 \+ range 65536 exceeds the buffer's 4096 bytes$",
    ),
    (
        ["descriptor-element"],
        r"^vkUpdateDescriptorSets\.pDescriptorWrites\[0\]: dstArrayElement 5 \+ descriptorCount 1 "
        r"exceeds the descriptors from binding 0 on$",
    ),
    (["query-index"], r"^vkCmdResetQueryPool: queries 10 \+ 1 exceed the pool's 4$"),
    (
        ["push-constants"],
        r"^vkCmdPushConstants: offset 4096 \+ size 16 exceeds the layout's 16 bytes of push constants$",
    ),
    (["bind-sets"], r"^vkCmdBindDescriptorSets: firstSet 3 \+ descriptorSetCount 1 exceeds the layout's 1 sets$"),
    (
        ["dynamic-offset"],
        r"^vkCmdBindDescriptorSets: pDynamicOffsets\[0\] 65536 moves set 0's dynamic descriptor 0 "
        r"past its buffer's end \(at most 3840\)$",
    ),
    (["enum-index-type"], r"^vkCmdBindIndexBuffer\.indexType: 77 is not a valid VkIndexType$"),
    (["enum-image-type"], r"^vkCreateImage: VkImageCreateInfo\.imageType: 7 is not a valid VkImageType$"),
    # vk.xml types objectHandle by objectType: an id like any handle's (lavapipe took the guest's
    # number for a pointer and crashed the worker).
    (["private-data-handle"], r"^vkSetPrivateData\.objectHandle: unknown handle id$"),
]

BYSTANDER_ARGS = ["--frames", "800"]


def probe(probe_path, server, workdir, args):
    tag = "probe." + "-".join(args)
    return harness.run([probe_path] + args, server.guest_env(), workdir, tag, timeout=30)


def ended(server, pid, what):
    """The last session of pid, once every session of pid has ended."""
    stats = server.wait_gone(pid, what)
    sessions = sorted(harness.ended_for_pid(stats, pid), key=lambda e: e["id"])
    for e in sessions:
        check(e["objects"] == 0, f"{what}: session {e['id']} ended holding {e['objects']} objects: {e}")
    for e in sessions[:-1]:
        check(harness.is_clean(e), f"{what}: an earlier session ended with {e['reason']} ({e['detail']!r})")
    return sessions[-1]


def check_readback(r, what):
    m = re.search(r"readback: (\d+) of (\d+) bytes copied, (\d+) foreign", r.stdout)
    check(m is not None, f"{what}: the probe did not read its destination back:\n{r.describe()}")
    check(
        m.group(3) == "0",
        f"{what}: the guest read {m.group(3)} bytes it never wrote (another session's or "
        f"bypassd's memory):\n{r.describe()}",
    )
    return int(m.group(1)), int(m.group(2))


def check_refused(server, probe_path, workdir, args, pattern):
    what = " ".join(args)
    r = probe(probe_path, server, workdir, args)
    server.check_alive(f"after {what}")
    check(r.returncode == 1, f"{what}: the probe should see a failed call:\n{r.describe()}")
    check(
        "VK_ERROR_DEVICE_LOST (-4)" in r.stdout, f"{what}: no VK_ERROR_DEVICE_LOST after the refusal:\n{r.describe()}"
    )
    # The guest is told why.
    m = re.search(r"bypass: lost the host: bypassd ended the session: (.*)", r.stderr)
    check(m is not None, f"{what}: the guest was not told why its session ended:\n{r.describe()}")
    check(re.search(pattern, m.group(1)), f"{what}: the guest's reason {m.group(1)!r} does not match {pattern!r}")
    # bypassd's side: the same reason, one warning line, everything released.
    e = ended(server, r.pid, f"{what}: the session to end")
    check(
        harness.reason_of(e) == harness.EndReason.INVALID_USAGE,
        f"{what}: bypassd's reason {e['reason']} ({e['detail']!r}) should be invalid_usage",
    )
    check(re.search(pattern, e["detail"]), f"{what}: bypassd's detail {e['detail']!r} does not match {pattern!r}")
    lines = [
        line
        for line in server.log_text().splitlines()
        if re.search(rf"\bsession {e['id']}:", line) and ("[warning]" in line or "[error]" in line)
    ]
    check(
        len(lines) == 1 and f"end (invalid_usage: {e['detail']})" in lines[0],
        f"{what}: expected one warning line with the reason for session {e['id']}, got:\n" + "\n".join(lines),
    )
    if args[0] == "copy-buffer":
        copied, size = check_readback(r, what)
        check(copied == 0, f"{what}: {copied} bytes were copied though the copy was refused:\n{r.describe()}")
    log(f"{what}: refused: {e['reason']}: {e['detail']}")


def start_bystander(server, workdir):
    native = os.path.join(workdir, "texture.native.out")
    native_run = harness.Running(
        [harness.sample_path("texture")] + BYSTANDER_ARGS + ["--out", native],
        harness.native_env(workdir),
        workdir,
        "texture.native",
    )
    out = os.path.join(workdir, "texture.icd.out")
    guest = harness.Running(
        [harness.sample_path("texture")] + BYSTANDER_ARGS + ["--out", out], server.guest_env(), workdir, "texture.icd"
    )
    server.wait_stats(
        lambda s: any(x["objects"] > 0 for x in harness.live_for_pid(s, guest.pid)),
        "the bystander to hold a session with objects",
        timeout=30,
    )
    return native_run, native, guest, out


def finish_bystander(server, native_run, native, guest, out):
    harness.check_ok(native_run.wait(timeout=150), "native texture")
    g = guest.wait(timeout=150)
    harness.check_ok(g, "texture (the bystander beside the hostile guests)")
    harness.check_through_bypass(g, "texture")
    harness.check_same_file(native, out, "the bystander's output through bypass vs native")
    e = ended(server, g.pid, "the bystander's session to end")
    check(harness.is_clean(e), f"the bystander's session ended with {e['reason']} ({e['detail']!r})")
    log(f"bystander: texture identical to native ({g.seconds:.2f} s)")


def case_all(workdir, probe_path):
    check(probe_path and os.path.exists(probe_path), f"no validation probe at {probe_path!r}")
    server = Bypassd(workdir).start()
    bystander = start_bystander(server, workdir)
    start = time.monotonic()

    # Valid calls first: the checks must refuse none of them.
    r = probe(probe_path, server, workdir, ["valid"])
    harness.check_ok(r, "the valid run of the probed calls")
    copied, size = check_readback(r, "valid copy")
    check(copied == size == 4096, f"the valid copy of 4096 bytes read back {copied} of {size}:\n{r.describe()}")
    e = ended(server, r.pid, "the valid probe's session to end")
    check(harness.is_clean(e), f"the valid probe's session ended with {e['reason']} ({e['detail']!r})")

    overlapped = 0
    for args, pattern in REFUSED:
        check_refused(server, probe_path, workdir, args, pattern)
        overlapped += bystander[2].proc.poll() is None

    # A refused allocation is answered with a VkResult; the session goes on.
    r = probe(probe_path, server, workdir, ["alloc-zero"])
    check(
        "vkAllocateMemory: VK_ERROR_OUT_OF_DEVICE_MEMORY (-2)" in r.stdout,
        f"vkAllocateMemory of 0 bytes should fail with VK_ERROR_OUT_OF_DEVICE_MEMORY:\n{r.describe()}",
    )
    check("vkDeviceWaitIdle: VK_SUCCESS (0)" in r.stdout, f"the device should go on working:\n{r.describe()}")
    e = ended(server, r.pid, "alloc-zero: the session to end")
    check(harness.is_clean(e), f"alloc-zero: the session ended with {e['reason']} ({e['detail']!r})")
    log(
        f"alloc-zero: VK_ERROR_OUT_OF_DEVICE_MEMORY, the device went on; {len(REFUSED)} hostile guests refused in "
        f"{time.monotonic() - start:.1f} s, the bystander rendering during {overlapped} of them"
    )

    # A format query about a format this registry does not know (a newer Vulkan's): answered as
    # a driver answers one it does not know, without the driver; the session goes on.
    r = probe(probe_path, server, workdir, ["format-unknown"])
    check(
        "vkGetPhysicalDeviceImageFormatProperties: VK_ERROR_FORMAT_NOT_SUPPORTED (-11)" in r.stdout
        and "vkGetPhysicalDeviceFormatProperties: features 0 0 0" in r.stdout,
        f"an unknown format should be unsupported:\n{r.describe()}",
    )
    check("vkDeviceWaitIdle: VK_SUCCESS (0)" in r.stdout, f"the device should go on working:\n{r.describe()}")
    e = ended(server, r.pid, "format-unknown: the session to end")
    check(harness.is_clean(e), f"format-unknown: the session ended with {e['reason']} ({e['detail']!r})")
    log("format-unknown: VK_ERROR_FORMAT_NOT_SUPPORTED and no features, the device went on")

    # So is a query read into too small a buffer (bypassd's own, which the driver would overrun).
    r = probe(probe_path, server, workdir, ["query-results"])
    check(
        "vkGetQueryPoolResults: VK_ERROR_VALIDATION_FAILED_EXT (-1000011001)" in r.stdout,
        f"vkGetQueryPoolResults into 8 bytes should fail with VK_ERROR_VALIDATION_FAILED_EXT:\n{r.describe()}",
    )
    check("vkDeviceWaitIdle: VK_SUCCESS (0)" in r.stdout, f"the device should go on working:\n{r.describe()}")
    e = ended(server, r.pid, "query-results: the session to end")
    check(harness.is_clean(e), f"query-results: the session ended with {e['reason']} ({e['detail']!r})")
    check(
        "vkGetQueryPoolResults: 4 results of stride 8 (32 bytes) do not fit dataSize 8" in server.log_text(),
        "bypassd did not log why it refused vkGetQueryPoolResults",
    )
    log("query-results: VK_ERROR_VALIDATION_FAILED_EXT, the device went on")

    finish_bystander(server, *bystander)
    server.check_alive("at the end")
    status = server.stop()
    check(status == 0, f"bypassd exited {status} on SIGTERM")


if __name__ == "__main__":
    raise SystemExit(harness.main({"all": case_all}))
