"""Struct codecs: encode / verify / decode for every struct the protocol carries.

Both sides link these: the guest encodes inputs and decodes outputs, the host decodes inputs
and encodes outputs. Output: `structs.h`, one `structs_<category>.cpp` per category and
`chain.cpp` for pNext chains.
"""

from __future__ import annotations

from common import banner, include, write_files
from wire import Field, FieldKind, Protocol, c_expr

NS_OPEN = "namespace bypass::wire {\n"
NS_CLOSE = "}  // namespace bypass::wire\n"


class StructGenerator:
    def __init__(self, proto: Protocol):
        self.p = proto
        self.reg = proto.reg
        self.structs = [s for s in proto.structs if not proto.struct_unsupported(s)]
        self.chainable = [s for s in proto.chainable if s in self.structs]
        self.signed_enums = self._signed_enums()

    def _signed_enums(self) -> set[str]:
        """Enums with a negative enumerant (VkResult). Every other Vulkan enum's values are
        0..0x7FFFFFFF, so a negative value from the peer is out of the enum's range: storing it
        is undefined behaviour in C++ and no valid call carries one."""
        out = set()
        for enums in self.reg.root.findall("enums"):
            for e in enums.findall("enum"):
                if (e.get("value") or "").strip().startswith("-"):
                    out.add(enums.get("name"))
        for e in self.reg.root.iter("enum"):
            if e.get("extends") and (e.get("dir") == "-" or (e.get("value") or "").strip().startswith("-")):
                out.add(e.get("extends"))
        return out

    def unsigned_enum(self, f: Field) -> bool:
        return f.kind is FieldKind.SCALAR and f.type in self.reg.enums and f.type not in self.signed_enums

    # ------------------------------------------------------------------ emitters
    def objtype(self, t: str) -> str:
        return self.reg.handle(t).objtype

    def encode_field_pre(self, f: Field, src: str, names: set[str], var: str) -> list[str]:
        """Statements that build child objects before the table starts; set `var`."""
        m = f"{src}{f.name}"
        n = c_expr(f.len_expr, names, src) if f.len_expr else ""
        k = f.kind
        out = []
        if k is FieldKind.STRUCT:
            out.append(f"Off {var} = encode_{f.type}(b, {m}, h);")
        elif k is FieldKind.UNION:
            out.append(f"Off {var} = bytes_vector(b, &{m}, sizeof({m}));")
        elif k is FieldKind.FIXED_SCALAR:
            out.append(f"Off {var} = scalar_vector(b, reinterpret_cast<const {f.ctype}*>({m}), {f.count});")
        elif k is FieldKind.FIXED_STRING:
            out.append(f"Off {var} = b.CreateString({m}, strnlen({m}, {f.count})).o;")
        elif k is FieldKind.FIXED_STRUCT:
            out.append(f"Off {var};")
            out.append("{")
            out.append(f"  Off offs[{f.count}];")
            out.append(f"  for (size_t i = 0; i < {f.count}; ++i) offs[i] = encode_{f.type}(b, {m}[i], h);")
            out.append(f"  {var} = table_vector(b, offs, {f.count});")
            out.append("}")
        elif k is FieldKind.FIXED_HANDLE:
            out.append(f"Off {var};")
            out.append("{")
            out.append(f"  uint64_t bits[{f.count}];")
            out.append(f"  for (size_t i = 0; i < {f.count}; ++i) bits[i] = handle_bits({m}[i]);")
            out.append(f"  {var} = handle_vector(b, h, {self.objtype(f.type)}, bits, {f.count});")
            out.append("}")
        elif k is FieldKind.PTR_STRUCT:
            out.append(f"Off {var} = {m} ? encode_{f.type}(b, *{m}, h) : 0;")
        elif k is FieldKind.ARRAY_STRUCT:
            out.append(f"Off {var} = 0;")
            out.append(f"if ({m}) {{")
            out.append(f"  size_t n = static_cast<size_t>({n});")
            out.append("  StackBuf<Off> offs(n);")
            out.append(f"  for (size_t i = 0; i < n; ++i) offs[i] = encode_{f.type}(b, {m}[i], h);")
            out.append(f"  {var} = table_vector(b, offs.data(), n);")
            out.append("}")
        elif k is FieldKind.ARRAY_SCALAR:
            out.append(
                f"Off {var} = {m} ? scalar_vector(b, reinterpret_cast<const {f.ctype}*>({m}), static_cast<size_t>({n})) : 0;"
            )
        elif k is FieldKind.ARRAY_UNION:
            out.append(f"Off {var} = {m} ? bytes_vector(b, {m}, sizeof(*{m}) * static_cast<size_t>({n})) : 0;")
        elif k is FieldKind.ARRAY_HANDLE:
            out.append(
                f"Off {var} = {m} ? handle_array_vector(b, h, {self.objtype(f.type)}, {m}, static_cast<size_t>({n})) : 0;"
            )
        elif k is FieldKind.STRING:
            out.append(f"Off {var} = {m} ? b.CreateString({m}).o : 0;")
        elif k is FieldKind.STRING_ARRAY:
            out.append(f"Off {var} = 0;")
            out.append(f"if ({m}) {{")
            out.append(f"  size_t n = static_cast<size_t>({n});")
            out.append("  StackBuf<Off> strs(n);")
            out.append(f'  for (size_t i = 0; i < n; ++i) strs[i] = b.CreateString({m}[i] ? {m}[i] : "").o;')
            out.append(f"  {var} = table_vector(b, strs.data(), n);")
            out.append("}")
        elif k is FieldKind.BYTES:
            out.append(f"Off {var} = {m} ? bytes_vector(b, {m}, static_cast<size_t>({n})) : 0;")
        elif k is FieldKind.CHAIN:
            out.append(f"Off {var} = with_chain ? encode_chain(b, {m}, h) : 0;")
        if f.condition and out and k not in (FieldKind.SCALAR, FieldKind.HANDLE):
            cond = c_expr(f.condition, names, src)
            # evaluate only when the member is meaningful
            first = out[0]
            if first.startswith(f"Off {var} = ") and len(out) == 1:
                expr = first[len(f"Off {var} = ") : -1]
                out = [f"Off {var} = ({cond}) ? ({expr}) : 0;"]
            else:
                body = out[1:] if out[0] == f"Off {var} = 0;" else out
                out = [f"Off {var} = 0;", f"if ({cond}) {{"] + ["  " + x for x in body] + ["}"]
        return out

    def encode_field_add(self, f: Field, src: str, var: str) -> str:
        m = f"{src}{f.name}"
        if f.kind is FieldKind.SCALAR and f.member.objecttype:
            # A handle typed by another member (vk.xml's objecttype): an id like any handle's.
            return f"add_scalar<uint64_t>(b, {f.vo}, {m} ? h.to_wire({src}{f.member.objecttype}, {m}) : 0);"
        if f.kind is FieldKind.SCALAR:
            if self.reg.resolve(f.type) in self.reg.enums:
                return f"add_scalar<{f.ctype}>(b, {f.vo}, enum_bits({m}));"
            return (
                f"add_scalar<{f.ctype}>(b, {f.vo}, static_cast<{f.ctype}>({m}));"
                if f.ctype not in ("float", "double")
                else f"add_scalar(b, {f.vo}, {m});"
            )
        if f.kind is FieldKind.HANDLE:
            return f"add_scalar<uint64_t>(b, {f.vo}, {m} ? h.to_wire({self.objtype(f.type)}, handle_bits({m})) : 0);"
        return f"add_offset(b, {f.vo}, {var});"

    def verify_field(self, f: Field) -> str:
        vo = f.vo
        k = f.kind
        if k is FieldKind.SCALAR:
            return f"t->VerifyField<{f.ctype}>(v, {vo}, {f.size})"
        if k is FieldKind.HANDLE:
            return f"t->VerifyField<uint64_t>(v, {vo}, 8)"
        if k in (FieldKind.STRUCT, FieldKind.PTR_STRUCT):
            return f"verify_table_field(v, t, {vo}, verify_{f.type})"
        if k in (FieldKind.FIXED_STRUCT, FieldKind.ARRAY_STRUCT):
            return f"verify_table_vector(v, t, {vo}, verify_{f.type})"
        if k in (FieldKind.UNION, FieldKind.BYTES, FieldKind.ARRAY_UNION):
            return f"verify_vector_field<uint8_t>(v, t, {vo})"
        if k in (FieldKind.FIXED_SCALAR, FieldKind.ARRAY_SCALAR):
            return f"verify_vector_field<{f.ctype}>(v, t, {vo})"
        if k in (FieldKind.FIXED_HANDLE, FieldKind.ARRAY_HANDLE):
            return f"verify_vector_field<uint64_t>(v, t, {vo})"
        if k in (FieldKind.FIXED_STRING, FieldKind.STRING):
            return f"verify_string_field(v, t, {vo})"
        if k is FieldKind.STRING_ARRAY:
            return f"verify_string_vector_field(v, t, {vo})"
        if k is FieldKind.CHAIN:
            return f"verify_table_vector(v, t, {vo}, verify_ChainLink)"
        raise AssertionError(k)

    def decode_field(self, f: Field, owner: str, names: set[str], dst: str, into: bool) -> list[str]:
        """Statements decoding field f of table t into `dst.<name>`."""
        m = f"{dst}{f.name}"
        vo = f.vo
        where = f'"{owner}.{f.name}"'
        k = f.kind
        n = c_expr(f.len_expr, names, dst) if f.len_expr else ""
        out: list[str] = []
        if k is FieldKind.SCALAR and self.unsigned_enum(f):
            ok = "e >= 0"
            if self.p.enum_checked(owner, f):
                valid = f"valid_{self.reg.resolve(f.type)}(e)"
                if f.optional or (f.member.optional and f.member.optional[0]):
                    valid = f"(e == 0 || {valid})"
                ok = f"e >= 0 && (!c.check_values || {valid})"
            out.append(
                f"if (const int32_t e = t->GetField<int32_t>({vo}, 0); {ok}) {m} = static_cast<decltype({m})>(e);"
            )
            out.append(f'else return fail_enum(c, {where}, "{self.reg.resolve(f.type)}", e);')
        elif k is FieldKind.SCALAR and f.member.objecttype:
            # The handle's type is the other member's, decoded before it (vk.xml orders them so).
            out.append(
                f"if (!decode_handle(c, t->GetField<uint64_t>({vo}, 0), {dst}{f.member.objecttype}, false, {where}, &{m})) return false;"
            )
        elif k is FieldKind.SCALAR:
            out.append(f"{m} = static_cast<decltype({m})>(t->GetField<{f.ctype}>({vo}, 0));")
        elif k is FieldKind.HANDLE:
            opt = "true" if f.optional else "false"
            out.append(
                f"if (!decode_handle(c, t->GetField<uint64_t>({vo}, 0), {self.objtype(f.type)}, {opt}, {where}, &{m})) return false;"
            )
        elif k is FieldKind.STRUCT:
            out.append(
                f"if (auto* s = t->GetPointer<const Table*>({vo}); s && !decode_{f.type}(c, s, {m}, false)) return false;"
            )
        elif k is FieldKind.UNION:
            out.append(f"if (auto* s = t->GetPointer<const Vec<uint8_t>*>({vo})) {{")
            out.append(f'  if (s->size() != sizeof({m})) return c.fail({where}, "union size");')
            out.append(f"  std::memcpy(&{m}, s->data(), sizeof({m}));")
            out.append("}")
        elif k is FieldKind.FIXED_SCALAR:
            out.append(f"if (auto* s = t->GetPointer<const Vec<{f.ctype}>*>({vo})) {{")
            out.append(f'  if (s->size() > {f.count}) return c.fail({where}, "array too long");')
            out.append(f"  std::memcpy({m}, s->data(), s->size() * sizeof({f.ctype}));")
            out.append("}")
        elif k is FieldKind.FIXED_STRING:
            out.append(f"if (auto* s = t->GetPointer<const flatbuffers::String*>({vo})) {{")
            out.append(f'  if (s->size() >= {f.count}) return c.fail({where}, "string too long");')
            out.append(f"  std::memcpy({m}, s->c_str(), s->size() + 1);")
            out.append("}")
        elif k is FieldKind.FIXED_STRUCT:
            out.append(f"if (auto* s = t->GetPointer<const TableVec*>({vo})) {{")
            out.append(f'  if (s->size() > {f.count}) return c.fail({where}, "array too long");')
            out.append(f"  for (flatbuffers::uoffset_t i = 0; i < s->size(); ++i)")
            out.append(f"    if (!decode_{f.type}(c, s->Get(i), {m}[i], false)) return false;")
            out.append("}")
        elif k is FieldKind.FIXED_HANDLE:
            out.append(f"if (auto* s = t->GetPointer<const Vec<uint64_t>*>({vo})) {{")
            out.append(f'  if (s->size() > {f.count}) return c.fail({where}, "array too long");')
            out.append(f"  for (flatbuffers::uoffset_t i = 0; i < s->size(); ++i)")
            out.append(
                f"    if (!decode_handle(c, s->Get(i), {self.objtype(f.type)}, true, {where}, &{m}[i])) return false;"
            )
            out.append("}")
        elif into:
            return []  # pointers of an output struct belong to the application
        elif k is FieldKind.PTR_STRUCT:
            out.append(f"if (auto* s = t->GetPointer<const Table*>({vo})) {{")
            out.append(f"  auto* p = c.arena->make<{f.type}>(1);")
            out.append(f'  if (!p) return c.fail({where}, "out of memory");')
            out.append(f"  if (!decode_{f.type}(c, s, *p, false)) return false;")
            out.append(f"  {m} = p;")
            if f.optional:
                out.append("}")
            else:
                out.append(f"}} else {{")
                out.append(f'  return c.fail({where}, "missing required struct");')
                out.append("}")
        elif k in (
            FieldKind.ARRAY_STRUCT,
            FieldKind.ARRAY_SCALAR,
            FieldKind.ARRAY_HANDLE,
            FieldKind.ARRAY_UNION,
            FieldKind.BYTES,
            FieldKind.STRING_ARRAY,
        ):
            vec_t = {
                FieldKind.ARRAY_STRUCT: "TableVec",
                FieldKind.ARRAY_SCALAR: f"Vec<{f.ctype}>",
                FieldKind.ARRAY_HANDLE: "Vec<uint64_t>",
                FieldKind.ARRAY_UNION: "Vec<uint8_t>",
                FieldKind.BYTES: "Vec<uint8_t>",
                FieldKind.STRING_ARRAY: "StringVec",
            }[k]
            elem_size = {FieldKind.ARRAY_UNION: f"sizeof(*{m})", FieldKind.BYTES: "1"}.get(k, "1")
            cond = c_expr(f.condition, names, dst) if f.condition else "true"
            out.append(f"if ({cond}) {{")
            out.append(f"  const size_t want = static_cast<size_t>({n});")
            out.append(f"  auto* s = t->GetPointer<const {vec_t}*>({vo});")
            if k is FieldKind.ARRAY_UNION:
                out.append(
                    f'  if (s && s->size() != want * {elem_size}) return c.fail({where}, "length does not match its count");'
                )
            else:
                out.append(f'  if (s && s->size() != want) return c.fail({where}, "length does not match its count");')
            if not f.optional:
                out.append(f'  if (!s && want) return c.fail({where}, "missing array");')
            out.append("  if (s) {")
            T = f.type
            if k is FieldKind.ARRAY_STRUCT:
                out.append(f"    auto* p = c.arena->make<{T}>(want ? want : 1);")
                out.append(f'    if (!p) return c.fail({where}, "out of memory");')
                out.append("    for (size_t i = 0; i < want; ++i)")
                out.append(
                    f"      if (!decode_{T}(c, s->Get(static_cast<flatbuffers::uoffset_t>(i)), p[i], false)) return false;"
                )
                out.append(f"    {m} = p;")
            elif k is FieldKind.ARRAY_SCALAR:
                # Vectors of scalars are aligned in a verified message: point straight at them.
                out.append(f"    {m} = reinterpret_cast<decltype({m})>(s->data());")
                if self.p.enum_checked(owner, f):
                    e = self.reg.resolve(f.type)
                    out.append("    if (c.check_values)")
                    out.append("      for (flatbuffers::uoffset_t i = 0; i < s->size(); ++i)")
                    out.append(f'        if (!valid_{e}(s->Get(i))) return fail_enum(c, {where}, "{e}", s->Get(i));')
            elif k is FieldKind.ARRAY_HANDLE:
                out.append(f"    auto* p = c.arena->make<{T}>(want ? want : 1);")
                out.append(f'    if (!p) return c.fail({where}, "out of memory");')
                out.append("    for (size_t i = 0; i < want; ++i)")
                nulls = "true" if f.null_elements else "false"
                out.append(
                    f"      if (!decode_handle(c, s->Get(static_cast<flatbuffers::uoffset_t>(i)), {self.objtype(T)}, {nulls}, {where}, &p[i])) return false;"
                )
                out.append(f"    {m} = p;")
            elif k in (FieldKind.ARRAY_UNION, FieldKind.BYTES):
                out.append(f"    {m} = reinterpret_cast<decltype({m})>(s->data());")
            elif k is FieldKind.STRING_ARRAY:
                out.append("    auto* p = c.arena->make<const char*>(want ? want : 1);")
                out.append(f'    if (!p) return c.fail({where}, "out of memory");')
                out.append(
                    "    for (size_t i = 0; i < want; ++i) p[i] = s->Get(static_cast<flatbuffers::uoffset_t>(i))->c_str();"
                )
                out.append(f"    {m} = p;")
            out.append("  }")
            out.append("}")
        elif k is FieldKind.STRING:
            out.append(f"if (auto* s = t->GetPointer<const flatbuffers::String*>({vo})) {{")
            out.append(f"  {m} = s->c_str();")
            if not f.optional:  # e.g. VkPipelineShaderStageCreateInfo.pName: the driver reads it
                out.append("} else {")
                out.append(f'  return c.fail({where}, "missing required string");')
            out.append("}")
        elif k is FieldKind.CHAIN:
            pass  # handled by the caller
        return out

    # ------------------------------------------------------------------ outputs
    def header(self) -> str:
        lines = [
            banner("gen_structs.py", self.reg),
            "#pragma once",
            "",
            '#include "bypass/wire/runtime.h"',
            include("enums.h"),
            "",
            NS_OPEN,
        ]
        lines.append("// pNext chains: a vector of ChainLink tables, each a nested FlatBuffer.")
        lines.append("Off encode_chain(Builder& b, const void* pNext, HandleMap& h);")
        lines.append("bool verify_ChainLink(Verifier& v, const Table* t);")
        lines.append("// Builds a fresh chain in the arena (host inputs, guest-fresh outputs).")
        lines.append("bool decode_chain(DecodeContext& c, const TableVec* links, const void** out);")
        lines.append("// Decodes into the structs of an existing chain, matched by sType (guest outputs).")
        lines.append("bool decode_chain_into(DecodeContext& c, const TableVec* links, const void* chain);")
        lines.append("// Output chains: the guest sends the sTypes of its chain; the host builds it zeroed.")
        lines.append("Off encode_chain_skeleton(Builder& b, const void* pNext);")
        lines.append("bool make_chain(DecodeContext& c, const Vec<uint32_t>* stypes, void** out);")
        lines.append("// Size of the struct with this sType, 0 if the protocol does not know it.")
        lines.append("size_t struct_size(int32_t stype);")
        lines.append(
            "bool decode_handle(DecodeContext& c, uint64_t id, VkObjectType type, bool optional, const char* where, void* out);"
        )
        lines.append("")
        for s in self.structs:
            lines.append(f"Off encode_{s}(Builder& b, const {s}& s, HandleMap& h, bool with_chain = true);")
            lines.append(f"bool verify_{s}(Verifier& v, const Table* t);")
            lines.append(f"bool decode_{s}(DecodeContext& c, const Table* t, {s}& out, bool into);")
        lines.append("")
        lines.append(NS_CLOSE)
        return "\n".join(lines) + "\n"

    def struct_code(self, sname: str) -> str:
        s = self.reg.struct(sname)
        fields = self.p.struct_fields(sname)
        names = {m.name for m in s.members}
        L = []
        # encode
        # A chain link is encoded without its own pNext: the chain is flattened into links.
        L.append(f"Off encode_{sname}(Builder& b, const {sname}& s, HandleMap& h, bool with_chain) {{")
        L.append("  (void)h; (void)with_chain;")
        for f in fields:
            if f.kind not in (FieldKind.SCALAR, FieldKind.HANDLE):
                for line in self.encode_field_pre(f, "s.", names, f"o_{f.name}"):
                    L.append("  " + line)
        L.append("  const Off start = b.StartTable();")
        # larger scalars first keeps padding small
        for f in sorted(fields, key=lambda f: -(8 if f.kind is FieldKind.HANDLE else f.size or 4)):
            L.append("  " + self.encode_field_add(f, "s.", f"o_{f.name}"))
        L.append("  return b.EndTable(start);")
        L.append("}")
        L.append("")
        # verify
        checks = [self.verify_field(f) for f in fields]
        L.append(f"bool verify_{sname}(Verifier& v, const Table* t) {{")
        L.append(
            "  return t->VerifyTableStart(v)"
            + "".join(f" &&\n         {c}" for c in checks)
            + " &&\n         v.EndTable();"
        )
        L.append("}")
        L.append("")
        # decode
        L.append(f"bool decode_{sname}(DecodeContext& c, const Table* t, {sname}& out, bool into) {{")
        L.append("  (void)c; (void)into;")
        if s.stype:
            L.append(f"  if (!into) out.sType = {s.stype};")
        for f in fields:
            if f.kind is FieldKind.CHAIN:
                L.append(f"  if (auto* links = t->GetPointer<const TableVec*>({f.vo})) {{")
                L.append("    if (into) {")
                L.append("      if (!decode_chain_into(c, links, out.pNext)) return false;")
                L.append("    } else if (!decode_chain(c, links, const_cast<const void**>(&out.pNext))) {")
                L.append("      return false;")
                L.append("    }")
                L.append("  }")
        first = [f for f in fields if f.kind is not FieldKind.CHAIN and not f.kind.is_pointer]
        second = [f for f in fields if f not in first and f.kind is not FieldKind.CHAIN]
        for f in first:
            for line in self.decode_field(f, sname, names, "out.", False):
                L.append("  " + line)
        if second:
            L.append("  if (!into) {")
            for f in second:
                for line in self.decode_field(f, sname, names, "out.", False):
                    L.append("    " + line)
            L.append("  }")
        L.append("  return true;")
        L.append("}")
        L.append("")
        return "\n".join(L)

    def category_files(self) -> dict[str, str]:
        cats: dict[str, list[str]] = {}
        for s in self.structs:
            cats.setdefault(self.p.category(s), []).append(s)
        files = {}
        for cat, names in sorted(cats.items()):
            body = [banner("gen_structs.py", self.reg), include("structs.h"), "", "#include <cstring>", "", NS_OPEN]
            for s in names:
                body.append(self.struct_code(s))
            body.append(NS_CLOSE)
            files[f"structs_{cat}.cpp"] = "\n".join(body)
        return files

    def chain_file(self) -> str:
        L = [banner("gen_structs.py", self.reg), include("structs.h"), "", "#include <cstring>", "", NS_OPEN]
        L.append(
            """bool verify_ChainLink(Verifier& v, const Table* t) {
  return t->VerifyTableStart(v) && t->VerifyField<int32_t>(v, 4 /* stype */, 4) &&
         verify_vector_field<uint8_t>(v, t, 6 /* body */) && v.EndTable();
}

bool decode_handle(DecodeContext& c, uint64_t id, VkObjectType type, bool optional, const char* where, void* out) {
  uint64_t bits = 0;
  if (id == 0) {
    if (!optional) return c.fail(where, "null handle");
  } else if (!c.handles->from_wire(type, id, &bits)) {
    return c.fail(where, "unknown handle id");
  }
  std::memcpy(out, &bits, sizeof(bits));
  return true;
}

static Off make_link(Builder& b, int32_t stype, const Builder& nested) {
  Off body = bytes_vector(b, nested.GetBufferPointer(), nested.GetSize());
  const Off start = b.StartTable();
  b.AddElement<int32_t>(4 /* stype */, stype, 0);
  add_offset(b, 6 /* body */, body);
  return b.EndTable(start);
}
"""
        )
        L.append("Off encode_chain(Builder& b, const void* pNext, HandleMap& h) {")
        L.append("  std::vector<Off> links;")
        L.append("  for (auto* p = static_cast<const VkBaseInStructure*>(pNext); p; p = p->pNext) {")
        L.append("    Builder nb(256);")
        L.append("    switch (static_cast<int32_t>(p->sType)) {")
        for s in self.chainable:
            st = self.reg.struct(s).stype
            L.append(
                f"      case {st}: nb.Finish(flatbuffers::Offset<Table>(encode_{s}(nb, *reinterpret_cast<const {s}*>(p), h, false))); break;"
            )
        L.append(
            "      default: if (p->sType > 48) warn_unknown_stype(p->sType); continue;  // 47, 48: the loader's own"
        )
        L.append("    }")
        L.append("    links.push_back(make_link(b, p->sType, nb));")
        L.append("  }")
        L.append("  return links.empty() ? 0 : table_vector(b, links.data(), links.size());")
        L.append("}")
        L.append("")
        L.append("template <class T>")
        L.append(
            "static T* decode_link(DecodeContext& c, const Vec<uint8_t>* body, bool (*verify)(Verifier&, const Table*), bool (*decode)(DecodeContext&, const Table*, T&, bool), T* into) {"
        )
        L.append('  if (!body) { c.fail("pNext", "empty chain link"); return nullptr; }')
        L.append("  const Table* root = verify_root(body->data(), body->size(), verify);")
        L.append('  if (!root) { c.fail("pNext", "chain link fails verification"); return nullptr; }')
        L.append("  T* p = into ? into : c.arena->make<T>(1);")
        L.append('  if (!p) { c.fail("pNext", "out of memory"); return nullptr; }')
        L.append("  return decode(c, root, *p, into != nullptr) ? p : nullptr;")
        L.append("}")
        L.append("")
        L.append("bool decode_chain(DecodeContext& c, const TableVec* links, const void** out) {")
        L.append("  VkBaseOutStructure** tail = reinterpret_cast<VkBaseOutStructure**>(const_cast<void**>(out));")
        L.append("  *tail = nullptr;")
        L.append("  for (flatbuffers::uoffset_t i = 0; i < links->size(); ++i) {")
        L.append("    const Table* link = links->Get(i);")
        L.append("    const int32_t stype = link->GetField<int32_t>(4 /* stype */, 0);")
        L.append("    auto* body = link->GetPointer<const Vec<uint8_t>*>(6 /* body */);")
        L.append("    VkBaseOutStructure* p = nullptr;")
        L.append("    switch (stype) {")
        for s in self.chainable:
            st = self.reg.struct(s).stype
            L.append(
                f"      case {st}: p = reinterpret_cast<VkBaseOutStructure*>(decode_link<{s}>(c, body, verify_{s}, decode_{s}, nullptr)); if (!p) return false; break;"
            )
        L.append("      default: warn_unknown_stype(stype); continue;")
        L.append("    }")
        L.append("    *tail = p;")
        L.append("    tail = &p->pNext;")
        L.append("  }")
        L.append("  return true;")
        L.append("}")
        L.append("")
        L.append("bool decode_chain_into(DecodeContext& c, const TableVec* links, const void* chain) {")
        L.append("  for (auto* p = static_cast<const VkBaseOutStructure*>(chain); p; p = p->pNext) {")
        L.append("    for (flatbuffers::uoffset_t i = 0; i < links->size(); ++i) {")
        L.append("      const Table* link = links->Get(i);")
        L.append("      if (link->GetField<int32_t>(4 /* stype */, 0) != static_cast<int32_t>(p->sType)) continue;")
        L.append("      auto* body = link->GetPointer<const Vec<uint8_t>*>(6 /* body */);")
        L.append("      void* dst = const_cast<VkBaseOutStructure*>(p);")
        L.append("      switch (static_cast<int32_t>(p->sType)) {")
        for s in self.chainable:
            st = self.reg.struct(s).stype
            L.append(
                f"        case {st}: if (!decode_link<{s}>(c, body, verify_{s}, decode_{s}, static_cast<{s}*>(dst))) return false; break;"
            )
        L.append("        default: break;")
        L.append("      }")
        L.append("      break;")
        L.append("    }")
        L.append("  }")
        L.append("  return true;")
        L.append("}")
        L.append("")
        L.append("size_t struct_size(int32_t stype) {")
        L.append("  switch (stype) {")
        for s in self.structs:
            st = self.reg.struct(s).stype
            if st:
                L.append(f"    case {st}: return sizeof({s});")
        L.append("    default: return 0;")
        L.append("  }")
        L.append("}")
        L.append("")
        L.append(
            """Off encode_chain_skeleton(Builder& b, const void* pNext) {
  std::vector<int32_t> stypes;
  for (auto* p = static_cast<const VkBaseInStructure*>(pNext); p; p = p->pNext) {
    if (struct_size(p->sType)) stypes.push_back(p->sType);
    else warn_unknown_stype(p->sType);
  }
  return stypes.empty() ? 0 : scalar_vector(b, stypes.data(), stypes.size());
}

bool make_chain(DecodeContext& c, const Vec<uint32_t>* stypes, void** out) {
  VkBaseOutStructure** tail = reinterpret_cast<VkBaseOutStructure**>(out);
  *tail = nullptr;
  if (!stypes) return true;
  if (stypes->size() > 512) return c.fail("pNext", "output chain too long");
  for (flatbuffers::uoffset_t i = 0; i < stypes->size(); ++i) {
    const int32_t st = static_cast<int32_t>(stypes->Get(i));
    const size_t size = struct_size(st);
    if (!size) continue;
    auto* p = static_cast<VkBaseOutStructure*>(c.arena->alloc(size, 8));
    if (!p) return c.fail("pNext", "out of memory");
    p->sType = static_cast<VkStructureType>(st);
    *tail = p;
    tail = &p->pNext;
  }
  return true;
}
"""
        )
        L.append(NS_CLOSE)
        return "\n".join(L)

    def write(self, src_dir: str, include_dir: str) -> list[str]:
        files = {"structs.h": self.header(), "chain.cpp": self.chain_file()}
        files.update(self.category_files())
        write_files(src_dir, include_dir, files)
        return sorted(files)
