"""Format facts from the registry's <formats> table, for the host's range checks.

Output: `formats.h` and `formats.cpp` (build/generated/wire/): `format_info(VkFormat)` gives
the texel block size and extent, the aspects and, per plane, the block size and subsampling
of every format a guest may use. Buffer<->image copies need them to know how many bytes of a
buffer a region touches (host-server/src/validate.cpp).
"""

from __future__ import annotations

from common import banner, include, write_files
from wire import Protocol

NS_OPEN = "namespace bypass::wire {\n"
NS_CLOSE = "}  // namespace bypass::wire\n"

COLOR, DEPTH, STENCIL, PLANE0 = 0x1, 0x2, 0x4, 0x10


class FormatGenerator:
    def __init__(self, proto: Protocol):
        self.p = proto
        self.reg = proto.reg
        valid = set(proto.enum_values("VkFormat"))
        names = {}
        for name, v, _ in self.reg.enumerants["VkFormat"]:
            names.setdefault(v, name)
        self.formats = [(v, names[v]) for v in sorted(valid) if names[v] in self.reg.formats]

    @staticmethod
    def bytes_of(bits: str) -> int:
        """Bytes per texel of a depth or stencil aspect in a buffer copy (the spec's packing:
        D16 2, D24 4, D32 4, S8 1)."""
        b = int(bits)
        return 2 if b <= 16 and b > 8 else (1 if b <= 8 else 4)

    def row(self, name: str) -> str:
        f = self.reg.formats[name]
        aspects = 0
        depth = stencil = 0
        for comp, bits, _ in f.components:
            if comp == "D":
                aspects |= DEPTH
                depth = self.bytes_of(bits)
            elif comp == "S":
                aspects |= STENCIL
                stencil = self.bytes_of(bits)
        if not aspects:
            aspects = COLOR
        planes = ["{0, 0, 0}"] * 3
        for index, wdiv, hdiv, compat in f.planes:
            aspects |= PLANE0 << index
            planes[index] = f"{{{self.reg.formats[compat].block_size}, {wdiv}, {hdiv}}}"
        bw, bh, bd = f.block_extent
        return (
            f"{{{f.block_size}, {bw}, {bh}, {bd}, 0x{aspects:x}, {depth}, {stencil}, {len(f.planes)}, "
            f"{{{', '.join(planes)}}}}}"
        )

    def header(self) -> str:
        return "\n".join(
            [
                banner("gen_formats.py", self.reg),
                "#pragma once",
                "",
                "#include <vulkan/vulkan.h>",
                "",
                "#include <cstdint>",
                "",
                NS_OPEN,
                "struct FormatPlane {",
                "  uint8_t block_size;  // bytes per texel of the plane (its compatible format's)",
                "  uint8_t width_divisor;",
                "  uint8_t height_divisor;",
                "};",
                "struct FormatInfo {",
                "  uint8_t block_size;  // bytes per texel block",
                "  uint8_t block_width, block_height, block_depth;  // texels per block",
                "  uint8_t aspects;  // VkImageAspectFlags the format has (planes also count as color)",
                "  uint8_t depth_bytes, stencil_bytes;  // per texel of that aspect in a buffer copy",
                "  uint8_t plane_count;  // 0 for single-plane formats",
                "  FormatPlane planes[3];",
                "};",
                "// Null for VK_FORMAT_UNDEFINED and for values outside the covered API.",
                "const FormatInfo* format_info(VkFormat format);",
                "",
                NS_CLOSE,
            ]
        )

    def source(self) -> str:
        L = [banner("gen_formats.py", self.reg), include("formats.h"), "", NS_OPEN]
        L.append("namespace {")
        L.append("const FormatInfo kFormats[] = {")
        for v, name in self.formats:
            L.append(f"  {self.row(name)},  // {name}")
        L.append("};")
        L.append("}  // namespace")
        L.append("")
        L.append("const FormatInfo* format_info(VkFormat format) {")
        L.append("  switch (static_cast<int32_t>(format)) {")
        for i, (v, name) in enumerate(self.formats):
            L.append(f"    case {v}: return &kFormats[{i}];")
        L.append("    default: return nullptr;")
        L.append("  }")
        L.append("}")
        L.append("")
        L.append(NS_CLOSE)
        return "\n".join(L)

    def write(self, src_dir: str, include_dir: str) -> list[str]:
        files = {"formats.h": self.header(), "formats.cpp": self.source()}
        write_files(src_dir, include_dir, files)
        return sorted(files)
