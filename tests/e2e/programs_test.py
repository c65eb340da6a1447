#!/usr/bin/env python3
"""Real programs through the bypass ICD against the same programs on lavapipe directly.

  ffmpeg NAME   ffmpeg's Vulkan filter chain NAME (programs.py): the per-frame MD5s are the
                same natively and through bypass, the program ran on the bypass device, and its
                session ended cleanly. Skipped (exit 77) where ffmpeg is not installed.
"""

import sys

import harness
import programs
from harness import Bypassd, check, log


def case_ffmpeg(workdir, name):
    check(name in programs.FFMPEG_CHAINS, f"unknown program {name}; known: {', '.join(programs.NAMES)}")
    # verbose: ffmpeg names the Vulkan device it picked, so a run that fell back to lavapipe
    # cannot pass as a bypass run; the frame digests go to stdout either way.
    native = harness.run(programs.argv(name, "verbose"), harness.native_env(workdir), workdir, f"{name}.native", 120)
    harness.check_ok(native, f"native {name}")
    check("llvmpipe" in native.stderr, f"native {name} did not run on lavapipe:\n{native.describe()}")
    frames = [line for line in native.stdout.splitlines() if line and not line.startswith("#")]
    check(len(frames) == 25, f"native {name} wrote {len(frames)} frames, expected 25:\n{native.describe()}")

    server = Bypassd(workdir).start()
    # ffmpeg is not built by us: a sanitized ICD needs its runtime preloaded into it.
    env = harness.unsanitized_guest_env(server.guest_env())
    r = harness.run(programs.argv(name, "verbose"), env, workdir, f"{name}.icd", 120)
    harness.check_ok(r, f"{name} through the ICD")
    check("bypass (llvmpipe" in r.stderr, f"{name} did not run on the bypass device:\n{r.describe()}")
    if r.stdout != native.stdout:
        raise harness.TestFailure(
            f"{name}: frame digests differ from native\n"
            + harness.text_diff(native.stdout, r.stdout, "native", "bypass")
        )
    log(f"{name}: 25 frames identical natively ({native.seconds:.2f} s) and through bypass ({r.seconds:.2f} s)")
    stats = server.wait_gone(r.pid, f"the sessions of {name} (pid {r.pid}) to end")
    harness.check_ended_clean(stats, r.pid)
    check(stats["sessions"] == [] and stats["live_objects"] == 0, f"sessions still live after {name} left: {stats}")
    status = server.stop()
    check(status == 0, f"bypassd exited {status} on SIGTERM (expected a clean 0)")


if __name__ == "__main__":
    if programs.ffmpeg() is None:
        print("SKIPPED: ffmpeg is not installed (scripts/setup.sh installs it)")
        sys.exit(77)
    sys.exit(harness.main({"ffmpeg": case_ffmpeg}))
