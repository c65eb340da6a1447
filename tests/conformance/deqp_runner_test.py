#!/usr/bin/env python3
"""bypass-conformance's dEQP runner against a stand-in for deqp-vk (fake_deqp.py): a crash or a
hang ends only its case and the rest of its batch runs in a new process, cases that differ run
again once, the verdict and the JSON name the regressions, and --fraction picks every Nth case.

  deqp_runner_test.py REPO BUILD_DIR
"""

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile


def run(repo, build, work, *extra):
    state = os.path.join(work, "state")
    shutil.rmtree(state, ignore_errors=True)
    os.makedirs(state)
    out = os.path.join(work, "out")
    env = dict(os.environ, FAKE_DEQP_STATE=state)
    p = subprocess.run(
        [
            sys.executable,
            os.path.join(repo, "scripts", "bypass-conformance"),
            "--build-dir",
            build,
            "--out",
            out,
            "deqp",
            "--deqp",
            os.path.join(work, "deqp", "fake_deqp.py"),
            "--timeout",
            "3",
            *extra,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    return p, results, state


def lines(path):
    with open(path) as f:
        return [line.strip() for line in f]


def check(cond, what, p=None):
    if not cond:
        if p is not None:
            sys.stderr.write(p.stdout + p.stderr)
        sys.exit(f"FAIL: {what}")
    print(f"ok: {what}")


def main():
    repo, build = sys.argv[1], sys.argv[2]
    work = tempfile.mkdtemp(prefix="deqp-runner-test-")
    try:
        os.makedirs(os.path.join(work, "deqp"))
        fake = os.path.join(work, "deqp", "fake_deqp.py")
        shutil.copy(os.path.join(repo, "tests", "conformance", "fake_deqp.py"), fake)
        os.chmod(fake, os.stat(fake).st_mode | stat.S_IXUSR)

        p, r, state = run(repo, build, work, "--batch", "4", "--jobs", "2")
        native, bypass = r["results"]["native"], r["results"]["bypass"]
        check(p.returncode == 1, "a regression makes the exit status 1", p)
        check(len(native) == 14 and len(bypass) == 14, "every case has a result on both sides", p)
        check(bypass["dEQP-VK.api.crash_bypass_0"] == "Crash", "the crashing case is a crash through bypass", p)
        check(native["dEQP-VK.api.crash_bypass_0"] == "Pass", "and passes natively", p)
        check(
            bypass["dEQP-VK.api.pass_2"] == "Pass" and bypass["dEQP-VK.api.pass_3"] == "Pass",
            "the cases after the crash in its batch ran in a new process",
            p,
        )
        check(
            native["dEQP-VK.memory.hang_0"] == "Timeout" and bypass["dEQP-VK.memory.hang_0"] == "Timeout",
            "a hanging case is a timeout on both sides",
            p,
        )
        check(
            bypass["dEQP-VK.memory.pass_1"] == "Pass" and native["dEQP-VK.memory.flaky_bypass_0"] == "Pass",
            "the cases after the hang ran",
            p,
        )
        check(
            bypass["dEQP-VK.memory.flaky_bypass_0"] == "Pass"
            and r["first_run"]["bypass"]["dEQP-VK.memory.flaky_bypass_0"] == "Fail",
            "a case that failed once passed when run again; its first result is kept as first_run",
            p,
        )
        check(
            sorted(r["regressions"]) == ["dEQP-VK.api.crash_bypass_0", "dEQP-VK.compute.fail_bypass_0"],
            "the regressions are the crash and the failure through bypass",
            p,
        )
        check(r["counts"]["native"]["not supported"] == 1, "NotSupported counts as not supported", p)
        for group in ("dEQP-VK.api", "dEQP-VK.memory", "dEQP-VK.compute"):
            check(any(line.startswith(group + " ") for line in p.stdout.splitlines()), f"{group} has a row", p)
        ran = lines(os.path.join(state, "ran-bypass"))
        check(ran.count("dEQP-VK.api.crash_bypass_0") == 2, "the crash ran twice (once more as a difference)", p)
        check(ran.count("dEQP-VK.api.pass_0") == 1, "a case that passed ran once", p)

        p, r, state = run(repo, build, work, "--fraction", "3", "--fraction-offset", "1", "--pattern", "dEQP-VK.api.*")
        check(
            sorted(r["results"]["native"]) == ["dEQP-VK.api.pass_1", "dEQP-VK.api.pass_2"],
            "--fraction 3 --fraction-offset 1 runs every third matching case from the second",
            p,
        )
        check(p.returncode == 0, "no regression: exit status 0", p)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("PASS")


if __name__ == "__main__":
    main()
