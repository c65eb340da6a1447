"""Typed model of the Vulkan registry (vk.xml), parsed once and shared by every generator.

Only the `vulkan` API is modelled (Vulkan SC variants are dropped). The model answers the
questions the wire generators ask: what a parameter or member *is* on the wire (scalar,
handle, struct, array with a length expression, string, opaque bytes, ...), which commands
belong to which core version or extension, and which structures may extend a chain.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

API = "vulkan"

# Base C types and how they cross the wire: (flatbuffers scalar type, C type, size in bytes).
SCALARS = {
    "uint8_t": ("ubyte", "uint8_t", 1),
    "int8_t": ("byte", "int8_t", 1),
    "char": ("byte", "char", 1),
    "uint16_t": ("ushort", "uint16_t", 2),
    "int16_t": ("short", "int16_t", 2),
    "uint32_t": ("uint", "uint32_t", 4),
    "int32_t": ("int", "int32_t", 4),
    "uint64_t": ("ulong", "uint64_t", 8),
    "int64_t": ("long", "int64_t", 8),
    "float": ("float", "float", 4),
    "double": ("double", "double", 8),
    "size_t": ("ulong", "uint64_t", 8),
    "int": ("int", "int32_t", 4),
}


def _typed_by_object_type(members: list[Member]) -> list[Member]:
    """Keeps `objecttype` only where the member it names is a VkObjectType: a handle the wire
    carries as an id of that type. (vkDebugReportMessageEXT's object is typed by a
    VkDebugReportObjectTypeEXT, and may name anything: it stays a plain number.)"""
    types = {m.name: m.type for m in members}
    for m in members:
        if m.objecttype and types.get(m.objecttype) != "VkObjectType":
            m.objecttype = None
    return members


def _api_ok(elem) -> bool:
    api = elem.get("api")
    return api is None or API in api.split(",")


@dataclass
class Member:
    """A struct member or a command parameter."""

    name: str
    type: str  # base type name, e.g. "VkImageCreateInfo", "uint32_t", "void"
    ptr: int = 0  # pointer depth
    const: bool = False  # the pointee is const
    array: list[str] = field(default_factory=list)  # fixed array dimensions (literal or constant)
    len: list[str] = field(default_factory=list)  # raw `len` entries
    altlen: str | None = None
    optional: list[bool] = field(default_factory=list)
    noautovalidity: bool = False
    # A uint64_t holding a handle whose type is this other member's or parameter's VkObjectType
    # (vk.xml's objecttype: vkSetPrivateData's objectHandle, VkDebugUtilsObjectNameInfoEXT's).
    objecttype: str | None = None
    # An array whose elements lie this other parameter's number of bytes apart (vk.xml's stride:
    # vkCmdDrawMultiEXT's pVertexInfo). The wire carries them packed.
    stride: str | None = None
    values: str | None = None  # sType value for `sType` members
    bitfield: str | None = None
    decl: str = ""  # the C declaration, e.g. "const VkImageCreateInfo* pCreateInfo"


@dataclass
class Struct:
    name: str
    union: bool
    members: list[Member]
    extends: list[str] = field(default_factory=list)
    stype: str | None = None  # VK_STRUCTURE_TYPE_* of this struct, if it has an sType member

    def member(self, name: str) -> Member | None:
        for m in self.members:
            if m.name == name:
                return m
        return None


@dataclass
class Handle:
    name: str
    dispatchable: bool
    parent: str | None
    objtype: str  # VK_OBJECT_TYPE_*


@dataclass
class Command:
    name: str
    ret: str
    params: list[Member]


@dataclass
class Format:
    """A <format> of the registry's <formats> table: what buffer<->image copies need."""

    name: str
    block_size: int  # bytes per texel block
    block_extent: tuple[int, int, int]  # texels per block in x, y, z
    compressed: bool
    components: list[tuple[str, str, int]]  # (R/G/B/A/D/S..., bits or "compressed", plane index)
    planes: list[tuple[int, int, int, str]]  # (index, width divisor, height divisor, compatible format)


