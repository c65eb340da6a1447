"""The guest ICD's entry points: one function per generated command, and the name table the
loader's vkGetInstanceProcAddr / vkGetDeviceProcAddr / GetPhysicalDeviceProcAddr look up.

Generated entry points encode into the calling thread's builder and hand the record to the
connection of their first (dispatchable) parameter; hand-written commands are declared weak
so an ICD that has not implemented one yet simply does not expose it.
"""

from __future__ import annotations

from common import banner, write_if_changed
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
        return (s.status == "handwritten" and s in self.cg.shapes and s.level != "global"
                and not self.platform(s))

    def entry(self, s: CommandShape, forward: bool = False) -> str:
        decl = self.cg.params_decl(s)
        names = self.cg.param_names(s)
        first = s.cmd.params[0].name
        ret = s.cmd.ret
        lost = {"VkResult": "VK_ERROR_DEVICE_LOST", "void": ""}.get(ret, f"{ret}{{}}")
        if forward:
            L = [f"{ret} forward_{s.name}({decl}) {{"]
        else:
            L = [f"static VKAPI_ATTR {ret} VKAPI_CALL entry_{s.name}({decl}) {{"]
        L.append(f"  Connection* conn = connection_of({first});")
        if s.fixed:
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
            L.append(f"  if (MemoryHooks* hooks = conn->memory_hooks()) hooks->write_barrier(object_of({first}));")
        L.append("  wire::Builder& b = thread_builder();")
        L.append(f"  wire::encode_{s.name}(b, conn->handles(), {names});")
        if not s.sync:
            flush = "true" if s.name in self.flush else "false"
            L.append(f"  conn->send(wire::kCmd_{s.name}, b, {flush});")
            if ret == "VkResult":
                L.append("  return conn->alive() ? VK_SUCCESS : VK_ERROR_DEVICE_LOST;")
            L.append("}")
            return "\n".join(L)
        L.append("  Reply& r = thread_reply();")
        L.append(f"  if (!conn->call(wire::kCmd_{s.name}, b, r)) return {lost};")
        L.append("  wire::DecodeContext c = r.context(conn->handles());")
        if ret == "void":
            L.append(f"  wire::decode_reply_{s.name}(c, r.data(), r.size(), {names});")
            L.append(f"  if (!c.error.empty()) conn->protocol_error(c.error);")
        else:
            L.append(f"  auto result = wire::decode_reply_{s.name}(c, r.data(), r.size(), {names});")
            L.append(f"  if (!c.error.empty()) {{ conn->protocol_error(c.error); return {lost}; }}")
            if barrier == "read":
                L.append("  if (result == VK_SUCCESS)")
                L.append(f"    if (MemoryHooks* hooks = conn->memory_hooks()) hooks->read_barrier(object_of({first}));")
            L.append("  return result;")
        L.append("}")
        return "\n".join(L)

    def platform(self, s: CommandShape) -> bool:
        return not s.wire and not s.origin.startswith("VK_VERSION")

    def source(self) -> str:
        L = [banner("gen_entrypoints.py", self.reg), '#include "entrypoints.h"', "",
             '#include "bypass/icd/connection.h"', "", "namespace bypass::icd {", ""]
        L.append('extern "C" {')
        for s in self.p.shapes.values():
            if s.status == "handwritten" and self.platform(s):
                L.append(f"__attribute__((weak)) void bypass_hw_{s.name}(void);")
        L.append('}  // extern "C"')
        L.append("")
        for s in self.cg.shapes:
            if s.status == "generated":
                L.append(self.entry(s))
                L.append("")
            elif self.forwardable(s):
                L.append(self.entry(s, forward=True))
                L.append("")
        L.append("// Sorted by name for binary search; aliases point at their command's function.")
        L.append("const EntryPoint kEntryPoints[] = {")
        rows = []
        for s in self.p.shapes.values():
            if s.status.startswith("unsupported"):
                continue
            fn = f"entry_{s.name}" if s.status == "generated" else f"bypass_hw_{s.name}"
            ptr = f"reinterpret_cast<PFN_vkVoidFunction>({fn})" if s.status == "generated" else f"reinterpret_cast<PFN_vkVoidFunction>(&{fn})"
            for n in [s.name] + s.aliases:
                rows.append((n, ptr, LEVELS.get(s.level, 3), s.origin))
        rows.sort()
        for n, ptr, lvl, origin in rows:
            L.append(f'  {{"{n}", {ptr}, {lvl}, "{origin}"}},')
        L.append("};")
        L.append(f"const size_t kEntryPointCount = {len(rows)};")
        L.append("")
        L.append("// The extension allowlist (codegen/data/extensions.txt).")
        L.append("const ExtensionInfo kExtensions[] = {")
        for x in self.p.extensions:
            L.append(f'  {{"{x}", {"true" if self.reg.extensions[x].type == "instance" else "false"}}},')
        L.append("};")
        L.append(f"const size_t kExtensionCount = {len(self.p.extensions)};")
        L.append("")
        L.append("}  // namespace bypass::icd")
        return "\n".join(L) + "\n"

    def header(self) -> str:
        L = [banner("gen_entrypoints.py", self.reg), "#pragma once", "",
             '#include "commands.h"', "", "namespace bypass::icd {", "",
             "struct EntryPoint {",
             "  const char* name;",
             "  PFN_vkVoidFunction fn;  // null: hand-written and not implemented",
             "  uint8_t level;          // 0 global, 1 instance, 2 physical device, 3 device",
             "  const char* origin;     // VK_VERSION_1_x or the extension that adds it",
             "};",
             "extern const EntryPoint kEntryPoints[];",
             "struct ExtensionInfo {",
             "  const char* name;",
             "  bool instance;",
             "};",
             "extern const ExtensionInfo kExtensions[];",
             "extern const size_t kExtensionCount;",
             "extern const size_t kEntryPointCount;", "",
             "// Hand-written commands (codegen/data/handwritten.txt), defined by the ICD with C",
             "// linkage. Weak: one not implemented yet resolves to null and is not exposed.",
             "// Commands whose parameters use window-system types are declared in entrypoints.cpp",
             "// only (their definitions include the platform headers themselves).",
             'extern "C" {']
        for s in self.p.shapes.values():
            if s.status == "handwritten" and not self.platform(s):
                L.append(f"__attribute__((weak)) VKAPI_ATTR {s.cmd.ret} VKAPI_CALL bypass_hw_{s.name}({self.cg.params_decl(s)});")
        L.append('}  // extern "C"')
        L.append("")
        L.append("// The generated call of a hand-written command, for its hand-written wrapper; output")
        L.append("// handles must already hold the ids (or ICD objects) the caller chose.")
        for s in self.cg.shapes:
            if self.forwardable(s):
                L.append(f"{s.cmd.ret} forward_{s.name}({self.cg.params_decl(s)});")
        L.append("")
        L.append("}  // namespace bypass::icd")
        return "\n".join(L) + "\n"

    def write(self, outdir: str) -> list[str]:
        files = {"entrypoints.h": self.header(), "entrypoints.cpp": self.source()}
        for name, text in files.items():
            write_if_changed(f"{outdir}/{name}", text)
        return sorted(files)
