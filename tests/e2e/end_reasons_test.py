#!/usr/bin/env python3
"""The tests' list of session end reasons (harness.EndReason) is bypassd's.

  end_reasons_test.py list

bypassd prints its reasons with a hidden flag (`--list-end-reasons`, "<value> <name>" a line,
from host-server/include/bypass/host/end_reason.h); the harness's Python enum must hold the
same values under the same names, and docs/host-server.md's table must name every one.
"""

import os
import re
import subprocess

import harness
from harness import check, log

DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "host-server.md")


def case_list(workdir, _):
    out = subprocess.run(
        [harness.env_path("BYPASSD"), "--list-end-reasons"], capture_output=True, text=True, timeout=30
    )
    check(out.returncode == 0, f"bypassd --list-end-reasons exited {out.returncode}:\n{out.stderr}")
    theirs = []
    for line in out.stdout.splitlines():
        m = re.fullmatch(r"(\d+) ([a-z_]+)", line)
        check(m is not None, f"bypassd --list-end-reasons printed {line!r}, not '<value> <name>'")
        theirs.append((int(m.group(1)), m.group(2)))
    ours = [(int(r), str(r)) for r in harness.EndReason]
    check(theirs, "bypassd listed no end reasons")
    check(theirs == ours, "harness.EndReason differs from bypassd's list:\n" f"  bypassd: {theirs}\n  harness: {ours}")
    with open(DOC) as f:
        doc = f.read()
    undocumented = [name for _, name in theirs if f"| `{name}` |" not in doc]
    check(not undocumented, f"docs/host-server.md's end reasons table lacks {undocumented}")
    log(f"{len(theirs)} end reasons agree: {', '.join(name for _, name in theirs)}")


if __name__ == "__main__":
    raise SystemExit(harness.main({"list": case_list}))
