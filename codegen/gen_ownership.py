"""Who implements what: the commands written by hand on each side and the owner of each
extension, from codegen/data/handwritten.txt and codegen/data/extensions.txt.

Outputs:
  wire/ownership.cpp                 kHandwritten and kExtensions (bypass/wire/ownership.h)
  include/bypass/host/gen/handwritten.h
                                     the host's hand-written handlers, declared: handle_vkX
  host/handwritten.cpp               register_handwritten_handlers(): every handle_vkX into the
                                     Handlers table, so a missing or mis-typed one fails the link
"""

from __future__ import annotations

from common import banner, include, write_files
from gen_commands import CommandGenerator
from wire import Protocol

LEVELS = {"global": 0, "instance": 1, "physical_device": 2, "device": 3}
OWNERS = {
    "host": "ExtensionOwner::kHost",
    "guest": "ExtensionOwner::kGuest",
    "loader": "ExtensionOwner::kLoader",
    "bypassd": "ExtensionOwner::kBypassd",
}


class OwnershipGenerator:
    def __init__(self, proto: Protocol, cg: CommandGenerator):
        self.p, self.cg, self.reg = proto, cg, proto.reg
        self.hand = [s for s in proto.shapes.values() if s.hand]
        wire = {s.name for s in cg.shapes}
        for s in self.hand:
            if s.host_handwritten and s.name not in wire:
                raise SystemExit(
                    f"codegen: handwritten.txt: {s.name} is hand-written on the host, "
                    "but has no wire message to handle"
                )
        listed = set(proto.handwritten)
        unknown = sorted(listed - {s.name for s in self.hand})
        if unknown:
            raise SystemExit(f"codegen: handwritten.txt names commands the protocol does not cover: {unknown}")

    def tables(self) -> str:
        wire = {s.name for s in self.cg.shapes}
        L = [banner("gen_ownership.py", self.reg), '#include "bypass/wire/ownership.h"', "", include("commands.h"), ""]
        L.append("namespace bypass::wire {")
        L.append("")
        L.append("// codegen/data/handwritten.txt")
        L.append("const HandwrittenCommand kHandwritten[] = {")
        for s in self.hand:
            cid = f"kCmd_{s.name}" if s.name in wire else "kNoCommandId"
            guest = "true" if s.guest_handwritten else "false"
            host = "true" if s.host_handwritten else "false"
            L.append(f'    {{"{s.name}", {cid}, {LEVELS.get(s.level, 3)}, {guest}, {host}}},')
        L.append("};")
        L.append(f"const size_t kHandwrittenCount = {len(self.hand)};")
        L.append("")
        L.append("// codegen/data/extensions.txt; spec versions from vk.xml.")
        L.append("const ExtensionInfo kExtensions[] = {")
        for name, (owner, flags) in self.p.extension_owners.items():
            x = self.reg.extensions[name]
            instance = "true" if x.type == "instance" else "false"
            fds = "true" if "fd" in flags else "false"
            L.append(f'    {{"{name}", {instance}, {OWNERS[owner]}, {x.spec_version}, {fds}}},')
        L.append("};")
        L.append(f"const size_t kExtensionCount = {len(self.p.extension_owners)};")
        L.append("")
        L.append("}  // namespace bypass::wire")
        return "\n".join(L) + "\n"

    def host_header(self) -> str:
        L = [banner("gen_ownership.py", self.reg), "#pragma once", "", '#include "bypass/wire/host_context.h"', ""]
        L.append("namespace bypass::host {")
        L.append("")
        L.append("// Handlers written by hand in host-server/ (codegen/data/handwritten.txt, side host or")
        L.append("// both). Each replaces default_vkX in the session's Handlers table.")
        for s in self.hand:
            if s.host_handwritten:
                L.append(f"void handle_{s.name}(wire::HostContext& c, wire::Args_{s.name}& a);")
        L.append("")
        L.append("// Sets every handler above in `h`.")
        L.append("void register_handwritten_handlers(wire::Handlers& h);")
        L.append("")
        L.append("}  // namespace bypass::host")
        return "\n".join(L) + "\n"

    def host_source(self) -> str:
        L = [banner("gen_ownership.py", self.reg), include("handwritten.h", "host"), ""]
        L.append("namespace bypass::host {")
        L.append("")
        L.append("void register_handwritten_handlers(wire::Handlers& h) {")
        for s in self.hand:
            if s.host_handwritten:
                L.append(f"  h.{s.name} = handle_{s.name};")
        L.append("}")
        L.append("")
        L.append("}  // namespace bypass::host")
        return "\n".join(L) + "\n"

    def write(self, wire: tuple[str, str], host: tuple[str, str]) -> list[str]:
        write_files(*wire, {"ownership.cpp": self.tables()})
        write_files(*host, {"handwritten.h": self.host_header(), "handwritten.cpp": self.host_source()})
        return ["ownership.cpp", "handwritten.h", "handwritten.cpp"]
