"""The FlatBuffers schema of the protocol, split by category, compiled by flatc in the build.

The generated C++ codecs (gen_structs.py, gen_commands.py) write and read exactly these
tables; the codegen tests check every encoded message against the compiled schema with
FlatBuffers' reflection verifier, so the schema is the contract, not documentation.
Field order here is the field id order the codecs use (voffset = 4 + 2 * id, wire.voffset).
"""

from __future__ import annotations

from common import banner, write_if_changed
from gen_commands import CommandGenerator
from gen_structs import StructGenerator
from wire import Field, FieldKind, OutKind, Protocol

FB_VECTOR = {
    FieldKind.UNION: "[ubyte]",
    FieldKind.BYTES: "[ubyte]",
    FieldKind.ARRAY_UNION: "[ubyte]",
    FieldKind.FIXED_HANDLE: "[ulong]",
    FieldKind.ARRAY_HANDLE: "[ulong]",
    FieldKind.FIXED_STRING: "string",
    FieldKind.STRING: "string",
    FieldKind.STRING_ARRAY: "[string]",
    FieldKind.CHAIN: "[ChainLink]",
}


def fb_type(f: Field) -> str:
    if f.kind is FieldKind.SCALAR:
        return f.ftype
    if f.kind is FieldKind.HANDLE:
        return "ulong"
    if f.kind in (FieldKind.STRUCT, FieldKind.PTR_STRUCT):
        return f.type
    if f.kind in (FieldKind.FIXED_STRUCT, FieldKind.ARRAY_STRUCT):
        return f"[{f.type}]"
    if f.kind in (FieldKind.FIXED_SCALAR, FieldKind.ARRAY_SCALAR):
        return f"[{f.ftype}]"
    return FB_VECTOR[f.kind]


class SchemaGenerator:
    def __init__(self, proto: Protocol, sg: StructGenerator, cg: CommandGenerator):
        self.p, self.sg, self.cg, self.reg = proto, sg, cg, proto.reg

    def table(self, name: str, fields: list[tuple[str, str]]) -> str:
        lines = [f"table {name} {{"]
        lines += [f"  {n}: {t};" for n, t in fields]
        lines.append("}")
        return "\n".join(lines)

    def structs_schema(self) -> str:
        L = [
            banner("gen_schema.py", self.reg).replace("//", "//"),
            "namespace bypass.wire;",
            "",
            "// One pNext link: the struct's sType and the struct as a nested FlatBuffer whose",
            "// root table is the struct's table.",
            "table ChainLink {\n  stype: int;\n  body: [ubyte];\n}",
            "",
        ]
        for s in self.sg.structs:
            L.append(self.table(s, [(f.name, fb_type(f)) for f in self.p.struct_fields(s)]))
        return "\n".join(L) + "\n"

    def commands_schema(self) -> str:
        L = [banner("gen_schema.py", self.reg), 'include "structs.fbs";', "", "namespace bypass.wire;", ""]
        L.append("// Framing: a batch is a sequence of records [u32 size][u16 command id][u16 flags];")
        L.append("// the payload is the command's args table as a FlatBuffer, or for fixed-layout")
        L.append("// commands its struct. A FlatBuffers union cannot hold 300 members, so the")
        L.append("// command id in the record header selects the table.")
        for s in self.cg.shapes:
            if s.fixed:
                if s.trailing:
                    arrays = ", ".join(f.name for f in s.trailing)
                    L.append(f"// followed by the arrays {arrays}, each 8-aligned (runtime.h, Packed)")
                L.append(f"struct {s.name}_s {{")
                for f in s.head:
                    L.append(f"  {f.name}: {'ulong' if f.kind is FieldKind.HANDLE else f.ftype};")
                L.append("}")
                continue
            fields = [(f.name, fb_type(f)) for f in s.fields]
            for o, ft in self.cg.in_out_fields(s):
                fields.append((f"in_{o.name}", ft))
            L.append(self.table(f"{s.name}_args", fields))
            if s.sync:
                fr, _ = self.cg.reply_ret_field(s)
                rf = [("result", fr)]
                for o in s.outs:
                    if o.kind in (OutKind.HANDLE, OutKind.HANDLE_ARRAY):
                        continue
                    t = {
                        OutKind.COUNT: "ulong",
                        OutKind.SCALAR: "ulong",
                        OutKind.STRUCT: o.type,
                        OutKind.STRUCT_ARRAY: f"[{o.type}]",
                        OutKind.BYTES: "[ubyte]",
                    }.get(o.kind)
                    if o.kind is OutKind.SCALAR_ARRAY:
                        t = f"[{self.reg.scalar_info(o.type)[0]}]"
                    rf.append((o.name, t))
                L.append(self.table(f"{s.name}_reply", rf))
        return "\n".join(L) + "\n"

    def write(self, outdir: str) -> list[str]:
        files = {"structs.fbs": self.structs_schema(), "commands.fbs": self.commands_schema()}
        for name, text in files.items():
            write_if_changed(f"{outdir}/{name}", text)
        return sorted(files)
