#!/usr/bin/env python3
"""Appends ids for newly covered commands to codegen/data/command_ids.txt.

The table is append-only: existing lines never change (a test checks this against git
history), so a guest and a host built from different revisions agree on every id they share.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from model import Registry  # noqa: E402
from wire import DATA, Protocol  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--registry", default="/usr/share/vulkan/registry/vk.xml")
    args = ap.parse_args()
    proto = Protocol(Registry(args.registry), require_ids=False)
    path = os.path.join(DATA, "command_ids.txt")
    next_id = max(proto.ids.values(), default=0) + 1
    added = []
    for name in proto.covered:
        if name not in proto.ids and not proto.shapes[name].status.startswith("unsupported"):
            added.append(f"{next_id} {name}")
            next_id += 1
    with open(path, "a") as f:
        for line in added:
            f.write(line + "\n")
    print(f"update_ids: {len(added)} ids appended")
    return 0


if __name__ == "__main__":
    sys.exit(main())
