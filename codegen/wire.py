"""Wire shapes: how each struct member and command parameter crosses the wire.

The registry model says what a C declaration is; this module decides what it becomes in a
FlatBuffers table (its `Field`), and which commands and structs the protocol covers. Every
generator reads the same shapes, so the schema, the encoders and the decoders cannot drift.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from enum import Enum

from model import Command, Member, Registry

DATA = os.path.join(os.path.dirname(__file__), "data")
CORE_VERSIONS = ["VK_VERSION_1_0", "VK_VERSION_1_1", "VK_VERSION_1_2", "VK_VERSION_1_3"]
SIDES = ("guest", "host", "both")  # the second column of handwritten.txt
EXTENSION_OWNERS = ("host", "guest", "loader", "bypassd")  # the second column of extensions.txt


def read_list(name: str) -> list[str]:
    out = []
    with open(os.path.join(DATA, name)) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                out.append(line)
    return out


def read_table(name: str) -> dict[str, str]:
    """`key  value...` lines; the value is the rest of the line."""
    out = {}
    for line in read_list(name):
        parts = line.split(None, 1)
        out[parts[0]] = parts[1] if len(parts) > 1 else ""
    return out


class Unsupported(Exception):
    pass


def voffset(index: int) -> int:
    """The vtable offset of FlatBuffers field `index`: two bytes per field after the vtable's
    own two 16-bit sizes."""
    return 4 + 2 * index


class _Kind(Enum):
    """A kind is compared by identity only: comparing one with a string (the old
    representation) raises instead of silently being false."""

    def __eq__(self, other):
        if isinstance(other, str):
            raise TypeError(f"{type(self).__name__}.{self.name} compared with the string {other!r}")
        return self is other

    def __hash__(self):
        return hash(self.name)


class FieldKind(_Kind):
    """What a struct member or input parameter becomes on the wire."""

    SCALAR = "value of a scalar type (ctype/ftype)"
    HANDLE = "a handle id (ulong)"
    STRUCT = "nested struct by value (table)"
    UNION = "union by value, raw bytes (no pointers inside)"
    FIXED_SCALAR = "fixed array of scalars (vector of scalars, all `count` elements)"
    FIXED_STRING = "char[N] (string)"
    FIXED_STRUCT = "fixed array of structs (vector of tables)"
    FIXED_HANDLE = "fixed array of handles (vector of ulong)"
    PTR_STRUCT = "pointer to one struct (table, absent = NULL; rejected unless optional)"
    ARRAY_STRUCT = "pointer to `len` structs (vector of tables)"
    ARRAY_SCALAR = "pointer to `len` scalars (vector)"
    ARRAY_HANDLE = "pointer to `len` handles (vector of ulong)"
    ARRAY_UNION = "pointer to `len` unions (vector of ubyte)"
    STRING = "const char* (string, absent = NULL)"
    STRING_ARRAY = "const char* const* with `len` (vector of strings)"
    BYTES = "const void* with a byte length (vector of ubyte)"
    CHAIN = "pNext (vector of ChainLink)"

    @property
    def is_array(self) -> bool:
        """A pointer to `len_expr` elements."""
        return self in _ARRAY_KINDS

    @property
    def is_pointer(self) -> bool:
        """Read through a pointer: decoded in the second pass, skipped when decoding into an
        output struct (whose pointers the caller owns)."""
        return self in _ARRAY_KINDS or self in (FieldKind.PTR_STRUCT, FieldKind.STRING)


_ARRAY_KINDS = frozenset(
    {
        FieldKind.ARRAY_STRUCT,
        FieldKind.ARRAY_SCALAR,
        FieldKind.ARRAY_HANDLE,
        FieldKind.ARRAY_UNION,
        FieldKind.BYTES,
        FieldKind.STRING_ARRAY,
    }
)


class OutKind(_Kind):
    """What an output parameter of a command is."""

    NONE = "not classified yet"
    HANDLE = "a new handle: its guest-chosen id is sent as an input"
    HANDLE_ARRAY = "new handles: their ids are sent as an input"
    STRUCT = "one struct"
    STRUCT_ARRAY = "structs, of a two-call count or a fixed length"
    SCALAR = "one scalar"
    SCALAR_ARRAY = "scalars"
    BYTES = "untyped bytes with a length"
    COUNT = "the uint32_t*/size_t* count of a two-call idiom"


@dataclass
class Field:
    """One member/parameter on the wire (see FieldKind); output-only parameters of commands
    are OutParams."""

    name: str
    kind: FieldKind
    member: Member
    type: str = ""  # resolved base type
    ctype: str = ""  # C storage type for scalars
    ftype: str = ""  # flatbuffers scalar type
    size: int = 0  # scalar size in bytes
    count: str = ""  # C expression (fixed arrays: constant) for the element count
    len_expr: str = ""  # raw length expression in source terms (member/param names)
    optional: bool = False
    # array_handle: elements may be VK_NULL_HANDLE. vk.xml says so with a second `optional`
    # value ("false,true": vkCmdBindVertexBuffers' pBuffers), or leaves the elements to the
    # spec's text with noautovalidity (vkCmdBeginTransformFeedbackEXT's pCounterBuffers,
    # vkFreeCommandBuffers' pCommandBuffers, VkFramebufferCreateInfo's pAttachments), whose
    # rules all allow VK_NULL_HANDLE there.
    null_elements: bool = False
    index: int = 0  # field id in the table
    condition: str = ""  # C condition in source terms under which the member is read

    @property
    def voffset(self) -> int:
        return voffset(self.index)

    @property
    def vo(self) -> str:
        """The voffset as generated C++ writes it: with the field's name."""
        return f"{self.voffset} /* {self.name} */"