@dataclass
class Extension:
    name: str
    type: str  # "instance" or "device"
    commands: list[str]
    supported: list[str]
    spec_version: int = 0  # its VK_*_SPEC_VERSION
    platform: str = ""  # window system (vk.xml <platforms>) whose headers its types need


class Registry:
    def __init__(self, path: str):
        self.path = path
        self.root = ET.parse(path).getroot()
        self.constants: dict[str, str] = {}
        self.structs: dict[str, Struct] = {}
        self.handles: dict[str, Handle] = {}
        self.enums: dict[str, int] = {}  # enum type name -> bit width (32 or 64)
        self.bitmasks: dict[str, int] = {}  # VkXFlags -> 32 or 64
        self.basetypes: dict[str, str] = {}  # VkBool32 -> uint32_t ...
        self.aliases: dict[str, str] = {}  # type alias -> target
        self.funcpointers: set[str] = set()
        self.type_headers: dict[str, str] = {}  # window-system type -> the header defining it
        self.commands: dict[str, Command] = {}
        self.command_aliases: dict[str, str] = {}
        self.features: dict[str, list[str]] = {}  # VK_VERSION_1_x -> command names
        self.extensions: dict[str, Extension] = {}
        self.enum_values: dict[str, int | str] = {}  # VK_STRUCTURE_TYPE_* etc. -> value
        # Enumerants per enum type: (name, value, origin), origin "" for the type's own
        # <enums> block, else the feature (VK_VERSION_1_x) or extension that adds it.
        self.enumerants: dict[str, list[tuple[str, int, str]]] = {}
        self.enum_bitwidth: dict[str, int] = {}  # enum type -> 32 or 64 (<enums bitwidth>)
        self.formats: dict[str, Format] = {}
        self.header_version = 0
        self._parse()

    # ------------------------------------------------------------------ parsing
    def _parse(self) -> None:
        for enums in self.root.findall("enums"):
            if enums.get("name") == "API Constants":
                for e in enums.findall("enum"):
                    if e.get("alias"):
                        continue
                    self.constants[e.get("name")] = e.get("value")
        for t in self.root.find("types"):
            if t.tag != "type" or not _api_ok(t):
                continue
            self._parse_type(t)
        for enums in self.root.findall("enums"):
            name = enums.get("name")
            if enums.get("type") in ("enum", "bitmask"):
                self.enum_bitwidth[name] = int(enums.get("bitwidth") or 32)
                for e in enums.findall("enum"):
                    if _api_ok(e):
                        self._enum_value(e, None)
                        self._enumerant(name, e, "")
        for c in self.root.find("commands"):
            if c.tag == "command" and _api_ok(c):
                self._parse_command(c)
        for f in self.root.findall("feature"):
            if not _api_ok(f):
                continue
            cmds = []
            for req in f.findall("require"):
                for c in req.findall("command"):
                    cmds.append(c.get("name"))
                for e in req.findall("enum"):
                    self._enum_value(e, None)
                    if e.get("extends") and _api_ok(e) and _api_ok(req):
                        self._enumerant(e.get("extends"), e, f.get("name"))
            self.features[f.get("name")] = cmds
        for x in self.root.find("extensions"):
            supported = (x.get("supported") or "").split(",")
            number = int(x.get("number"))
            cmds = []
            spec = 0
            for req in x.findall("require"):
                if not _api_ok(req):
                    continue
                for c in req.findall("command"):
                    cmds.append(c.get("name"))
                for e in req.findall("enum"):
                    self._enum_value(e, number)
                    if e.get("extends") and _api_ok(e):
                        self._enumerant(e.get("extends"), e, x.get("name"))
                    if (e.get("name") or "").endswith("_SPEC_VERSION") and e.get("value"):
                        spec = int(e.get("value"))
            self.extensions[x.get("name")] = Extension(
                x.get("name"), x.get("type") or "", cmds, supported, spec, x.get("platform") or ""
            )
        fmts = self.root.find("formats")
        for f in fmts if fmts is not None else []:
            extent = tuple(int(x) for x in (f.get("blockExtent") or "1,1,1").split(","))
            comps = [(c.get("name"), c.get("bits"), int(c.get("planeIndex") or 0)) for c in f.findall("component")]
            planes = [
                (int(p.get("index")), int(p.get("widthDivisor")), int(p.get("heightDivisor")), p.get("compatible"))
                for p in f.findall("plane")
            ]
            self.formats[f.get("name")] = Format(
                f.get("name"), int(f.get("blockSize")), extent, bool(f.get("compressed")), comps, planes
            )
        for t in self.root.find("types"):
            if t.get("category") == "define" and t.find("name") is not None:
                if t.find("name").text == "VK_HEADER_VERSION":
                    m = re.search(r"VK_HEADER_VERSION\s+(\d+)", "".join(t.itertext()))
                    if m:
                        self.header_version = int(m.group(1))

    def _enum_value(self, e, ext_number) -> None:
        name = e.get("name")
        if e.get("alias"):
            self.enum_values.setdefault(name, e.get("alias"))
            return
        if e.get("value") is not None:
            v = e.get("value")
            try:
                self.enum_values[name] = int(v, 0)
            except ValueError:
                self.enum_values[name] = v
        elif e.get("bitpos") is not None:
            self.enum_values[name] = 1 << int(e.get("bitpos"))
        elif e.get("offset") is not None:
            num = int(e.get("extnumber") or ext_number or 0)
            v = 1000000000 + (num - 1) * 1000 + int(e.get("offset"))
            if e.get("dir") == "-":
                v = -v
            self.enum_values[name] = v

    def _enumerant(self, enum_type: str, e, origin: str) -> None:
        """Records a value of `enum_type` (after _enum_value computed it); aliases repeat a
        value already recorded under its own name and are skipped."""
        if e.get("alias"):
            return
        v = self.enum_values.get(e.get("name"))
        if isinstance(v, int):
            self.enumerants.setdefault(enum_type, []).append((e.get("name"), v, origin))

    def _parse_type(self, t) -> None:
        cat = t.get("category")
        name = t.get("name") or (t.find("name").text if t.find("name") is not None else None)
        if cat is None and t.get("requires", "").endswith(".h"):
            self.type_headers[name] = t.get("requires")
        if t.get("alias"):
            self.aliases[name] = t.get("alias")
            return
        if cat in ("struct", "union"):
            members = _typed_by_object_type([self._parse_member(m) for m in t.findall("member") if _api_ok(m)])
            s = Struct(name, cat == "union", members)
            s.extends = [x for x in (t.get("structextends") or "").split(",") if x]
            st = s.member("sType")
            if st is not None and st.values:
                s.stype = st.values
            self.structs[name] = s
        elif cat == "handle":
            kind = t.find("type").text
            self.handles[name] = Handle(name, kind == "VK_DEFINE_HANDLE", t.get("parent"), t.get("objtypeenum"))
        elif cat == "enum":
            self.enums[name] = 32
        elif cat == "bitmask":
            base = t.find("type").text
            self.bitmasks[name] = 64 if base == "VkFlags64" else 32
        elif cat == "basetype":
            base = t.find("type")
            if base is not None:
                self.basetypes[name] = base.text
        elif cat == "funcpointer":
            self.funcpointers.add(name)

    @staticmethod
    def _parse_member(m) -> Member:
        text_before = (m.text or "").strip()
        type_elem = m.find("type")
        name_elem = m.find("name")
        tail = type_elem.tail or ""
        mem = Member(name=name_elem.text, type=type_elem.text)
        parts = [m.text or "", type_elem.text, type_elem.tail or "", name_elem.text, name_elem.tail or ""]
        if m.find("enum") is not None:
            parts += [m.find("enum").text, m.find("enum").tail or ""]
        mem.decl = re.sub(r"\s+", " ", "".join(parts)).strip()
        mem.const = "const" in text_before
        mem.ptr = tail.count("*")
        # fixed array dimensions: "[<enum>X</enum>]" or "[4]" after the name
        rest = name_elem.tail or ""
        enum_elem = m.find("enum")
        if enum_elem is not None:
            mem.array.append(enum_elem.text)
            rest += enum_elem.tail or ""
        for dim in re.findall(r"\[(\w+)\]", rest):
            mem.array.append(dim)
        if ":" in rest:
            mem.bitfield = rest.split(":")[1].strip()
        if m.get("len"):
            mem.len = m.get("len").split(",")
        mem.altlen = m.get("altlen")
        if m.get("optional"):
            mem.optional = [x == "true" for x in m.get("optional").split(",")]
        mem.noautovalidity = m.get("noautovalidity") == "true"
        mem.objecttype = m.get("objecttype")
        mem.stride = m.get("stride")
        mem.values = m.get("values")
        return mem

    def _parse_command(self, c) -> None:
        if c.get("alias"):
            self.command_aliases[c.get("name")] = c.get("alias")
            return
        proto = c.find("proto")
        name = proto.find("name").text
        ret = proto.find("type").text
        params = _typed_by_object_type([self._parse_member(p) for p in c.findall("param") if _api_ok(p)])
        self.commands[name] = Command(name, ret, params)

    # ------------------------------------------------------------------ queries
    def resolve(self, type_name: str) -> str:
        while type_name in self.aliases:
            type_name = self.aliases[type_name]
        return type_name

    def canonical_command(self, name: str) -> str:
        while name in self.command_aliases:
            name = self.command_aliases[name]
        return name

    def constant(self, name: str) -> int:
        v = self.constants.get(name, name)
        return int(str(v).rstrip("U"), 0)

    def scalar_info(self, type_name: str):
        """(flatbuffers type, C storage type, size) for a scalar-like type, else None."""
        t = self.resolve(type_name)
        if t in SCALARS:
            return SCALARS[t]
        if t in self.enums:
            return ("int", "int32_t", 4)
        if t in self.bitmasks:
            return ("ulong", "uint64_t", 8) if self.bitmasks[t] == 64 else ("uint", "uint32_t", 4)
        if t in self.basetypes:
            base = self.basetypes[t]
            if base in ("VkFlags",):
                return ("uint", "uint32_t", 4)
            if base in ("VkFlags64",):
                return ("ulong", "uint64_t", 8)
            if base in SCALARS:
                return SCALARS[base]
        if t in ("VkFlags", "VkBool32", "VkSampleMask"):
            return ("uint", "uint32_t", 4)
        if t in ("VkFlags64", "VkDeviceSize", "VkDeviceAddress"):
            return ("ulong", "uint64_t", 8)
        return None

    def is_handle(self, type_name: str) -> bool:
        return self.resolve(type_name) in self.handles

    def handle(self, type_name: str) -> Handle:
        return self.handles[self.resolve(type_name)]

    def is_struct(self, type_name: str) -> bool:
        t = self.resolve(type_name)
        return t in self.structs and not self.structs[t].union

    def is_union(self, type_name: str) -> bool:
        t = self.resolve(type_name)
        return t in self.structs and self.structs[t].union

    def struct(self, type_name: str) -> Struct:
        return self.structs[self.resolve(type_name)]

    def extenders(self, struct_name: str) -> list[str]:
        """Structs that may appear in `struct_name`'s pNext chain."""
        return [s.name for s in self.structs.values() if struct_name in s.extends]

    def dispatch_level(self, cmd: Command) -> str:
        """'global', 'instance', 'physical_device' or 'device' by the first parameter."""
        if cmd.name in (
            "vkCreateInstance",
            "vkEnumerateInstanceExtensionProperties",
            "vkEnumerateInstanceLayerProperties",
            "vkEnumerateInstanceVersion",
        ):
            return "global"
        first = self.resolve(cmd.params[0].type) if cmd.params else ""
        if first == "VkInstance":
            return "instance"
        if first == "VkPhysicalDevice":
            return "physical_device"
        if first in ("VkDevice", "VkQueue", "VkCommandBuffer"):
            return "device"
        return "global"
