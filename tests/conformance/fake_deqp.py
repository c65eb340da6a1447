#!/usr/bin/env python3
"""A stand-in for deqp-vk's command line and output, to test bypass-conformance's dEQP runner:
its batches, crash and hang recovery, reruns and verdict. It runs no Vulkan; the conformance
runs themselves use a real VK-GL-CTS build (BYPASS_DEQP).

The case names say what happens:
  ...pass_N           passes on both sides
  ...unsupported_N    NotSupported on both sides
  ...crash_bypass_N   the process aborts when run through bypass, passes natively
  ...hang_N           never finishes, on both sides
  ...flaky_bypass_N   fails the first time it runs through bypass, then passes
  ...fail_bypass_N    always fails through bypass
The side is told by VK_DRIVER_FILES (the bypass ICD's manifest). FAKE_DEQP_STATE is a directory
where it records runs (which cases ran, how many processes started).
"""

import os
import sys
import time

GROUPS = {
    "dEQP-VK.api": ["pass_0", "pass_1", "unsupported_0", "crash_bypass_0", "pass_2", "pass_3"],
    "dEQP-VK.memory": ["pass_0", "hang_0", "pass_1", "flaky_bypass_0"],
    "dEQP-VK.compute": ["pass_0", "fail_bypass_0", "pass_1", "pass_2"],
}


def main():
    args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
    state = os.environ["FAKE_DEQP_STATE"]
    bypass = "bypass" in os.environ.get("VK_DRIVER_FILES", "")
    side = "bypass" if bypass else "native"
    with open(os.path.join(state, f"processes-{side}"), "a") as f:
        f.write(f"{os.getpid()}\n")
    if args.get("--deqp-runmode") == "txt-caselist":
        with open("dEQP-VK-cases.txt", "w") as f:
            for group, cases in GROUPS.items():
                f.write(f"GROUP: {group}\n")
                for c in cases:
                    f.write(f"TEST: {group}.{c}\n")
        return 0
    # deqp-vk runs in its own directory (its data files are found relative to it).
    if not os.path.exists(os.path.join(os.getcwd(), os.path.basename(__file__))):
        print("not run from its own directory", flush=True)
        return 1
    with open(args["--deqp-caselist-file"]) as f:
        cases = [line.strip() for line in f if line.strip()]
    for case in cases:
        print(f"Test case '{case}'..", flush=True)
        with open(os.path.join(state, f"ran-{side}"), "a") as f:
            f.write(case + "\n")
        leaf = case.rsplit(".", 1)[1]
        if leaf.startswith("crash_bypass") and bypass:
            os.abort()
        if leaf.startswith("hang"):
            time.sleep(3600)
        if leaf.startswith("unsupported"):
            print("  NotSupported (Feature not supported)", flush=True)
        elif leaf.startswith("fail_bypass") and bypass:
            print("  Fail (Image comparison failed)", flush=True)
        elif leaf.startswith("flaky_bypass") and bypass and not os.path.exists(os.path.join(state, "flaked")):
            open(os.path.join(state, "flaked"), "w").close()
            print("  Fail (Timing dependent)", flush=True)
        else:
            print("  Pass (Pass)", flush=True)
    print("DONE!", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