@dataclass
class OutParam:
    """An output parameter of a command (see OutKind)."""

    name: str
    kind: OutKind
    member: Member
    type: str = ""
    len_expr: str = ""  # element count, in parameter terms
    two_call: str = ""  # name of the count parameter for the two-call idiom
    index: int = 0  # reply field index
    in_index: int = -1  # args field index for ids / chain skeleton / capacity

    @property
    def voffset(self) -> int:
        """Of the reply field."""
        return voffset(self.index)

    @property
    def in_voffset(self) -> int:
        """Of the input field derived from this output (in_index)."""
        return voffset(self.in_index)

    @property
    def vo(self) -> str:
        """voffset as generated C++ writes it: with the field's name."""
        return f"{self.voffset} /* {self.name} */"

    @property
    def in_vo(self) -> str:
        """in_voffset as generated C++ writes it: with the field's name."""
        return f"{self.in_voffset} /* in_{self.name} */"


@dataclass
class CommandShape:
    cmd: Command
    name: str  # canonical name
    level: str
    fields: list[Field]  # input fields (args table)
    outs: list[OutParam]
    status: str  # generated | handwritten | unsupported: <reason>
    sync: bool = False
    blocking: bool = False
    # async_unasked.txt: a sync command the guest may send without asking for the reply.
    unasked: bool = False
    fixed: bool = False  # encoded as a plain struct (params scalar/handle, no reply), see `trailing`
    # Fixed-layout commands with arrays ("packed"): arrays of plain data that follow the struct
    # in the record, each 8-aligned, each counted by a scalar of the struct or a constant.
    trailing: list[Field] = field(default_factory=list)
    reply_fields: int = 0
    aliases: list[str] = field(default_factory=list)
    origin: str = ""  # VK_VERSION_x or extension name
    wire: bool = True  # False: hand-written and without a generated message
    hand: str = ""  # the side written by hand (handwritten.txt): "", guest, host or both

    @property
    def head(self) -> list[Field]:
        """A fixed-layout command's struct members: its scalar and handle parameters."""
        return [f for f in self.fields if f.kind in (FieldKind.SCALAR, FieldKind.HANDLE)]

    @property
    def returns_result(self) -> bool:
        return self.cmd.ret == "VkResult"

    @property
    def guest_handwritten(self) -> bool:
        """The ICD defines icd_vkX instead of a generated entry_vkX."""
        return self.hand in ("guest", "both")

    @property
    def host_handwritten(self) -> bool:
        """bypassd defines handle_vkX, registered in place of default_vkX."""
        return self.hand in ("host", "both")


