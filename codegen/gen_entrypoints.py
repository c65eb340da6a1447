"""The guest ICD's entry points: one function per generated command, and the name table the
loader's vkGetInstanceProcAddr / vkGetDeviceProcAddr / GetPhysicalDeviceProcAddr look up.

Generated entry points (entry_vkX) encode into the calling thread's builder and hand the record
to the connection of their first (dispatchable) parameter. Commands hand-written on the guest
side (handwritten.txt) are declared here as icd_vkX and defined in guest-icd/: the name table
refers to each, so a missing or mis-typed definition fails the ICD's link.
"""

from __future__ import annotations

from common import banner, include, write_files
from gen_commands import CommandGenerator
from wire import CommandShape, OutKind, Protocol, read_list, read_table

LEVELS = {"global": 0, "instance": 1, "physical_device": 2, "device": 3}


class EntryPointGenerator:
    def __init__(self, proto: Protocol, cg: CommandGenerator):
        self.p, self.cg, self.reg = proto, cg, proto.reg
        self.flush = set(read_list("flush.txt"))
        self.barriers = {k: v.strip() for k, v in read_table("barriers.txt").items()}

    def forwardable(self, s: CommandShape) -> bool:
        """Hand-written commands that still cross the wire the generated way get a
        `forward_vkX`: the generated call without output-handle allocation, which the
        hand-written code wraps (it chooses the handles and post-processes the results)."""
        return s.guest_handwritten and s in self.cg.shapes and s.level != "global"

    def entry(self, s: CommandShape, forward: bool = False, unasked: bool = False) -> str:
        """The generated call: entry_vkX, or for a hand-written command forward_vkX (asks for
        the reply) and, for async_unasked.txt, send_vkX (does not). A command of that list that
        is not hand-written never asks."""
        decl = self.cg.params_decl(s)
        names = self.cg.param_names(s)
        first = s.cmd.params[0].name
        ret = s.cmd.ret
        lost = {"VkResult": "VK_ERROR_DEVICE_LOST", "void": ""}.get(ret, f"{ret}{{}}")
        unasked = unasked or (s.unasked and not forward)
        if forward:
            L = [f"{ret} {'send' if unasked else 'forward'}_{s.name}({decl}) {{"]
        else:
            L = [f"static VKAPI_ATTR {ret} VKAPI_CALL entry_{s.name}({decl}) {{"]
        L.append(f"  Connection* conn = connection_of({first});")
        if s.fixed:
            if s.trailing:
                L.append("  wire::Packed& r = wire::thread_packed();")
                L.append(f"  wire::encode_{s.name}(r, conn->handles(), {names});")
                L.append(f"  conn->send_fixed(wire::kCmd_{s.name}, r.data(), r.size());")
            else:
                L.append(f"  wire::{s.name}_s w;")
                L.append(f"  wire::encode_{s.name}(w, conn->handles(), {names});")
                L.append(f"  conn->send_fixed(wire::kCmd_{s.name}, &w, sizeof(w));")
            if ret == "VkResult":
                L.append("  return conn->alive() ? VK_SUCCESS : VK_ERROR_DEVICE_LOST;")
            L.append("}")
            return "\n".join(L)
        for o in s.outs:
            if forward:
                break
            if o.kind is OutKind.HANDLE:
                L.append(f"  *{o.name} = wire::handle_from_bits<{self.reg.resolve(o.type)}>(conn->new_id());")
            elif o.kind is OutKind.HANDLE_ARRAY:
                L.append(f"  for (size_t i = 0; i < static_cast<size_t>({o.len_expr}); ++i)")
                L.append(f"    {o.name}[i] = wire::handle_from_bits<{self.reg.resolve(o.type)}>(conn->new_id());")
        barrier = self.barriers.get(s.name, "")
        if barrier == "write":
            L.append(
                f"  if (MemoryHooks* hooks = conn->memory_hooks()) hooks->write_barrier(object_of({first}), true);"
            )
        L.append("  wire::Builder& b = thread_builder();")
        L.append(f"  wire::encode_{s.name}(b, conn->handles(), {names});")
        if not s.sync or unasked:
            flush = "true" if s.name in self.flush else "false"
            L.append(f"  conn->send(wire::kCmd_{s.name}, b, {flush});")
            if ret == "VkResult":
                L.append("  return conn->alive() ? VK_SUCCESS : VK_ERROR_DEVICE_LOST;")
            L.append("}")
            return "\n".join(L)
        L.append("  Reply& r = thread_reply();")
        if barrier == "read" and ret != "void":
            # The read barrier rides behind the wait in its batch: one round trip for both.
            L.append("  MemoryHooks* hooks = conn->memory_hooks();")
            L.append("  std::vector<Follower>& ahead = thread_followers();")
            L.append("  ahead.clear();")
            L.append(f"  if (hooks) hooks->read_ahead(object_of({first}), ahead);")
            L.append(f"  if (!conn->call(wire::kCmd_{s.name}, b, r, ahead)) return {lost};")
        else:
            L.append(f"  if (!conn->call(wire::kCmd_{s.name}, b, r)) return {lost};")
        L.append("  wire::DecodeContext c = r.context(conn->handles());")
        if ret == "void":
            L.append(f"  wire::decode_reply_{s.name}(c, r.data(), r.size(), {names});")
            L.append(f"  if (!c.error.empty()) conn->protocol_error(c.error);")
        else:
            L.append(f"  auto result = wire::decode_reply_{s.name}(c, r.data(), r.size(), {names});")
            L.append(f"  if (!c.error.empty()) {{ conn->protocol_error(c.error); return {lost}; }}")
            if barrier == "read":
                L.append(f"  if (hooks) hooks->finish_read_ahead(object_of({first}), ahead, result == VK_SUCCESS);")
            L.append("  return result;")
        L.append("}")
        return "\n".join(L)

    def platform(self, s: CommandShape) -> str:
        """The window system whose types the command's parameters use (vk.xml's platform of its
        extension), or ""."""
        x = self.reg.extensions.get(s.origin)
        return x.platform if x else ""

    def platform_headers(self, shapes: list[CommandShape]) -> list[str]:
        """The headers that define the window-system types of `shapes`: each type's `requires`
        in vk.xml, then the Vulkan header of each platform."""
        types: set[str] = set()

        def visit(t: str) -> None:
            t = self.reg.resolve(t)
            if t in types:
                return
            types.add(t)
            if t in self.reg.structs:
                for m in self.reg.structs[t].members:
                    visit(m.type)

        for s in shapes:
            for p in s.cmd.params:
                visit(p.type)
        system = sorted({self.reg.type_headers[t] for t in types if t in self.reg.type_headers})
        vulkan = sorted({f"vulkan/vulkan_{self.platform(s)}.h" for s in shapes})
        return system + vulkan

    def declaration(self, s: CommandShape) -> str:
        return f"VKAPI_ATTR {s.cmd.ret} VKAPI_CALL icd_{s.name}({self.cg.params_decl(s)});"

    def exposed(self) -> list[CommandShape]:
        """Every command the ICD exposes: generated or hand-written on the guest side."""
        return [s for s in self.p.shapes.values() if not s.status.startswith("unsupported")]

    def source(self) -> str:
        platform = [s for s in self.p.shapes.values() if s.guest_handwritten and self.platform(s)]
        L = [
            banner("gen_entrypoints.py", self.reg),
            include("entrypoints.h", "icd"),
            "",
            '#include "bypass/icd/connection.h"',
            "",
        ]
        L.append("// Last: the window-system headers define macros (None, Status, Bool) that would break")
        L.append("// what follows them.")
        L += [f"#include <{h}>" for h in self.platform_headers(platform)]
        L += ["", "namespace bypass::icd {", ""]
        L.append("// Hand-written commands whose parameters use window-system types (defined in wsi_*.cpp).")
        for s in platform:
            L.append(self.declaration(s))
        L.append("")
        for s in self.cg.shapes:
            if not s.guest_handwritten:
                L.append(self.entry(s))
                L.append("")
            elif self.forwardable(s):
                L.append(self.entry(s, forward=True))
                L.append("")
                if s.unasked:
                    L.append(self.entry(s, forward=True, unasked=True))
                    L.append("")
        L.append("// Sorted by name for binary search; aliases point at their command's function.")
        L.append("const EntryPoint kEntryPoints[] = {")
        rows = []
        for s in self.exposed():
            fn = f"icd_{s.name}" if s.guest_handwritten else f"entry_{s.name}"
            ptr = f"reinterpret_cast<PFN_vkVoidFunction>(&{fn})"
            for n in [s.name] + s.aliases:
                rows.append((n, ptr, LEVELS.get(s.level, 3), self.name_origin(n, s.origin)))
        rows.sort()
        for n, ptr, lvl, origin in rows:
            L.append(f'  {{"{n}", {ptr}, {lvl}, "{origin}"}},')
        L.append("};")
        L.append(f"const size_t kEntryPointCount = {len(rows)};")
        L.append("")
        L.append("}  // namespace bypass::icd")
        return "\n".join(L) + "\n"

    def name_origin(self, name: str, fallback: str) -> str:
        """Where the command *name* comes from, for vkGetDeviceProcAddr: the core version that
        has this very name, else every extension that has it, comma-separated. An alias is its
        extension's (vkTrimCommandPoolKHR is VK_KHR_maintenance1's, not Vulkan 1.1's), so that
        a device without the extension does not get it."""
        for v, names in self.reg.features.items():
            if name in names:
                return v
        exts = sorted(x.name for x in self.reg.extensions.values() if name in x.commands and "vulkan" in x.supported)
        return ",".join(exts) or fallback

    def header(self) -> str:
        L = [
            banner("gen_entrypoints.py", self.reg),
            "#pragma once",
            "",
            include("commands.h"),
            "",
            "namespace bypass::icd {",
            "",
            "struct EntryPoint {",
            "  const char* name;",
            "  PFN_vkVoidFunction fn;",
            "  uint8_t level;          // 0 global, 1 instance, 2 physical device, 3 device",
            "  const char* origin;     // VK_VERSION_1_x or the extension that adds it",
            "};",
            "extern const EntryPoint kEntryPoints[];",
            "extern const size_t kEntryPointCount;",
            "",
            "// Commands hand-written in the guest (codegen/data/handwritten.txt, side guest or both),",
            "// defined in guest-icd/. Those whose parameters use window-system types are declared in",
            "// entrypoints.cpp only, which includes the platform headers.",
        ]
        for s in self.p.shapes.values():
            if s.guest_handwritten and not self.platform(s):
                L.append(self.declaration(s))
        L.append("")
        L.append("// The generated call of a hand-written command, for its hand-written wrapper; output")
        L.append("// handles must already hold the ids (or ICD objects) the caller chose.")
        for s in self.cg.shapes:
            if self.forwardable(s):
                L.append(f"{s.cmd.ret} forward_{s.name}({self.cg.params_decl(s)});")
        L.append("// The same without asking for the reply (codegen/data/async_unasked.txt): VK_SUCCESS, or")
        L.append("// VK_ERROR_DEVICE_LOST once the session is gone.")
        for s in self.cg.shapes:
            if self.forwardable(s) and s.unasked:
                L.append(f"{s.cmd.ret} send_{s.name}({self.cg.params_decl(s)});")
        L.append("")
        L.append("}  // namespace bypass::icd")
        return "\n".join(L) + "\n"

    def write(self, src_dir: str, include_dir: str) -> list[str]:
        files = {"entrypoints.h": self.header(), "entrypoints.cpp": self.source()}
        write_files(src_dir, include_dir, files)
        return sorted(files)
