"""Enum values: which values of each enum a guest may send.

Output: `enums.h` and `enums.cpp` (build/generated/wire/). For every enum that some covered
struct member or command parameter carries (and that the host checks, see
Protocol.enum_checked), `valid_<Enum>(v)` is true when v is a value Vulkan 1.0-1.3 or an
extension in data/extensions.txt defines; `enum_values(<Enum>)` lists those values for the
tests. The struct and command decoders call `valid_<Enum>` before a handler runs, so an
out-of-range enum never reaches the driver (which indexes tables with some of them).

Also `is_dispatchable(VkObjectType)`: true for the object types whose handles vk.xml declares
with VK_DEFINE_HANDLE (instance, physical device, device, queue, command buffer), which both
sides treat differently (a guest struct with a dispatch pointer; a host dispatch table).
"""

from __future__ import annotations

from common import banner, include, membership_switch, write_files
from wire import Protocol

NS_OPEN = "namespace bypass::wire {\n"
NS_CLOSE = "}  // namespace bypass::wire\n"


class EnumGenerator:
    def __init__(self, proto: Protocol, structs: list[str], shapes):
        self.p = proto
        self.reg = proto.reg
        used: set[str] = set()
        for s in structs:
            for f in proto.struct_fields(s):
                if proto.enum_checked(s, f):
                    used.add(self.reg.resolve(f.type))
        for shape in shapes:
            for f in shape.fields:
                if proto.enum_checked(shape.name, f):
                    used.add(self.reg.resolve(f.type))
        self.enums = sorted(used)

    @staticmethod
    def runs(values: list[int]) -> list[tuple[int, int]]:
        """Consecutive values as inclusive ranges: [0..184], [1000156000..1000156033], ..."""
        out: list[tuple[int, int]] = []
        for v in values:
            if out and out[-1][1] + 1 == v:
                out[-1] = (out[-1][0], v)
            else:
                out.append((v, v))
        return out

    def header(self) -> str:
        L = [
            banner("gen_enums.py", self.reg),
            "#pragma once",
            "",
            "#include <vulkan/vulkan.h>",
            "",
            "#include <cstddef>",
            "#include <cstdint>",
            "",
            NS_OPEN,
        ]
        L.append("// valid_X(v): v is one of the values of enum X that Vulkan 1.0-1.3 or a covered extension")
        L.append("// defines (for flag bits: one of the named bits or combinations, not any mask).")
        for e in self.enums:
            L.append(f"bool valid_{e}(int32_t v);")
        L.append("")
        L.append("// The object types vk.xml declares with VK_DEFINE_HANDLE (dispatchable handles).")
        L.append("bool is_dispatchable(VkObjectType t);")
        L.append("")
        L.append("struct EnumValueList {")
        L.append("  const int32_t* values;")
        L.append("  size_t count;")
        L.append("};")
        L.append("// The values valid_X accepts, by enum type (for the tests' random fillers).")
        for e in self.enums:
            L.append(f"EnumValueList enum_values({e});")
        L.append("")
        L.append(NS_CLOSE)
        return "\n".join(L)

    def source(self) -> str:
        L = [banner("gen_enums.py", self.reg), include("enums.h"), "", NS_OPEN]
        for e in self.enums:
            values = self.p.enum_values(e)
            conds = [f"v == {a}" if a == b else f"(v >= {a} && v <= {b})" for a, b in self.runs(values)]
            L.append(f"bool valid_{e}(int32_t v) {{")
            L.append("  return " + " ||\n         ".join(conds) + ";")
            L.append("}")
            L.append(f"static const int32_t kValues_{e}[] = {{{', '.join(str(v) for v in values)}}};")
            L.append(f"EnumValueList enum_values({e}) {{ return {{kValues_{e}, {len(values)}}}; }}")
            L.append("")
        L.extend(self.dispatchable())
        L.append(NS_CLOSE)
        return "\n".join(L)

    def dispatchable(self) -> list[str]:
        types = sorted(h.objtype for h in self.reg.handles.values() if h.dispatchable and h.objtype)
        return membership_switch("bool is_dispatchable(VkObjectType t)", types)

    def write(self, src_dir: str, include_dir: str) -> list[str]:
        files = {"enums.h": self.header(), "enums.cpp": self.source()}
        write_files(src_dir, include_dir, files)
        return sorted(files)
