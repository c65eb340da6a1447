#!/usr/bin/env python3
"""Generates bypass's wire protocol and both ends of it from the Khronos registry.

  generate.py --registry vk.xml --out build/generated [--stamp FILE]

Writes the FlatBuffers schema, the struct and command codecs, the enum values and format facts, the guest entry points, the
ICD manifest template and coverage.json, and prints a one-line coverage summary.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from gen_commands import CommandGenerator  # noqa: E402
from gen_entrypoints import EntryPointGenerator  # noqa: E402
from gen_enums import EnumGenerator  # noqa: E402
from gen_formats import FormatGenerator  # noqa: E402
from gen_lifetime import LifetimeGenerator  # noqa: E402
from gen_ownership import OwnershipGenerator  # noqa: E402
from gen_report import write as write_coverage  # noqa: E402
from gen_schema import SchemaGenerator  # noqa: E402
from gen_structs import StructGenerator  # noqa: E402
from common import banner, write_if_changed  # noqa: E402
from model import Registry  # noqa: E402
from wire import Protocol  # noqa: E402


def write_hash_header(path: str, schema, reg) -> None:
    """The schema hash both ends compare in the handshake: FNV-1a over the schema text and the
    command id table, so any change to what crosses the wire changes the hash."""
    h = 0xCBF29CE484222325
    text = schema.structs_schema() + schema.commands_schema()
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "command_ids.txt")) as f:
        text += f.read()
    for byte in text.encode():
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    write_if_changed(
        path,
        banner("generate.py", reg)
        + "#pragma once\n#include <cstdint>\n"
        + f"namespace bypass::wire {{\ninline constexpr uint64_t kSchemaHash = 0x{h:016x}ull;\n"
        + f"inline constexpr uint32_t kRegistryVersion = {reg.header_version};\n}}\n",
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--registry", default="/usr/share/vulkan/registry/vk.xml")
    ap.add_argument("--out", required=True)
    ap.add_argument("--stamp")
    args = ap.parse_args()
    reg = Registry(args.registry)
    proto = Protocol(reg)
    # Sources under <out>/<part>/, headers under <out>/include/bypass/<part>/gen/.
    wire = (os.path.join(args.out, "wire"), os.path.join(args.out, "include", "bypass", "wire", "gen"))
    icd = (os.path.join(args.out, "icd"), os.path.join(args.out, "include", "bypass", "icd", "gen"))
    host = (os.path.join(args.out, "host"), os.path.join(args.out, "include", "bypass", "host", "gen"))
    sg = StructGenerator(proto)
    cg = CommandGenerator(proto, sg)
    sg.write(*wire)
    cg.write(*wire)
    EnumGenerator(proto, sg.structs, cg.shapes).write(*wire)
    FormatGenerator(proto).write(*wire)
    LifetimeGenerator(proto, cg).write(*wire)
    OwnershipGenerator(proto, cg).write(wire, host)
    schema = SchemaGenerator(proto, sg, cg)
    schema.write(os.path.join(args.out, "schema"))
    write_hash_header(os.path.join(wire[1], "schema_hash.h"), schema, reg)
    EntryPointGenerator(proto, cg).write(*icd)
    print(write_coverage(proto, os.path.join(args.out, "coverage.json")))
    if args.stamp:
        with open(args.stamp, "w") as f:
            f.write("ok\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
