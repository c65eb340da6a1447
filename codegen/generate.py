#!/usr/bin/env python3
"""Generates bypass's wire protocol and both ends of it from the Khronos registry.

  generate.py --registry vk.xml --out build/generated [--stamp FILE]

Writes the FlatBuffers schema, the struct and command codecs, the guest entry points, the
ICD manifest template and coverage.json, and prints a one-line coverage summary.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gen_commands import CommandGenerator  # noqa: E402
from gen_entrypoints import EntryPointGenerator  # noqa: E402
from gen_report import write as write_coverage  # noqa: E402
from gen_schema import SchemaGenerator  # noqa: E402
from gen_structs import StructGenerator  # noqa: E402
from model import Registry  # noqa: E402
from wire import Protocol  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--registry", default="/usr/share/vulkan/registry/vk.xml")
    ap.add_argument("--out", required=True)
    ap.add_argument("--stamp")
    args = ap.parse_args()
    reg = Registry(args.registry)
    proto = Protocol(reg)
    wire_dir = os.path.join(args.out, "wire")
    sg = StructGenerator(proto)
    cg = CommandGenerator(proto, sg)
    sg.write(wire_dir)
    cg.write(wire_dir)
    SchemaGenerator(proto, sg, cg).write(os.path.join(args.out, "schema"))
    EntryPointGenerator(proto, cg).write(os.path.join(args.out, "icd"))
    print(write_coverage(proto, os.path.join(args.out, "coverage.json")))
    if args.stamp:
        with open(args.stamp, "w") as f:
            f.write("ok\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
