"""coverage.json: every command in vk.xml and what the protocol does with it."""

from __future__ import annotations

import json

from common import write_if_changed
from wire import SIDES, Protocol


def coverage(proto: Protocol) -> dict:
    reg = proto.reg
    out = {}
    for name in sorted(set(reg.commands) | set(reg.command_aliases)):
        canon = reg.canonical_command(name)
        shape = proto.shapes.get(canon)
        if shape is not None and (name == canon or name in proto.aliases):
            out[name] = shape.status
            continue
        owners = [x.name for x in reg.extensions.values() if name in x.commands]
        if owners and all("vulkan" not in x.supported for x in reg.extensions.values() if x.name in owners):
            out[name] = "unsupported: extension not available in the vulkan API"
        elif owners:
            out[name] = f"unsupported: {owners[0]} is not in codegen/data/extensions.txt"
        else:
            out[name] = "unsupported: not part of the vulkan API"
    return out


def write(proto: Protocol, path: str) -> str:
    cov = coverage(proto)
    sides = {side: sorted(n for n, s in proto.shapes.items() if s.hand == side) for side in SIDES}
    doc = {
        "generated_by": "codegen/gen_report.py",
        "registry_version": proto.reg.header_version,
        "commands": cov,
        "handwritten_sides": sides,
    }
    text = json.dumps(doc, indent=1, sort_keys=True)
    write_if_changed(path, text + "\n")
    gen = sum(1 for v in cov.values() if v == "generated")
    hand = sum(1 for v in cov.values() if v == "handwritten")
    uns = len(cov) - gen - hand
    core_uns = [
        n for n, s in proto.shapes.items() if s.status.startswith("unsupported") and s.origin.startswith("VK_VERSION")
    ]
    per_side = ", ".join(f"{len(names)} {side}" for side, names in sides.items())
    return (
        f"codegen: {len(cov)} commands in vk.xml {proto.reg.header_version}: {gen} generated, "
        f"{hand} hand-written ({per_side}; aliases not counted), {uns} unsupported "
        f"({len(core_uns)} of them core)"
    )