class Protocol:
    """The covered subset of the registry and the wire shape of each piece of it."""

    def __init__(self, reg: Registry, require_ids: bool = True):
        self.reg = reg
        self.require_ids = require_ids
        self.extension_owners = self._read_extensions()
        # The extensions the protocol covers, in file order (loader-level ones carry nothing).
        self.extensions = [x for x, (owner, _) in self.extension_owners.items() if owner != "loader"]
        self.handwritten = self._read_handwritten()
        self.async_cmds = set(read_list("async.txt"))
        self.async_unasked = set(read_list("async_unasked.txt"))
        self.blocking = set(read_list("blocking.txt"))
        self.barriers = read_table("barriers.txt")
        self.conditions = read_table("conditions.txt")
        self.unchecked_enums = read_table("unchecked_enums.txt")
        self.ids = self._read_ids()
        self.origin: dict[str, str] = {}
        self.covered: list[str] = []  # canonical command names, in id order
        self.aliases: dict[str, str] = {}  # alias name -> canonical, for covered commands
        self._collect()
        self.structs = self._collect_structs()
        self.shapes: dict[str, CommandShape] = {}
        for name in self.covered:
            self.shapes[name] = self._command_shape(name)

    # ------------------------------------------------------------------ selection
    def _read_extensions(self) -> dict[str, tuple[str, set[str]]]:
        """extensions.txt: extension -> (owner, flags)."""
        out = {}
        for name, rest in read_table("extensions.txt").items():
            owner, *flags = rest.split() or [""]
            if owner not in EXTENSION_OWNERS:
                raise SystemExit(f"codegen: extensions.txt: {name}: owner {owner!r} is not one of {EXTENSION_OWNERS}")
            if set(flags) - {"fd"} or name not in self.reg.extensions:
                raise SystemExit(f"codegen: extensions.txt: {name}: unknown extension or flag {flags}")
            out[name] = (owner, set(flags))
        return out

    @staticmethod
    def _read_handwritten() -> dict[str, str]:
        """handwritten.txt: command -> the side written by hand (guest, host or both)."""
        out = {}
        for name, rest in read_table("handwritten.txt").items():
            side = rest.split(None, 1)[0] if rest else ""
            if side not in SIDES:
                raise SystemExit(f"codegen: handwritten.txt: {name}: side {side!r} is not one of {SIDES}")
            out[name] = side
        return out

    def _read_ids(self) -> dict[str, int]:
        ids = {}
        for line in read_list("command_ids.txt"):
            num, name = line.split()
            ids[name] = int(num)
        return ids

    def _collect(self) -> None:
        reg = self.reg
        names: list[str] = []
        for v in CORE_VERSIONS:
            for c in reg.features[v]:
                canon = reg.canonical_command(c)
                self.origin.setdefault(canon, v)
                if c != canon:
                    self.aliases[c] = canon
                names.append(canon)
        for x in self.extensions:
            for c in self._extension_commands(x):
                canon = reg.canonical_command(c)
                self.origin.setdefault(canon, x)
                if c != canon:
                    self.aliases[c] = canon
                names.append(canon)
        seen = set()
        for n in names:
            if n not in seen:
                seen.add(n)
                self.covered.append(n)
        self.covered.sort(key=lambda n: self.ids.get(n, 1 << 30))

    def _extension_commands(self, xname: str) -> list[str]:
        """Commands of an extension, skipping `require` blocks that depend on something
        outside the covered set."""
        covered = set(self.extensions) | set(CORE_VERSIONS)
        for x in self.reg.root.find("extensions"):
            if x.get("name") != xname:
                continue
            out = []
            for req in x.findall("require"):
                if req.get("api") and "vulkan" not in req.get("api").split(","):
                    continue
                dep = req.get("depends") or req.get("extension") or req.get("feature") or ""
                if dep:
                    alternatives = dep.split(",")
                    ok = any(all(tok.strip("()") in covered for tok in alt.split("+")) for alt in alternatives)
                    if not ok:
                        continue
                out += [c.get("name") for c in req.findall("command")]
            return out
        return []

    def _collect_structs(self) -> list[str]:
        """Every struct reachable from covered commands, plus chainable structs of covered
        features/extensions (so a guest chain that carries them is understood)."""
        reg = self.reg
        required_types: set[str] = set()
        for f in reg.root.findall("feature"):
            if f.get("name") in CORE_VERSIONS:
                for t in f.iter("type"):
                    required_types.add(t.get("name"))
        for x in reg.root.find("extensions"):
            if x.get("name") in self.extensions:
                for t in x.iter("type"):
                    if t.get("name"):
                        required_types.add(t.get("name"))
        order: list[str] = []
        seen: set[str] = set()

        def visit(name: str) -> None:
            name = reg.resolve(name)
            if name in seen or name not in reg.structs:
                return
            seen.add(name)
            for m in reg.structs[name].members:
                visit(m.type)
            order.append(name)

        for cname in self.covered:
            for p in reg.commands[cname].params:
                visit(p.type)
        for t in sorted(required_types):
            t = reg.resolve(t)
            if t in reg.structs and reg.structs[t].extends:
                visit(t)
        self.chainable = sorted({s for s in seen if reg.structs[s].extends and reg.structs[s].stype})
        return order

    # ------------------------------------------------------------------ struct shapes
    def struct_fields(self, sname: str) -> list[Field]:
        cache = getattr(self, "_sf_cache", None)
        if cache is None:
            cache = self._sf_cache = {}
        if sname in cache:
            return cache[sname]
        reg = self.reg
        s = reg.struct(sname)
        out: list[Field] = []
        names = {m.name for m in s.members}
        for m in s.members:
            if m.name == "sType" and m.values:
                continue
            f = self._member_field(m, names, struct_ctx=True, owner=sname)
            if f is None:
                continue
            f.condition = self.conditions.get(f"{sname}.{m.name}", "")
            f.index = len(out)
            out.append(f)
        cache[sname] = out
        return out

    def struct_unsupported(self, sname: str) -> str | None:
        """A reason the struct cannot be carried, or None."""
        cache = getattr(self, "_su_cache", None)
        if cache is None:
            cache = self._su_cache = {}
        if sname in cache:
            return cache[sname]
        cache[sname] = None  # break recursion
        reason = None
        try:
            for f in self.struct_fields(sname):
                if f.kind in (FieldKind.STRUCT, FieldKind.PTR_STRUCT, FieldKind.ARRAY_STRUCT, FieldKind.FIXED_STRUCT):
                    r = self.struct_unsupported(f.type)
                    if r:
                        reason = f"{sname}.{f.name}: {r}"
                        break
        except Unsupported as e:
            reason = str(e)
        cache[sname] = reason
        return reason

    def _member_field(self, m: Member, names: set[str], struct_ctx: bool, owner: str) -> Field | None:
        reg = self.reg
        t = reg.resolve(m.type)
        where = f"{owner}.{m.name}"
        optional = bool(m.optional and m.optional[0])
        if m.name == "pNext" and t == "void":
            return Field(m.name, FieldKind.CHAIN, m, type=t)
        if t == "VkAllocationCallbacks" or t in reg.funcpointers:
            return None  # stays in the guest
        if m.name == "pUserData" and t == "void" and m.ptr == 1 and not m.len:
            return None
        if m.bitfield:
            raise Unsupported(f"{where}: bitfield member")
        sc = reg.scalar_info(t)
        if m.array:
            if len(m.array) > 1:
                raise Unsupported(f"{where}: multi-dimensional array")
            count = str(reg.constant(m.array[0])) if not m.array[0].isdigit() else m.array[0]
            if t == "char":
                return Field(m.name, FieldKind.FIXED_STRING, m, type=t, count=count)
            if sc:
                return Field(
                    m.name, FieldKind.FIXED_SCALAR, m, type=t, ctype=sc[1], ftype=sc[0], size=sc[2], count=count
                )
            if reg.is_handle(t):
                return Field(m.name, FieldKind.FIXED_HANDLE, m, type=t, count=count)
            if reg.is_struct(t):
                return Field(m.name, FieldKind.FIXED_STRUCT, m, type=t, count=count)
            raise Unsupported(f"{where}: fixed array of {t}")
        if m.ptr == 0:
            if sc:
                return Field(m.name, FieldKind.SCALAR, m, type=t, ctype=sc[1], ftype=sc[0], size=sc[2])
            if reg.is_handle(t):
                return Field(m.name, FieldKind.HANDLE, m, type=t, optional=optional or m.noautovalidity)
            if reg.is_struct(t):
                return Field(m.name, FieldKind.STRUCT, m, type=t)
            if reg.is_union(t):
                self._check_union(t, where)
                return Field(m.name, FieldKind.UNION, m, type=t)
            raise Unsupported(f"{where}: value of type {t}")
        # pointers
        if not m.const and struct_ctx and m.ptr >= 1 and not (t == "void" and m.len):
            raise Unsupported(f"{where}: non-const pointer member")
        lens = [l for l in m.len if l != "null-terminated"]
        length = m.altlen or (lens[0] if lens else "")
        if length.startswith("latexmath"):
            raise Unsupported(f"{where}: length {length} without altlen")
        if m.ptr == 2:
            if t == "char" and m.len and m.len[-1] == "null-terminated" and length:
                return Field(m.name, FieldKind.STRING_ARRAY, m, type=t, len_expr=length, optional=optional)
            raise Unsupported(f"{where}: double pointer")
        if t == "char" and m.len == ["null-terminated"]:
            return Field(m.name, FieldKind.STRING, m, type=t, optional=optional)
        if t == "void":
            if length:
                return Field(m.name, FieldKind.BYTES, m, type=t, len_expr=length, optional=optional)
            raise Unsupported(f"{where}: untyped pointer without length")
        if not length:
            if reg.is_struct(t):
                # Required pointers (pCreateInfo, ...) must arrive: the driver would
                # dereference a NULL one, and length expressions like
                # `pAllocateInfo->descriptorSetCount` read through them.
                return Field(m.name, FieldKind.PTR_STRUCT, m, type=t, optional=optional or m.noautovalidity)
            if sc:  # pointer to a single scalar: an array of one
                return Field(
                    m.name,
                    FieldKind.ARRAY_SCALAR,
                    m,
                    type=t,
                    ctype=sc[1],
                    ftype=sc[0],
                    size=sc[2],
                    len_expr="1",
                    optional=True,
                )
            if reg.is_handle(t):
                return Field(m.name, FieldKind.ARRAY_HANDLE, m, type=t, len_expr="1", optional=True)
            if reg.is_union(t):
                self._check_union(t, where)
                return Field(m.name, FieldKind.ARRAY_UNION, m, type=t, len_expr="1", optional=True)
            raise Unsupported(f"{where}: pointer to {t} without length")
        if reg.is_struct(t):
            return Field(m.name, FieldKind.ARRAY_STRUCT, m, type=t, len_expr=length, optional=optional)
        if reg.is_handle(t):
            nulls = (len(m.optional) > 1 and m.optional[1]) or m.noautovalidity
            return Field(
                m.name, FieldKind.ARRAY_HANDLE, m, type=t, len_expr=length, optional=optional, null_elements=nulls
            )
        if sc:
            if sc[2] == 1 and t in ("uint8_t", "char"):
                return Field(
                    m.name,
                    FieldKind.ARRAY_SCALAR,
                    m,
                    type=t,
                    ctype=sc[1],
                    ftype=sc[0],
                    size=1,
                    len_expr=length,
                    optional=optional,
                )
            return Field(
                m.name,
                FieldKind.ARRAY_SCALAR,
                m,
                type=t,
                ctype=sc[1],
                ftype=sc[0],
                size=sc[2],
                len_expr=length,
                optional=optional,
            )
        if reg.is_union(t):
            self._check_union(t, where)
            return Field(m.name, FieldKind.ARRAY_UNION, m, type=t, len_expr=length, optional=optional)
        raise Unsupported(f"{where}: pointer to {t}")

    def trailable(self, f: Field, header: list[Field]) -> bool:
        """Whether command parameter f can follow a fixed-layout record as plain bytes: an array
        of non-enum scalars, bytes, handles (sent as ids) or plain structs, always present, whose
        count is a constant or one integer parameter of the record's struct."""
        if f.optional or f.condition:
            return False
        if f.kind is FieldKind.FIXED_SCALAR:
            return f.count.isdigit() and f.type not in self.reg.enums
        if f.kind not in (FieldKind.ARRAY_SCALAR, FieldKind.BYTES, FieldKind.ARRAY_HANDLE, FieldKind.ARRAY_STRUCT):
            return False
        counter = next((h for h in header if h.name == f.len_expr), None)
        if counter is None or counter.kind is not FieldKind.SCALAR or counter.ctype in ("float", "double"):
            return False
        if f.kind is FieldKind.ARRAY_SCALAR:
            return f.type not in self.reg.enums
        if f.kind is FieldKind.ARRAY_STRUCT:
            return self.plain_struct(f.type)
        return True

    def plain_struct(self, sname: str) -> bool:
        """A struct of numbers only (nested plain structs and number arrays allowed): no sType,
        pointer, handle, union or enum, so its C layout is its wire form and any bytes are a
        valid value (VkViewport, VkRect2D, VkBufferCopy)."""
        try:
            fields = self.struct_fields(sname)
        except Unsupported:
            return False
        for f in fields:
            if f.kind is FieldKind.STRUCT:
                if not self.plain_struct(f.type):
                    return False
            elif f.kind in (FieldKind.SCALAR, FieldKind.FIXED_SCALAR):
                if f.type in self.reg.enums:
                    return False
            else:
                return False
        return bool(fields) and not self.reg.struct(sname).member("sType")

    def _check_union(self, t: str, where: str) -> None:
        for m in self.reg.struct(t).members:
            mt = self.reg.resolve(m.type)
            if m.ptr or self.reg.is_handle(mt):
                raise Unsupported(f"{where}: union {t} holds pointers")
            if self.reg.is_union(mt):
                self._check_union(mt, where)
            elif self.reg.is_struct(mt):
                for mm in self.reg.struct(mt).members:
                    if mm.ptr:
                        raise Unsupported(f"{where}: union {t} holds pointers")

    # ------------------------------------------------------------------ command shapes
    def _command_shape(self, name: str) -> CommandShape:
        reg = self.reg
        cmd = reg.commands[name]
        level = reg.dispatch_level(cmd)
        shape = CommandShape(cmd, name, level, [], [], "generated", origin=self.origin.get(name, ""))
        shape.aliases = sorted(a for a, c in self.aliases.items() if c == name)
        if name in self.handwritten:
            shape.status = "handwritten"
            shape.hand = self.handwritten[name]
        try:
            self._fill_params(shape)
        except Unsupported as e:
            if shape.status != "handwritten":
                shape.status = f"unsupported: {e}"
            shape.wire = False
            return shape
        for f in shape.fields:
            if f.kind in (FieldKind.STRUCT, FieldKind.PTR_STRUCT, FieldKind.ARRAY_STRUCT):
                r = self.struct_unsupported(f.type)
                if r:
                    shape.wire = False
                if r and shape.status != "handwritten":
                    shape.status = f"unsupported: {r}"
        for o in shape.outs:
            if o.kind in (OutKind.STRUCT, OutKind.STRUCT_ARRAY):
                r = self.struct_unsupported(o.type)
                if r:
                    shape.wire = False
                if r and shape.status != "handwritten":
                    shape.status = f"unsupported: {r}"
        has_data_out = any(o.kind not in (OutKind.HANDLE, OutKind.HANDLE_ARRAY) for o in shape.outs)
        shape.blocking = name in self.blocking
        shape.unasked = name in self.async_unasked
        if cmd.ret not in ("void", "VkResult"):
            shape.sync = True
        elif has_data_out or shape.blocking:
            shape.sync = True
        elif cmd.ret == "VkResult":
            shape.sync = name not in self.async_cmds
        else:
            shape.sync = False
        if shape.unasked and (not shape.sync or shape.blocking or cmd.ret != "VkResult" or name in self.async_cmds):
            raise SystemExit(
                f"codegen: {name} in async_unasked.txt must return VkResult and be neither async nor blocking"
            )
        header = [f for f in shape.fields if f.kind in (FieldKind.SCALAR, FieldKind.HANDLE)]
        rest = [f for f in shape.fields if f.kind not in (FieldKind.SCALAR, FieldKind.HANDLE)]
        shape.fixed = (
            not shape.sync
            and not shape.outs
            and len(cmd.params) == len(shape.fields)
            and all(self.trailable(f, header) for f in rest)
            and (not rest or name not in self.barriers)
        )
        shape.trailing = rest if shape.fixed else []
        if self.require_ids and name not in self.ids and not shape.status.startswith("unsupported"):
            raise SystemExit(
                f"codegen: {name} is covered but has no id in codegen/data/command_ids.txt; "
                f"run codegen/update_ids.py"
            )
        return shape

    def _fill_params(self, shape: CommandShape) -> None:
        reg = self.reg
        cmd = shape.cmd
        pnames = {p.name for p in cmd.params}
        counts = {}  # count param -> array param, for two-call idioms
        for p in cmd.params:
            if not p.const and p.ptr == 1 and p.len:
                ln = p.len[0]
                if ln in pnames:
                    cp = next(q for q in cmd.params if q.name == ln)
                    if cp.ptr == 1 and not cp.const:
                        counts[ln] = p.name
        for p in cmd.params:
            t = reg.resolve(p.type)
            is_out = p.ptr >= 1 and not p.const and t != "void" or (t == "void" and p.ptr == 1 and not p.const)
            if p.ptr == 2 and not p.const:
                raise Unsupported(f"{cmd.name}.{p.name}: output pointer to pointer")
            if t in reg.funcpointers or t == "VkAllocationCallbacks":
                continue
            if not is_out:
                f = self._member_field(p, pnames, struct_ctx=False, owner=cmd.name)
                if f is not None:
                    f.index = len(shape.fields)
                    shape.fields.append(f)
                continue
            o = OutParam(p.name, OutKind.NONE, p, type=t)
            if p.name in counts:
                o.kind = OutKind.COUNT
                o.two_call = counts[p.name]
            elif reg.is_handle(t):
                o.kind = OutKind.HANDLE_ARRAY if p.len else OutKind.HANDLE
                o.len_expr = p.len[0] if p.len else "1"
                if o.len_expr in counts.values() or o.len_expr in counts:
                    raise Unsupported(f"{cmd.name}.{p.name}: handles returned by a two-call idiom")
            elif reg.is_struct(t):
                if p.len:
                    o.kind = OutKind.STRUCT_ARRAY
                    o.len_expr = p.len[0]
                    if p.len[0] in counts:
                        o.two_call = p.len[0]
                else:
                    o.kind = OutKind.STRUCT
            elif t == "void":
                if not p.len:
                    raise Unsupported(f"{cmd.name}.{p.name}: untyped output without length")
                o.kind = OutKind.BYTES
                o.len_expr = p.len[0]
                if p.len[0] in counts:
                    o.two_call = p.len[0]
            elif reg.scalar_info(t):
                if p.len:
                    o.kind = OutKind.SCALAR_ARRAY
                    o.len_expr = p.len[0]
                    if p.len[0] in counts:
                        o.two_call = p.len[0]
                else:
                    o.kind = OutKind.SCALAR
            else:
                raise Unsupported(f"{cmd.name}.{p.name}: output of type {t}")
            shape.outs.append(o)
        # inputs derived from outputs: guest-chosen ids, chain skeletons, capacities
        for o in shape.outs:
            if o.kind in (OutKind.HANDLE, OutKind.HANDLE_ARRAY, OutKind.COUNT) or (
                o.kind in (OutKind.STRUCT, OutKind.STRUCT_ARRAY) and reg.struct(o.type).member("pNext")
            ):
                o.in_index = len(shape.fields) + sum(1 for q in shape.outs if q.in_index >= 0)
        n_in = len(shape.fields)
        k = 0
        for o in shape.outs:
            if o.in_index >= 0:
                o.in_index = n_in + k
                k += 1
        # reply: [result][outputs...]
        for i, o in enumerate(o for o in shape.outs if o.kind not in (OutKind.HANDLE, OutKind.HANDLE_ARRAY)):
            o.index = 1 + i
        shape.reply_fields = 1 + sum(1 for o in shape.outs if o.kind not in (OutKind.HANDLE, OutKind.HANDLE_ARRAY))

    # ------------------------------------------------------------------ enum values
    def enum_values(self, type_name: str) -> list[int]:
        """The values of an enum that a guest may send: its own <enums> block plus what Vulkan
        1.0-1.3 and the covered extensions add. Empty for enums the host does not check:
        64-bit flag bits (not C enums) and enums with negative values (VkResult)."""
        t = self.reg.resolve(type_name)
        if self.reg.enum_bitwidth.get(t, 32) != 32 or t not in self.reg.enumerants:
            return []
        origins = {""} | set(CORE_VERSIONS) | set(self.extensions)
        values = sorted({v for _, v, o in self.reg.enumerants[t] if o in origins})
        return [] if not values or values[0] < 0 else values

    def enum_checked(self, owner: str, f: Field) -> bool:
        """Whether the host checks field f (of struct or command `owner`) against its enum's
        values: enum-typed scalars and arrays, except members vk.xml leaves unvalidated
        (noautovalidity: ignored unless another member says otherwise) and the members listed
        in data/unchecked_enums.txt."""
        if f.kind not in (FieldKind.SCALAR, FieldKind.ARRAY_SCALAR) or f.type not in self.reg.enums:
            return False
        if f.member.noautovalidity or f"{owner}.{f.name}" in self.unchecked_enums:
            return False
        return bool(self.enum_values(f.type))

    # ------------------------------------------------------------------ helpers
    def command_id(self, name: str) -> int:
        return self.ids[name]

    def category(self, sname: str) -> str:
        """Which struct-codec file a struct lives in."""
        o = self.struct_origin(sname)
        if o.startswith("VK_VERSION"):
            return "core" + o[-3:].replace("_", "")
        if o.startswith("VK_KHR"):
            return "khr"
        return "ext"

    def struct_origin(self, sname: str) -> str:
        cache = getattr(self, "_origin_cache", None)
        if cache is None:
            cache = self._origin_cache = {}
            for f in self.reg.root.findall("feature"):
                if f.get("name") in CORE_VERSIONS:
                    for t in f.iter("type"):
                        cache.setdefault(t.get("name"), f.get("name"))
            for x in self.reg.root.find("extensions"):
                for t in x.iter("type"):
                    if t.get("name"):
                        cache.setdefault(t.get("name"), x.get("name"))
        return cache.get(sname, "VK_VERSION_1_0")


def c_expr(expr: str, names: set[str], prefix: str) -> str:
    """Rewrite a registry length expression so member/parameter names read from `prefix`."""

    def sub(mo):
        word = mo.group(0)
        if word in names:
            return prefix + word
        return word

    return re.sub(r"(?<![\w>.])[A-Za-z_]\w*", sub, expr)
