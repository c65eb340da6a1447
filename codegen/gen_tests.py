#!/usr/bin/env python3
"""Test code for the wire protocol, generated from the same wire shapes as the codecs.

  gen_tests.py --registry vk.xml --out build/generated/tests

For every struct the protocol carries: `fill_random_X` (random contents that are valid with
respect to the struct's own counts, lengths, strings, conditions and pNext chain) and
`equal_X` (deep comparison, with the decoder's "into" semantics for outputs). For every
command: a `Case_vkX` that fills random arguments, encodes them as the guest does, and checks
what the host decoded (and, for commands with a reply, what the guest decoded back from the
host's reply), plus the handler the test host context calls. Tables list every struct and
command case, the schema layout the codecs assume (checked against flatc's binary schema)
and the command ids.

The tests themselves (tests/codegen/) are hand-written and drive these tables.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import banner, include, write_files  # noqa: E402
from gen_commands import OBJECTS, CommandGenerator, object_of  # noqa: E402
from gen_structs import StructGenerator  # noqa: E402
from model import Registry  # noqa: E402
from wire import CommandShape, Field, FieldKind, OutKind, Protocol, c_expr  # noqa: E402

NS_OPEN = "namespace bypass::wire::test {\n"
NS_CLOSE = "}  // namespace bypass::wire::test\n"

WORD = r"(?<![\w>.])[A-Za-z_]\w*"


class TestGenerator:
    def __init__(self, proto: Protocol, sg: StructGenerator, cg: CommandGenerator):
        self.p, self.sg, self.cg, self.reg = proto, sg, cg, proto.reg
        self.structs = sg.structs
        chainable = set(sg.chainable)
        self.links = {s: [e for e in self.reg.extenders(s) if e in chainable] for s in self.structs}

    # ------------------------------------------------------------------ helpers
    def has_chain(self, sname: str) -> bool:
        return any(f.kind is FieldKind.CHAIN for f in self.p.struct_fields(sname))

    @staticmethod
    def drivers(expr: str, scalars: set[str]) -> list[str]:
        return [w for w in re.findall(WORD, expr) if w in scalars]

    # ------------------------------------------------------------------ fill
    def fill_lines(self, fields: list[Field], P: str, names: set[str], extra_lens=(), top=False) -> list[str]:
        """Statements filling `fields` of the aggregate at prefix P with random values.
        extra_lens: (len_expr, is_struct_array) of output arrays whose counts are inputs."""
        L: list[str] = []
        for f in fields:
            m = P + f.name
            k = f.kind
            if k is FieldKind.SCALAR and f.member.objecttype:
                L.append(f"{m} = f.handle<uint64_t>(false);  // typed by {f.member.objecttype}")
            elif k is FieldKind.SCALAR:
                L.append(f"f.scalar({m});")
            elif k is FieldKind.HANDLE:
                L.append(f"{m} = f.handle<decltype({m})>({'true' if f.optional else 'false'});")
            elif k is FieldKind.STRUCT:
                L.append(f"fill_random_{f.type}(f, {m}, d + 1, 0);")
            elif k in (FieldKind.UNION, FieldKind.FIXED_SCALAR):
                L.append(f"f.bytes(&{m}, sizeof({m}));")
            elif k is FieldKind.FIXED_STRING:
                L.append(f"f.fixed_string({m}, {f.count});")
            elif k is FieldKind.FIXED_STRUCT:
                L.append(f"for (auto& e : {m}) fill_random_{f.type}(f, e, d + 1, 0);")
            elif k is FieldKind.FIXED_HANDLE:
                L.append(f"for (auto& e : {m}) e = f.handle<std::remove_reference_t<decltype(e)>>(true);")
            elif k is FieldKind.PTR_STRUCT:
                opt = "true" if f.optional else "false"
                L.append(
                    f"if (f.present(d, {opt}, {'true' if top else 'false'})) {{ auto* p = f.pool.make<{f.type}>(1); "
                    f"fill_random_{f.type}(f, *p, d + 1, 0); {m} = p; }} else {{ {m} = nullptr; }}"
                )
            elif k is FieldKind.STRING:
                L.append(f"{m} = f.string({'true' if f.optional else 'false'});")
        # counts: every scalar a length expression reads gets a small value, once
        # (an enum driving a length, `rasterizationSamples`, keeps its random valid value)
        scalars = {f.name for f in fields if f.kind is FieldKind.SCALAR and f.type not in self.reg.enums}
        assigned: set[str] = set()
        lens = [(f.len_expr, f.kind is FieldKind.ARRAY_STRUCT) for f in fields if f.kind.is_array and f.len_expr]
        for expr, is_struct in list(lens) + list(extra_lens):
            simple = re.fullmatch(r"\w+", expr) is not None
            limit = (3 if is_struct else 8) if simple else 32
            for w in self.drivers(expr, scalars):
                if w not in assigned:
                    assigned.add(w)
                    L.append(f"{P}{w} = static_cast<decltype({P}{w})>(f.count(d, {limit}));")
            # counts read through a struct pointer (`pAllocateInfo->descriptorSetCount`)
            for ptr, member in re.findall(r"(\w+)->(\w+)", expr):
                if ptr in names and f"{ptr}->{member}" not in assigned:
                    assigned.add(f"{ptr}->{member}")
                    target = f"const_cast<Elem<decltype({P}{ptr})>*>({P}{ptr})->{member}"
                    # the struct's own filler already made it small when it counts an array there
                    L.append(
                        f"if ({P}{ptr} && {target} > {limit}) {target} = static_cast<decltype({target})>(f.count(d, {limit}));"
                    )
        for f in fields:
            if not f.kind.is_array:
                continue
            m = P + f.name
            n = c_expr(f.len_expr, names, P)
            L.append("{")
            L.append(f"  const size_t n = static_cast<size_t>({n});")
            if f.optional:
                L.append(f"  if (f.rng.one_in(4)) {{ {m} = nullptr; }} else {{")
            else:
                L.append("  {")
            if f.kind is FieldKind.BYTES:
                L.append("    auto* p = f.pool.make<uint8_t>(n);")
                L.append("    f.bytes(p, n);")
            elif f.kind is FieldKind.ARRAY_STRUCT:
                L.append(f"    auto* p = f.pool.make<{f.type}>(n);")
                L.append(f"    for (size_t i = 0; i < n; ++i) fill_random_{f.type}(f, p[i], d + 1, 0);")
            elif f.kind is FieldKind.ARRAY_HANDLE:
                L.append(f"    auto* p = f.pool.make<Elem<decltype({m})>>(n);")
                if f.null_elements:
                    # The first element VK_NULL_HANDLE, which this array may hold: it must arrive as such.
                    L.append(
                        f"    for (size_t i = 0; i < n; ++i) p[i] = i == 0 ? Elem<decltype({m})>{{}} : f.handle<Elem<decltype({m})>>(false);"
                    )
                else:
                    L.append(f"    for (size_t i = 0; i < n; ++i) p[i] = f.handle<Elem<decltype({m})>>(false);")
            elif f.kind is FieldKind.STRING_ARRAY:
                L.append("    auto* p = f.pool.make<const char*>(n);")
                L.append("    for (size_t i = 0; i < n; ++i) p[i] = f.string(false);")
            elif f.kind is FieldKind.ARRAY_SCALAR and f.type in self.reg.enums:  # valid values, as a guest sends
                L.append(f"    auto* p = f.pool.make<Elem<decltype({m})>>(n);")
                L.append("    for (size_t i = 0; i < n; ++i) f.scalar(p[i]);")
            else:  # array_scalar, array_union
                L.append(f"    auto* p = f.pool.make<Elem<decltype({m})>>(n);")
                L.append(f"    f.bytes(p, n * sizeof(*p));")
            L.append(f"    {m} = p;")
            L.append("  }")
            L.append("}")
        return L

    # ------------------------------------------------------------------ equal
    def equal_field(self, f: Field, owner: str, names: set[str], A: str, B: str, packed: bool = False) -> list[str]:
        ma, mb = A + f.name, B + f.name
        where = f'"{owner}.{f.name}"'
        k = f.kind
        bad = f"return d.at({where});"
        if k in (FieldKind.SCALAR, FieldKind.HANDLE, FieldKind.UNION, FieldKind.FIXED_SCALAR, FieldKind.FIXED_HANDLE):
            return [f"if (std::memcmp(&{ma}, &{mb}, sizeof({ma})) != 0) {bad}"]
        if k is FieldKind.STRUCT:
            return [f"if (!equal_{f.type}({ma}, {mb}, d, 0)) {bad}"]
        if k is FieldKind.FIXED_STRING:
            return [f"if (std::strncmp({ma}, {mb}, {f.count}) != 0) {bad}"]
        if k is FieldKind.FIXED_STRUCT:
            return [f"for (size_t i = 0; i < std::size({ma}); ++i) if (!equal_{f.type}({ma}[i], {mb}[i], d, 0)) {bad}"]
        if k is FieldKind.PTR_STRUCT:
            return [
                f"if (({ma} == nullptr) != ({mb} == nullptr)) {bad}",
                f"if ({ma} && !equal_{f.type}(*{ma}, *{mb}, d, 0)) {bad}",
            ]
        if k is FieldKind.STRING:
            return [
                f"if (({ma} == nullptr) != ({mb} == nullptr)) {bad}",
                f"if ({ma} && std::strcmp({ma}, {mb}) != 0) {bad}",
            ]
        if k.is_array:
            n = c_expr(f.len_expr, names, A)
            cond = c_expr(f.condition, names, A) if f.condition else "true"
            L = [
                f"if ({cond}) {{",
                f"  const size_t n = static_cast<size_t>({n});",
                # A packed record carries no pointer for an empty array: the host passes NULL.
                f"  if ({'n && ' if packed else ''}(({ma} == nullptr) != ({mb} == nullptr))) {bad}",
                f"  if ({ma} && n) {{",
            ]
            if k is FieldKind.ARRAY_STRUCT:
                L.append(f"    for (size_t i = 0; i < n; ++i) if (!equal_{f.type}({ma}[i], {mb}[i], d, 0)) {bad}")
            elif k is FieldKind.STRING_ARRAY:
                L.append(f"    for (size_t i = 0; i < n; ++i) if (std::strcmp({ma}[i], {mb}[i]) != 0) {bad}")
            elif k is FieldKind.BYTES:
                L.append(f"    if (std::memcmp({ma}, {mb}, n) != 0) {bad}")
            else:
                L.append(f"    if (std::memcmp({ma}, {mb}, n * sizeof(*{ma})) != 0) {bad}")
            L.append("  }")
            L.append("}")
            return L
        if k is FieldKind.CHAIN:
            return []
        raise AssertionError(k)

    def equal_lines(
        self, fields: list[Field], owner: str, names: set[str], A: str, B: str, packed: bool = False
    ) -> list[str]:
        L: list[str] = []
        for f in fields:
            if not f.kind.is_pointer:
                L += self.equal_field(f, owner, names, A, B)
        ptr = [f for f in fields if f.kind.is_pointer]
        if ptr:
            L.append("if (!(flags & kInto)) {")
            for f in ptr:
                L += ["  " + x for x in self.equal_field(f, owner, names, A, B, packed)]
            L.append("}")
        return L

    # ------------------------------------------------------------------ structs
    def struct_code(self, sname: str) -> str:
        s = self.reg.struct(sname)
        fields = self.p.struct_fields(sname)
        names = {m.name for m in s.members}
        chain = self.has_chain(sname)
        L = []
        if chain:
            links = self.links[sname]
            if links:
                L.append(f"static const LinkFn kLinks_{sname}[] = {{{', '.join('link_' + x for x in links)}}};")
            L.append(f"const void* random_chain_{sname}(Fill& f, int d) {{")
            L.append(
                f"  return {'f.chain(kLinks_' + sname + ', std::size(kLinks_' + sname + '), d)' if links else 'nullptr'};"
            )
            L.append("}")
            L.append("")
        L.append(f"void fill_random_{sname}(Fill& f, {sname}& x, int d, int mode) {{")
        L.append("  (void)f; (void)d;")
        if s.stype or chain:
            L.append("  // mode 1: an output the host fills (keep sType and the chain, fill its links);")
            L.append("  // mode 2: a chain link (keep sType and pNext).")
            keep = []
            if s.stype:
                keep.append("sType")
            if chain:
                keep.append("pNext")
            for k in keep:
                L.append(f"  const auto keep_{k} = x.{k};")
        body = self.fill_lines([f for f in fields], "x.", names)
        L += ["  " + x for x in body]
        if s.stype:
            L.append(f"  x.sType = mode ? keep_sType : {s.stype};")
        if chain:
            L.append(f"  x.pNext = mode ? keep_pNext : const_cast<decltype(x.pNext)>(random_chain_{sname}(f, d));")
            L.append("  if (mode == 1) fill_links(f, const_cast<void*>(static_cast<const void*>(x.pNext)), d);")
        else:
            L.append("  (void)mode;")
        L.append("}")
        L.append("")
        L.append(f"bool equal_{sname}(const {sname}& a, const {sname}& b, Diff& d, unsigned flags) {{")
        L.append("  (void)d; (void)flags;")
        if s.stype:
            L.append(f'  if (a.sType != b.sType) return d.at("{sname}.sType");')
        L += ["  " + x for x in self.equal_lines(fields, sname, names, "a.", "b.")]
        if chain:
            L.append(
                '  if (!(flags & kNoChain) && !equal_chain(a.pNext, b.pNext, d, flags & kInto)) return d.at("'
                + sname
                + '.pNext");'
            )
        L.append("  return true;")
        L.append("}")
        L.append("")
        L.append(f"bool roundtrip_struct_{sname}(Env& e, Diff& d) {{")
        L.append(
            f'  return roundtrip_struct<{sname}>(e, d, "{sname}", fill_random_{sname}, encode_{sname}, verify_{sname}, decode_{sname}, equal_{sname});'
        )
        L.append("}")
        L.append("")
        return "\n".join(L)

    def links_file(self) -> str:
        L = [banner("gen_tests.py", self.reg), include("wire_tests.h"), "", NS_OPEN]
        for s in self.sg.chainable:
            L.append(f"VkBaseOutStructure* link_{s}(Fill& f, int d) {{")
            L.append(f"  auto* p = f.pool.make<{s}>(1);")
            L.append(f"  fill_random_{s}(f, *p, d + 1, 0);")
            L.append("  p->pNext = nullptr;")
            L.append("  return reinterpret_cast<VkBaseOutStructure*>(p);")
            L.append("}")
        L.append("")
        L.append("void fill_links(Fill& f, void* chain, int d) {")
        L.append("  for (auto* p = static_cast<VkBaseOutStructure*>(chain); p; p = p->pNext) {")
        L.append("    switch (static_cast<int32_t>(p->sType)) {")
        for s in self.sg.chainable:
            L.append(
                f"      case {self.reg.struct(s).stype}: fill_random_{s}(f, *reinterpret_cast<{s}*>(p), d + 1, 2); break;"
            )
        L.append("      default: break;")
        L.append("    }")
        L.append("  }")
        L.append("}")
        L.append("")
        L.append("bool equal_link(const VkBaseOutStructure* a, const VkBaseOutStructure* b, Diff& d, unsigned flags) {")
        L.append("  switch (static_cast<int32_t>(a->sType)) {")
        for s in self.sg.chainable:
            L.append(
                f"    case {self.reg.struct(s).stype}: return equal_{s}(*reinterpret_cast<const {s}*>(a), *reinterpret_cast<const {s}*>(b), d, flags | kNoChain);"
            )
        L.append("    default: return true;")
        L.append("  }")
        L.append("}")
        L.append("")
        L.append("const char* table_of_stype(int32_t stype) {")
        L.append("  switch (stype) {")
        for s in self.sg.chainable:
            L.append(f'    case {self.reg.struct(s).stype}: return "bypass.wire.{s}";')
        L.append("    default: return nullptr;")
        L.append("  }")
        L.append("}")
        L.append("")
        L.append(NS_CLOSE)
        return "\n".join(L)

    # ------------------------------------------------------------------ commands
    def out_elem(self, o) -> str:
        return "uint8_t" if o.kind is OutKind.BYTES else f"Elem<decltype(in.{o.name})>"

    def command_code(self, s: CommandShape) -> str:
        reg = self.reg
        names = {p.name for p in s.cmd.params}
        fields = s.fields
        n_of = lambda expr, P: c_expr(expr, names, P)  # noqa: E731
        counts = {o.name: o for o in s.outs if o.kind is OutKind.COUNT}
        arrays_of_count = {o.two_call: o for o in s.outs if o.two_call and o.kind is not OutKind.COUNT}
        L = []
        # ---- handler: touch every decoded input, write outputs like a driver, capture
        L.append(f"static void fill_outputs_{s.name}(Fill& f, Args_{s.name}& a) {{")
        L.append("  (void)f; (void)a;")
        for o in s.outs:
            m = f"a.{o.name}"
            if o.kind is OutKind.HANDLE:
                L.append(f"  if ({m}) *{m} = f.handle<Elem<decltype({m})>>(false);")
            elif o.kind is OutKind.HANDLE_ARRAY:
                L.append(
                    f"  if ({m}) for (size_t i = 0, n = static_cast<size_t>({n_of(o.len_expr, 'a.')}); i < n; ++i) {m}[i] = f.handle<Elem<decltype({m})>>(false);"
                )
            elif o.kind is OutKind.SCALAR:
                L.append(f"  if ({m}) f.scalar(*{m});")
            elif o.kind is OutKind.COUNT:
                arr = arrays_of_count.get(o.name)
                T = f"std::remove_reference_t<decltype(*{m})>"
                L.append(f"  if ({m}) {{")
                if arr:
                    # a driver writes at most the capacity; 64 keeps hostile capacities cheap
                    L.append(
                        f"    if (a.{arr.name}) *{m} = static_cast<{T}>(f.rng.below(std::min<uint64_t>(static_cast<uint64_t>(*{m}), 64) + 1));"
                    )
                    L.append(f"    else *{m} = static_cast<{T}>(f.rng.below(6));")
                    L.append(f"    if (a.{arr.name}) {{")
                    L.append(f"      const size_t n = static_cast<size_t>(*{m});")
                    L += ["      " + x for x in self.fill_out_array(arr, f"a.{arr.name}")]
                    L.append("    }")
                else:
                    L.append(f"    *{m} = static_cast<{T}>(f.rng.below(6));")
                L.append("  }")
            elif o.kind is OutKind.STRUCT:
                L.append(f"  if ({m}) fill_random_{o.type}(f, *{m}, 0, 1);")
            elif o.kind in (OutKind.STRUCT_ARRAY, OutKind.BYTES, OutKind.SCALAR_ARRAY) and not o.two_call:
                L.append(f"  if ({m}) {{")
                L.append(f"    const size_t n = static_cast<size_t>({n_of(o.len_expr, 'a.')});")
                L += ["    " + x for x in self.fill_out_array(o, m)]
                L.append("  }")
        if s.cmd.ret != "void":
            L.append("  f.scalar(a.result);")
        L.append("}")
        L.append("")
        L.append(f"static bool equal_args_{s.name}(const Args_{s.name}& a, const Args_{s.name}& b, Diff& d) {{")
        L.append("  (void)a; (void)b; (void)d;")
        L.append("  const unsigned flags = 0;")
        L.append("  (void)flags;")
        L += ["  " + x for x in self.equal_lines(fields, s.name, names, "a.", "b.", bool(s.trailing))]
        L.append("  return true;")
        L.append("}")
        L.append("")
        L.append(f"static void handler_{s.name}(HostContext& hc, Args_{s.name}& a) {{")
        L.append("  auto& t = static_cast<TestHost&>(hc);")
        L.append("  Diff d;")
        L.append(f"  equal_args_{s.name}(a, a, d);  // reads every decoded input, as a driver would")
        L.append(f"  fill_outputs_{s.name}(*t.fill, a);")
        L.append(f"  t.capture(kCmd_{s.name}, &a, sizeof(a));")
        L.append("}")
        L.append("")
        # ---- the case
        L.append(f"struct Case_{s.name} final : CommandCase {{")
        L.append(f"  Args_{s.name} in{{}};")
        L.append(f"  Args_{s.name} got{{}};")
        ret_void = s.cmd.ret == "void"
        if s.sync and not ret_void:
            L.append(f"  {s.cmd.ret} ret{{}};")
        L.append(
            f'  Case_{s.name}() : CommandCase("{s.name}", kCmd_{s.name}, {str(s.fixed).lower()}, {str(s.sync).lower()}) {{}}'
        )
        L.append("  void make(Env& e) override {")
        L.append("    Fill& f = e.fill;")
        L.append("    const int d = 0;")
        L.append("    (void)d;")
        L.append(f"    in = Args_{s.name}{{}};")
        L.append(f"    got = Args_{s.name}{{}};")
        extra = []
        for o in s.outs:
            if (
                o.kind in (OutKind.HANDLE_ARRAY, OutKind.STRUCT_ARRAY, OutKind.BYTES, OutKind.SCALAR_ARRAY)
                and not o.two_call
            ):
                extra.append((o.len_expr, o.kind is OutKind.STRUCT_ARRAY))
        L += ["    " + x for x in self.fill_lines(fields, "in.", names, extra, top=True)]
        # A strided array (vk.xml's stride) is filled packed; the host hands the driver that stride.
        for p in s.cmd.params:
            if p.stride:
                L.append(f"    in.{p.stride} = sizeof({p.type});")
        # output storage on the guest side: counts first, their arrays use them as capacity
        for o in [o for o in s.outs if o.kind is OutKind.COUNT] + [o for o in s.outs if o.kind is not OutKind.COUNT]:
            m = f"in.{o.name}"
            E = self.out_elem(o)
            if o.kind is OutKind.HANDLE:
                L.append(f"    {m} = f.pool.make<{E}>(1);")
                L.append(f"    *{m} = f.handle<{E}>(false);")
            elif o.kind is OutKind.HANDLE_ARRAY:
                L.append("    {")
                L.append(f"      const size_t n = static_cast<size_t>({n_of(o.len_expr, 'in.')});")
                L.append(f"      {m} = f.pool.make<{E}>(n);")
                L.append(f"      for (size_t i = 0; i < n; ++i) {m}[i] = f.handle<{E}>(false);")
                L.append("    }")
            elif o.kind is OutKind.SCALAR:
                L.append(f"    {m} = f.pool.make<{E}>(1);")
            elif o.kind is OutKind.COUNT:
                L.append(f"    {m} = f.pool.make<{E}>(1);")
                L.append(f"    *{m} = static_cast<{E}>(f.rng.below(4));")
            elif o.kind is OutKind.STRUCT:
                L.append(f"    {m} = f.pool.make<{E}>(1);")
                L += ["    " + x for x in self.out_header(o, f"{m}[0]", first=True)]
            elif o.kind in (OutKind.STRUCT_ARRAY, OutKind.BYTES, OutKind.SCALAR_ARRAY):
                L.append("    {")
                if o.two_call:
                    L.append(f"      const size_t n = static_cast<size_t>(*in.{o.two_call});")
                    L.append("      const bool absent = f.rng.one_in(3);")
                else:
                    L.append(f"      const size_t n = static_cast<size_t>({n_of(o.len_expr, 'in.')});")
                    L.append("      const bool absent = false;")
                L.append(f"      {m} = absent ? nullptr : reinterpret_cast<decltype({m})>(f.pool.make<{E}>(n));")
                if o.kind is OutKind.STRUCT_ARRAY:
                    L.append("      for (size_t i = 0; !absent && i < n; ++i) {")
                    L += ["        " + x for x in self.out_header(o, f"{m}[i]", first=False)]
                    L.append("      }")
                L.append("    }")
        args = ", ".join(f"in.{p.name}" for p in s.cmd.params)
        if s.trailing:
            L.append(f"    encode_{s.name}(e.packed, e.handles, {args});")
            L.append("    e.set_message(e.packed.data(), e.packed.size());")
        elif s.fixed:
            L.append(f"    {s.name}_s w;")
            L.append("    std::memset(&w, 0, sizeof(w));")
            L.append(f"    encode_{s.name}(w, e.handles, {args});")
            L.append("    e.set_message(&w, sizeof(w));")
        else:
            L.append(f"    encode_{s.name}(e.b, e.handles, {args});")
            L.append("    e.set_message(e.b.GetBufferPointer(), e.b.GetSize());")
        L.append("    e.host.expect(id, &got, sizeof(got));")
        L.append("  }")
        # ---- args check
        L.append("  bool check_args(Diff& d) override {")
        L.append(f"    if (!equal_args_{s.name}(in, got, d)) return false;")
        for o in s.outs:
            where = f'"{s.name}.{o.name}"'
            if o.kind is OutKind.HANDLE:
                L.append(f"    if (got.id_{o.name} != handle_bits(*in.{o.name})) return d.at({where});")
            elif o.kind is OutKind.HANDLE_ARRAY:
                L.append("    {")
                L.append(f"      const size_t n = static_cast<size_t>({n_of(o.len_expr, 'in.')});")
                L.append(f"      if (!got.ids_{o.name} || got.ids_{o.name}->size() != n) return d.at({where});")
                L.append(
                    f"      for (size_t i = 0; i < n; ++i) if (got.ids_{o.name}->Get(static_cast<flatbuffers::uoffset_t>(i)) != handle_bits(in.{o.name}[i])) return d.at({where});"
                )
                L.append("    }")
            elif o.kind is OutKind.COUNT:
                arr = arrays_of_count.get(o.name)
                want = f"(in.{arr.name} ? static_cast<uint64_t>(*in.{o.name}) + 1 : 0)" if arr else "0"
                L.append(f"    if (got.cap_{o.name} != {want}) return d.at({where});")
            elif o.kind is OutKind.STRUCT and self.reg.struct(o.type).member("pNext"):
                L.append(f"    if (!same_stypes(in.{o.name}->pNext, got.v_{o.name}.pNext)) return d.at({where});")
            elif o.kind is OutKind.STRUCT_ARRAY and self.reg.struct(o.type).member("pNext"):
                L.append(f"    if (in.{o.name} && got.{o.name}) {{")
                if o.two_call:
                    L.append(f"      const size_t n = static_cast<size_t>(*in.{o.two_call});")
                else:
                    L.append(f"      const size_t n = static_cast<size_t>({n_of(o.len_expr, 'in.')});")
                L.append(
                    f"      for (size_t i = 0; i < n; ++i) if (!same_stypes(in.{o.name}[i].pNext, got.{o.name}[i].pNext)) return d.at({where});"
                )
                L.append("    }")
        L.append("    return true;")
        L.append("  }")
        # ---- reply
        if s.sync:
            L.append("  bool decode_reply(DecodeContext& c, const uint8_t* data, size_t size) override {")
            call = f"decode_reply_{s.name}(c, data, size, {args})"
            L.append(f"    {'ret = ' if not ret_void else ''}{call};")
            L.append("    return c.error.empty();")
            L.append("  }")
            L.append("  bool check_reply(Diff& d) override {")
            L.append("    (void)d;")
            for o in s.outs:
                where = f'"{s.name}.{o.name}"'
                m = f"in.{o.name}"
                if o.kind is OutKind.SCALAR:
                    L.append(
                        f"    if (std::memcmp({m}, &got.v_{o.name}, sizeof(got.v_{o.name})) != 0) return d.at({where});"
                    )
                elif o.kind is OutKind.COUNT:
                    L.append(f"    if (*{m} != got.v_{o.name}) return d.at({where});")
                    arr = arrays_of_count.get(o.name)
                    if arr:
                        L.append(f"    if (in.{arr.name}) {{")
                        L.append(f"      const size_t n = static_cast<size_t>(got.v_{o.name});")
                        L += ["      " + x for x in self.compare_out_array(arr, s.name)]
                        L.append("    }")
                elif o.kind is OutKind.STRUCT:
                    L.append(f"    if (!equal_{o.type}(*{m}, got.v_{o.name}, d, kInto)) return d.at({where});")
                elif o.kind in (OutKind.STRUCT_ARRAY, OutKind.BYTES, OutKind.SCALAR_ARRAY) and not o.two_call:
                    L.append("    {")
                    L.append(f"      const size_t n = static_cast<size_t>({n_of(o.len_expr, 'in.')});")
                    L += ["      " + x for x in self.compare_out_array(o, s.name)]
                    L.append("    }")
            if not ret_void:
                L.append(f'    if (std::memcmp(&ret, &got.result, sizeof(ret)) != 0) return d.at("{s.name}.result");')
            L.append("    return true;")
            L.append("  }")
            res = "static_cast<int32_t>(got.result)" if s.cmd.ret == "VkResult" else "0"
            L.append(f"  int32_t reply_result() const override {{ return {res}; }}")
        L.append("};")
        L.append("")
        return "\n".join(L)

    def fill_out_array(self, o, m: str) -> list[str]:
        if o.kind is OutKind.STRUCT_ARRAY:
            return [f"for (size_t i = 0; i < n; ++i) fill_random_{o.type}(f, {m}[i], 0, 1);"]
        if o.kind is OutKind.BYTES:
            return [f"f.bytes({m}, n);"]
        return [f"f.bytes({m}, n * sizeof(*{m}));"]

    def compare_out_array(self, o, cmd: str) -> list[str]:
        where = f'"{cmd}.{o.name}"'
        m, g = f"in.{o.name}", f"got.{o.name}"
        if o.kind is OutKind.STRUCT_ARRAY:
            return [
                f"for (size_t i = 0; i < n; ++i) if (!equal_{o.type}({m}[i], {g}[i], d, kInto)) return d.at({where});"
            ]
        if o.kind is OutKind.BYTES:
            return [f"if (n && std::memcmp({m}, {g}, n) != 0) return d.at({where});"]
        return [f"if (n && std::memcmp({m}, {g}, n * sizeof(*{m})) != 0) return d.at({where});"]

    def out_header(self, o, elem: str, first: bool) -> list[str]:
        """sType and a chain skeleton for an output struct the host fills. Elements of an
        array share the first element's chain shape (the guest sends one skeleton)."""
        st = self.reg.struct(o.type)
        L = []
        if st.stype:
            L.append(f"{elem}.sType = {st.stype};")
        if st.member("pNext") and self.has_chain(o.type):
            if first:
                L.append(f"{elem}.pNext = const_cast<void*>(random_chain_{o.type}(f, 0));")
            else:
                L.append(
                    f"{elem}.pNext = i == 0 ? const_cast<void*>(random_chain_{o.type}(f, 0)) : clone_chain(f, in.{o.name}[0].pNext);"
                )
        return L

    # ------------------------------------------------------------------ files
    def header(self) -> str:
        L = [banner("gen_tests.py", self.reg), "#pragma once", "", '#include "wire_test_support.h"', "", NS_OPEN]
        for s in self.sg.chainable:
            L.append(f"VkBaseOutStructure* link_{s}(Fill& f, int d);")
        for s in self.structs:
            if self.has_chain(s):
                L.append(f"const void* random_chain_{s}(Fill& f, int d);")
            L.append(f"void fill_random_{s}(Fill& f, {s}& x, int d, int mode);")
            L.append(f"bool equal_{s}(const {s}& a, const {s}& b, Diff& d, unsigned flags);")
        L.append("")
        L.append(NS_CLOSE)
        return "\n".join(L) + "\n"

    def tables_file(self) -> str:
        L = [banner("gen_tests.py", self.reg), include("wire_tests.h"), "", "#include <cstddef>", "", NS_OPEN]
        # struct cases are defined in the category files; declare their round trips
        for s in self.structs:
            L.append(f"bool roundtrip_struct_{s}(Env& e, Diff& d);")
        for sh in self.cg.shapes:
            L.append(f"std::unique_ptr<CommandCase> make_case_{sh.name}();")
        L.append("")
        L.append("const StructCase kStructCases[] = {")
        for s in self.structs:
            L.append(f'  {{"{s}", roundtrip_struct_{s}}},')
        L.append("};")
        L.append("const size_t kStructCaseCount = std::size(kStructCases);")
        L.append("")
        L.append("const CommandCaseInfo kCommandCases[] = {")
        for sh in self.cg.shapes:
            L.append(
                f'  {{"{sh.name}", kCmd_{sh.name}, {str(sh.fixed).lower()}, {str(sh.sync).lower()}, make_case_{sh.name}}},'
            )
        L.append("};")
        L.append("const size_t kCommandCaseCount = std::size(kCommandCases);")
        L.append("")
        # field ids the codecs use, per table, checked against the compiled schema
        L.append("// Field name and voffset of every table the codecs write.")
        entries = []
        for s in self.structs:
            entries.append((s, [(f.name, f.voffset) for f in self.p.struct_fields(s)]))
        for sh in self.cg.shapes:
            if sh.fixed:
                continue
            fl = [(f.name, f.voffset) for f in sh.fields]
            fl += [(f"in_{o.name}", o.in_voffset) for o, _ in self.cg.in_out_fields(sh)]
            entries.append((f"{sh.name}_args", fl))
            if sh.sync:
                rf = [("result", 4)] + [
                    (o.name, o.voffset) for o in sh.outs if o.kind not in (OutKind.HANDLE, OutKind.HANDLE_ARRAY)
                ]
                entries.append((f"{sh.name}_reply", rf))
        for i, (name, fl) in enumerate(entries):
            body = ", ".join(f'{{"{n}", {vo}}}' for n, vo in fl) or "{nullptr, 0}"
            L.append(f"static const FieldSlot kSlots{i}[] = {{{body}}};")
        L.append("const TableLayout kTableLayouts[] = {")
        for i, (name, fl) in enumerate(entries):
            L.append(f'  {{"bypass.wire.{name}", kSlots{i}, {len(fl)}}},')
        L.append("};")
        L.append("const size_t kTableLayoutCount = std::size(kTableLayouts);")
        L.append("")
        L.append("// Fixed-layout commands: the C struct the codecs memcpy, for the schema's struct.")
        fixed = [sh for sh in self.cg.shapes if sh.fixed]
        for sh in fixed:
            body = ", ".join(f'{{"{f.name}", offsetof({sh.name}_s, {f.name})}}' for f in sh.head)
            L.append(f"static const FieldSlot kFixed_{sh.name}[] = {{{body}}};")
        L.append("const FixedLayout kFixedLayouts[] = {")
        for sh in fixed:
            L.append(
                f'  {{"bypass.wire.{sh.name}_s", sizeof({sh.name}_s), alignof({sh.name}_s), kFixed_{sh.name}, {len(sh.head)}}},'
            )
        L.append("};")
        L.append("const size_t kFixedLayoutCount = std::size(kFixedLayouts);")
        L.append("")
        L.append("const CommandIdEntry kCommandIdTable[] = {")
        for sh in self.cg.shapes:
            L.append(f'  {{"{sh.name}", kCmd_{sh.name}}},')
        L.append("};")
        L.append("const size_t kCommandIdCount = std::size(kCommandIdTable);")
        L.append("")
        L.append(NS_CLOSE)
        return "\n".join(L)

    def handlers_file(self) -> str:
        L = [banner("gen_tests.py", self.reg), include("wire_tests.h"), "", NS_OPEN]
        for sh in self.cg.shapes:
            L.append(f"void install_handler_{object_of(sh, self.reg)}(Handlers& h);")
        L = list(dict.fromkeys(L))
        L.append("")
        L.append("Handlers test_handlers() {")
        L.append("  Handlers h;")
        for obj in OBJECTS:
            if any(object_of(sh, self.reg) == obj for sh in self.cg.shapes):
                L.append(f"  install_handler_{obj}(h);")
        L.append("  return h;")
        L.append("}")
        L.append("")
        L.append(NS_CLOSE)
        return "\n".join(L)

    def write(self, outdir: str) -> list[str]:
        files = {
            "wire_tests.h": self.header(),
            "links.cpp": self.links_file(),
            "tables.cpp": self.tables_file(),
            "handlers.cpp": self.handlers_file(),
        }
        cats: dict[str, list[str]] = {}
        for s in self.structs:
            cats.setdefault(self.p.category(s), []).append(s)
        for cat, names in sorted(cats.items()):
            body = [banner("gen_tests.py", self.reg), include("wire_tests.h"), "", NS_OPEN]
            for s in names:
                body.append(self.struct_code(s))
            body.append(NS_CLOSE)
            files[f"structs_{cat}.cpp"] = "\n".join(body)
        for obj in OBJECTS:
            group = [sh for sh in self.cg.shapes if object_of(sh, self.reg) == obj]
            body = [banner("gen_tests.py", self.reg), include("wire_tests.h"), "", NS_OPEN]
            for sh in group:
                body.append(self.command_code(sh))
                body.append(
                    f"std::unique_ptr<CommandCase> make_case_{sh.name}() {{ return std::make_unique<Case_{sh.name}>(); }}"
                )
                body.append("")
            body.append(f"void install_handler_{obj}(Handlers& h) {{")
            body.append("  (void)h;")
            for sh in group:
                body.append(f"  h.{sh.name} = handler_{sh.name};")
            body.append("}")
            body.append("")
            body.append(NS_CLOSE)
            files[f"commands_{obj}.cpp"] = "\n".join(body)
        # Sources in outdir, the header under outdir/include/bypass/wire/gen/.
        write_files(outdir, os.path.join(outdir, "include", "bypass", "wire", "gen"), files)
        return sorted(files)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--registry", default="/usr/share/vulkan/registry/vk.xml")
    ap.add_argument("--out", required=True)
    ap.add_argument("--stamp")
    args = ap.parse_args()
    proto = Protocol(Registry(args.registry))
    sg = StructGenerator(proto)
    cg = CommandGenerator(proto, sg)
    files = TestGenerator(proto, sg, cg).write(args.out)
    print(f"gen_tests: {len(sg.structs)} structs, {len(cg.shapes)} commands, {len(files)} files")
    if args.stamp:
        with open(args.stamp, "w") as f:
            f.write("ok\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
