"""Command codecs, split by the object type a command is dispatched on.

Outputs (all under build/generated/wire/):
  commands.h              ids, fixed-layout command structs, guest encoder / reply decoder
                          declarations, host Args structs, Handlers, Dispatch table
  guest_<object>.cpp      guest: encode_vkX (args) and decode_reply_vkX
  host_<object>.cpp       host: run_vkX (verify, decode, call handler, reply) and
                          default_vkX (call the real driver, track objects, encode the reply)
  host_tables.cpp         the id -> run function table, default handlers, dispatch loaders
"""

from __future__ import annotations

from common import banner, include, membership_switch, write_files
from gen_structs import NS_CLOSE, NS_OPEN, StructGenerator
from wire import CommandShape, Field, FieldKind, OutKind, OutParam, Protocol, c_expr, read_table

OBJECTS = ["global", "instance", "physical_device", "device", "queue", "command_buffer"]


def object_of(shape: CommandShape, reg) -> str:
    if shape.level == "global" or not shape.cmd.params:
        return "global"
    t = reg.resolve(shape.cmd.params[0].type)
    return {
        "VkInstance": "instance",
        "VkPhysicalDevice": "physical_device",
        "VkDevice": "device",
        "VkQueue": "queue",
        "VkCommandBuffer": "command_buffer",
    }.get(t, "global")


class CommandGenerator:
    def __init__(self, proto: Protocol, sg: StructGenerator):
        self.p = proto
        self.reg = proto.reg
        self.sg = sg
        self.owners = read_table("owners.txt")
        self.checked = read_table("checked.txt")
        for name in self.checked:
            shape = proto.shapes.get(proto.aliases.get(name, name))
            if shape is None or not shape.wire:
                raise SystemExit(f"codegen: checked.txt names {name}, which has no generated run function")
        # Everything the host may call on the driver: wire commands plus core commands that
        # are hand-written on the wire (physical device enumeration, ...).
        self.dispatchable = [
            s
            for s in proto.shapes.values()
            if not s.status.startswith("unsupported")
            and s.cmd.ret not in proto.reg.funcpointers
            and (s.wire or s.origin.startswith("VK_VERSION"))
        ]
        self.shapes = [
            s
            for s in proto.shapes.values()
            if not s.status.startswith("unsupported") and s.wire and s.cmd.ret not in proto.reg.funcpointers
        ]

    # ------------------------------------------------------------------ helpers
    def params_decl(self, shape: CommandShape) -> str:
        return ", ".join(p.decl for p in shape.cmd.params)

    def param_names(self, shape: CommandShape) -> str:
        return ", ".join(p.name for p in shape.cmd.params)

    def objtype(self, t: str) -> str:
        return self.reg.handle(t).objtype

    def child_destroyed(self, shape: CommandShape) -> str | None:
        """The handle type a vkDestroyX(device, x, pAllocator) or vkFreeX(device, x, pAllocator)
        of a device's non-dispatchable child destroys, else None. The session may destroy such an
        object later (HostContext::defer_destroy), and tears down what is left of them
        (gen_lifetime.py)."""
        if not shape.name.startswith(("vkDestroy", "vkFree")):
            return None
        ps = shape.cmd.params
        if len(ps) != 3 or self.reg.resolve(ps[0].type) != "VkDevice":
            return None
        if ps[2].type != "VkAllocationCallbacks" or ps[1].ptr or not self.reg.is_handle(ps[1].type):
            return None
        h = self.reg.handle(ps[1].type)
        return h.name if h.parent == "VkDevice" and not h.dispatchable else None

    # Children whose destruction the guest's next call may depend on at once: a surface takes one
    # swapchain at a time (a new one for it fails while the old one lives).
    NEVER_DEFERRED = frozenset({"VkSwapchainKHR"})

    def may_defer_destroy(self, shape: CommandShape) -> str | None:
        """child_destroyed(shape), for the children the session may destroy later."""
        child = self.child_destroyed(shape)
        return child if child not in self.NEVER_DEFERRED else None

    def ret_ctype(self, shape: CommandShape) -> str:
        return shape.cmd.ret

    def reply_ret_field(self, shape: CommandShape):
        """(flatbuffers type, C type) of reply field 0."""
        r = shape.cmd.ret
        if r in ("void", "VkResult"):
            return ("int", "int32_t")
        info = self.reg.scalar_info(r)
        return (info[0], info[1])

    def in_out_fields(self, shape: CommandShape):
        """Derived inputs: (OutParam, flatbuffers type) at o.in_index."""
        out = []
        for o in shape.outs:
            if o.in_index < 0:
                continue
            if o.kind is OutKind.HANDLE:
                out.append((o, "ulong"))
            elif o.kind is OutKind.HANDLE_ARRAY:
                out.append((o, "[ulong]"))
            elif o.kind is OutKind.COUNT:
                out.append((o, "ulong"))
            elif o.kind in (OutKind.STRUCT, OutKind.STRUCT_ARRAY):
                out.append((o, "[int]"))
            else:
                out.append((o, "ulong"))
        return out

    # ------------------------------------------------------------------ fixed structs
    def fixed_struct(self, shape: CommandShape) -> str:
        members = []
        for f in shape.head:
            if f.kind is FieldKind.HANDLE:
                members.append(("uint64_t", f.name, 8))
            else:
                members.append((f.ctype, f.name, f.size))
        L = []
        if shape.trailing:
            arrays = ", ".join(
                f"{f.name} [{f.count if f.kind is FieldKind.FIXED_SCALAR else f.len_expr}]" for f in shape.trailing
            )
            L.append(f"// followed by {arrays}, each 8-aligned (wire::Packed)")
        L.append(f"struct {shape.name}_s {{")
        for ct, n, _ in members:
            L.append(f"  {ct} {n};")
        L.append("};")
        return "\n".join(L)

    # ------------------------------------------------------------------ header
    def header(self) -> str:
        """commands.h: what both sides share and the guest uses."""
        L = [banner("gen_commands.py", self.reg), "#pragma once", "", include("structs.h"), "", NS_OPEN]
        L.append("// Stable command ids (codegen/data/command_ids.txt).")
        L.append("enum CommandId : uint16_t {")
        for s in self.shapes:
            L.append(f"  kCmd_{s.name} = {self.p.command_id(s.name)},")
        L.append("};")
        limit = max(self.p.command_id(s.name) for s in self.shapes) + 1
        L.append(f"inline constexpr uint16_t kCommandIdLimit = {limit};")
        L += self.ref_roles()
        L.append("")
        L.append("// Fixed-layout commands: all parameters are scalars or handles, so the record")
        L.append("// payload is this struct (the FlatBuffers struct of the same name in the schema).")
        for s in self.shapes:
            if s.fixed:
                L.append(self.fixed_struct(s))
        L.append("")
        L.append("// ---- guest side")
        for s in self.shapes:
            if s.trailing:
                L.append(f"void encode_{s.name}(Packed& r, HandleMap& h, {self.params_decl(s)});")
            elif s.fixed:
                L.append(f"void encode_{s.name}({s.name}_s& w, HandleMap& h, {self.params_decl(s)});")
            else:
                L.append(f"void encode_{s.name}(Builder& b, HandleMap& h, {self.params_decl(s)});")
            if s.sync:
                L.append(
                    f"{self.ret_ctype(s) if s.cmd.ret != 'void' else 'void'} decode_reply_{s.name}(DecodeContext& c, const uint8_t* data, size_t size, {self.params_decl(s)});"
                )
        L.append("")
        L.append(NS_CLOSE)
        return "\n".join(L) + "\n"

    # Commands whose handles reach no memory: queries, host-side memory operations, naming,
    # waits, resets of pools and fences. A handle of imported memory in any command of no role
    # below makes every submission reach imports (RefRole::kOther).
    INERT_PREFIXES = ("vkGet", "vkMapMemory", "vkUnmapMemory", "vkSetDebugUtilsObject", "vkDebugMarkerSetObject")
    INERT_PREFIXES += ("vkSetPrivateData", "vkWait", "vkReset", "vkTrimCommandPool", "vkDeviceWaitIdle")
    INERT_PREFIXES += ("vkQueueWaitIdle", "vkSetDeviceMemoryPriority", "vkEndCommandBuffer", "vkSignalSemaphore")
    INERT_PREFIXES += ("vkFlushMappedMemoryRanges", "vkInvalidateMappedMemoryRanges", "vkSetEvent")
    # Queries that hand out a way to reach memory other than a handle: device addresses, descriptor
    # bytes, exported payloads.
    REACHING_QUERIES = ("Address", "vkGetDescriptorEXT", "vkGetMemory")

    def ref_role(self, s: CommandShape) -> str:
        """What a record of `s` does with the handles it names, for the ICD's tracking of which
        submissions reach imported host memory (guest-icd/src/import_tracker.cpp)."""
        n = s.name
        if n in ("vkBeginCommandBuffer", "vkResetCommandBuffer"):
            return "kBegin"
        if n.startswith("vkCmd"):
            return "kRecord"
        if n in ("vkQueueSubmit", "vkQueueSubmit2", "vkQueueBindSparse"):
            return "kSubmit"
        if n == "vkUpdateDescriptorSets":  # its writes and its copies
            return "kDescriptorWrite"
        if n.startswith("vkBind") and "Memory" in n:
            return "kBind"
        if n.startswith(("vkDestroy", "vkFree")):
            return "kRelease"
        if any(o.kind in (OutKind.HANDLE, OutKind.HANDLE_ARRAY) for o in s.outs):
            return "kCreate"
        if n.startswith(self.INERT_PREFIXES) and not any(r in n for r in self.REACHING_QUERIES):
            return "kInert"
        return "kOther"

    def ref_roles(self) -> list[str]:
        L = [
            "",
            "// What a record does with the handles it names (the ICD's ImportTracker, guest-icd/src/import_tracker.cpp).",
        ]
        L.append("enum class RefRole : uint8_t {")
        L.append("  kInert,            // names handles without linking them to memory (queries, waits, naming)")
        L.append("  kRecord,           // vkCmd*: its command buffers take on what it names")
        L.append("  kBegin,            // starts a command buffer afresh")
        L.append("  kSubmit,           // queue submissions: decided from their command buffers before they go")
        L.append("  kDescriptorWrite,  // its descriptor sets take on what it names")
        L.append("  kBind,             // binds memory: the bound objects take it on")
        L.append("  kCreate,           // the objects it creates take on what it names")
        L.append("  kRelease,          // destroys or frees what it names")
        L.append("  kOther,            // anything else: no knowing what it links")
        L.append("};")
        by_id = {self.p.command_id(s.name): s for s in self.shapes}
        L.append("inline constexpr RefRole kRefRoles[kCommandIdLimit] = {")
        for i in range(max(by_id) + 1):
            L.append(f"  RefRole::{self.ref_role(by_id[i]) if i in by_id else 'kInert'},")
        L.append("};")
        L.append(
            "inline RefRole ref_role(uint16_t id) { return id < kCommandIdLimit ? kRefRoles[id] : RefRole::kInert; }"
        )
        return L

    def host_header(self) -> str:
        """host_commands.h: the per-command host types; the interface around them (HostContext,
        the run table) is hand-written in bypass/wire/host_context.h, which includes this."""
        L = [banner("gen_commands.py", self.reg), "#pragma once", "", include("commands.h"), "", NS_OPEN]
        L.append("// The driver's entry points, loaded by load_instance_dispatch / load_device_dispatch.")
        L.append("struct Dispatch {")
        for s in self.dispatchable:
            L.append(f"  PFN_{s.name} {s.name} = nullptr;")
        L.append("};")
        L.append("")
        L.append("class HostContext;")
        L.append("")
        L.append("// Decoded arguments of each command, in the driver's types; outputs point at v_ members.")
        for s in self.shapes:
            L.append(self.args_struct(s))
        L.append("")
        L.append("// What runs each command on the host: default_handlers() fills it with default_vkX,")
        L.append("// hand-written handlers replace entries (codegen/data/handwritten.txt, side host).")
        L.append("struct Handlers {")
        for s in self.shapes:
            L.append(f"  void (*{s.name})(HostContext&, Args_{s.name}&) = nullptr;")
        L.append("  // Blocking commands (blocking.txt): an optional first attempt on the session thread.")
        L.append("  // It returns true when it finished the call (the reply goes out at once), false when the")
        L.append("  // call would block for long: then the handler above runs on a waiter thread, with")
        L.append("  // Args::waited_ns telling how much of a timeout the attempt already used.")
        for s in self.shapes:
            if s.blocking:
                L.append(f"  bool (*try_{s.name})(HostContext&, Args_{s.name}&) = nullptr;")
        L.append("  // Checked commands (checked.txt): check_ runs before the handler and returns false to")
        L.append("  // keep the call from the driver (having called c.fail(), or set the VkResult of a call")
        L.append("  // the guest waits for); record_ runs after a handler that succeeded.")
        for s in self.shapes:
            if s.name in self.checked:
                L.append(f"  bool (*check_{s.name})(HostContext&, Args_{s.name}&) = nullptr;")
                if not s.blocking:  # a blocking call's handler runs on a waiter thread
                    L.append(f"  void (*record_{s.name})(HostContext&, Args_{s.name}&) = nullptr;")
        L.append("};")
        L.append("")
        L.append("// The generated handlers (call the driver, track objects) and reply encoders.")
        for s in self.shapes:
            L.append(f"void default_{s.name}(HostContext& c, Args_{s.name}& a);")
            if s.sync:
                L.append(f"void reply_{s.name}(HostContext& c, Builder& b, Args_{s.name}& a, uint64_t seq);")
        L.append("")
        L.append(NS_CLOSE)
        return "\n".join(L) + "\n"

    def args_struct(self, s: CommandShape) -> str:
        L = [f"struct Args_{s.name} {{"]
        for p in s.cmd.params:
            t = self.reg.resolve(p.type)
            decl = p.decl
            if p.name == "pAllocator" or t in self.reg.funcpointers:
                L.append(f"  {decl} = nullptr;")
                continue
            if "[" in decl:
                L.append(f"  {decl.replace('const ', '')}{{}};")
                continue
            L.append(f"  {decl}{{}};")
        for o in s.outs:
            T = self.reg.resolve(o.type) if o.kind is not OutKind.BYTES else "uint8_t"
            if o.kind in (OutKind.HANDLE, OutKind.SCALAR, OutKind.COUNT, OutKind.STRUCT):
                ct = o.member.decl.rsplit("*", 1)[0].replace("const ", "").strip()
                L.append(f"  {ct} v_{o.name}{{}};")
            if o.kind is OutKind.HANDLE:
                L.append(f"  uint64_t id_{o.name} = 0;")
            if o.kind is OutKind.HANDLE_ARRAY:
                L.append(f"  const Vec<uint64_t>* ids_{o.name} = nullptr;")
            if o.kind is OutKind.COUNT:
                L.append(f"  uint64_t cap_{o.name} = 0;  // 0: the guest asked for the count only")
        if s.cmd.ret != "void":
            L.append(f"  {s.cmd.ret} result{{}};")
        if s.blocking:
            L.append("  uint64_t waited_ns = 0;  // spent waiting on the session thread before the hand-off")
        L.append("};")
        return "\n".join(L)

    # ------------------------------------------------------------------ strided arrays
    @staticmethod
    def strided(s: CommandShape) -> list:
        """Parameters that are arrays with a stride parameter (vk.xml's stride)."""
        return [p for p in s.cmd.params if p.stride]

    def pack_strided(self, s: CommandShape) -> list[str]:
        """Guest: the start of an encoder taking a strided array. Its elements are copied next to
        each other, so the rest of the encoder (and the wire) sees a plain array; the host hands
        the driver the packed array with a stride of one element."""
        L = []
        for p in self.strided(s):
            T = p.type
            n = p.len[0]
            L.append(f"  std::vector<{T}> packed_{p.name};")
            L.append(f"  if ({p.name} && {p.stride} != sizeof({T})) {{")
            L.append(f"    packed_{p.name}.resize({n});")
            L.append(f"    const char* at = reinterpret_cast<const char*>({p.name});")
            L.append(f"    for (size_t i = 0; i < packed_{p.name}.size(); ++i)")
            L.append(f"      std::memcpy(&packed_{p.name}[i], at + i * size_t{{{p.stride}}}, sizeof({T}));")
            L.append(f"    {p.name} = packed_{p.name}.data();")
            L.append("  }")
        return L

    def unstride(self, s: CommandShape) -> list[str]:
        """Host: the decoded array is packed, so the driver gets a stride of one element, never
        the guest's (with which it would read past the array)."""
        return [f"  a.{p.stride} = static_cast<decltype(a.{p.stride})>(sizeof({p.type}));" for p in self.strided(s)]

    # ------------------------------------------------------------------ guest
    def guest_encode(self, s: CommandShape) -> str:
        names = {p.name for p in s.cmd.params}
        L = []
        if s.fixed:
            if s.trailing:
                L.append(f"void encode_{s.name}(Packed& r, HandleMap& h, {self.params_decl(s)}) {{")
                L.append(f"  {s.name}_s w;")
                L.append("  std::memset(&w, 0, sizeof(w));")
            else:
                L.append(f"void encode_{s.name}({s.name}_s& w, HandleMap& h, {self.params_decl(s)}) {{")
            L.append("  (void)h;")
            L.extend(self.pack_strided(s))
            for f in s.head:
                if f.kind is FieldKind.HANDLE:
                    L.append(f"  w.{f.name} = {f.name} ? h.to_wire({self.objtype(f.type)}, handle_bits({f.name})) : 0;")
                elif f.member.objecttype:
                    L.append(f"  w.{f.name} = {f.name} ? h.to_wire({f.member.objecttype}, {f.name}) : 0;")
                elif self.reg.resolve(f.type) in self.reg.enums:
                    L.append(f"  w.{f.name} = enum_bits({f.name});")
                else:
                    L.append(f"  w.{f.name} = static_cast<{f.ctype}>({f.name});")
            if s.trailing:
                L.append("  r.start(&w, sizeof(w));")
                for f in s.trailing:
                    n = f"static_cast<size_t>({f.len_expr})"
                    if f.kind is FieldKind.FIXED_SCALAR:
                        L.append(f"  r.put({f.name}, {f.count} * sizeof({f.ctype}));")
                    elif f.kind is FieldKind.BYTES:
                        L.append(f"  r.put({f.name}, {n});")
                    elif f.kind is FieldKind.ARRAY_HANDLE:
                        L.append("  {")
                        L.append(f"    const size_t n = {n};")
                        L.append("    uint64_t* ids = r.reserve<uint64_t>(n);")
                        L.append(
                            f"    for (size_t i = 0; {f.name} && i < n; ++i) ids[i] = {f.name}[i] ? h.to_wire({self.objtype(f.type)}, handle_bits({f.name}[i])) : 0;"
                        )
                        L.append("  }")
                    else:
                        L.append(f"  r.put({f.name}, {n} * sizeof(*{f.name}));")
            L.append("}")
            return "\n".join(L)
        L.append(f"void encode_{s.name}(Builder& b, HandleMap& h, {self.params_decl(s)}) {{")
        L.append("  (void)h;")
        for p in s.cmd.params:
            L.append(f"  (void){p.name};")
        L.extend(self.pack_strided(s))
        L.append("  b.Clear();")
        for f in s.fields:
            if f.kind not in (FieldKind.SCALAR, FieldKind.HANDLE):
                for line in self.sg.encode_field_pre(f, "", names, f"o_{f.name}"):
                    L.append("  " + line)
        for o, ft in self.in_out_fields(s):
            v = f"i_{o.name}"
            if o.kind is OutKind.HANDLE_ARRAY:
                n = c_expr(o.len_expr, names, "")
                L.append(f"  Off {v};")
                L.append("  {")
                L.append(f"    size_t n = static_cast<size_t>({n});")
                L.append("    std::vector<uint64_t> ids(n);")
                L.append(
                    f"    for (size_t i = 0; i < n; ++i) ids[i] = h.to_wire({self.objtype(o.type)}, handle_bits({o.name}[i]));"
                )
                L.append(f"    {v} = scalar_vector(b, ids.data(), n);")
                L.append("  }")
            elif o.kind in (OutKind.STRUCT, OutKind.STRUCT_ARRAY):
                L.append(f"  Off {v} = {o.name} ? encode_chain_skeleton(b, {o.name}[0].pNext) : 0;")
        L.append("  const Off start = b.StartTable();")
        for f in s.fields:
            L.append("  " + self.sg.encode_field_add(f, "", f"o_{f.name}"))
        for o, ft in self.in_out_fields(s):
            vo = o.in_vo
            if o.kind is OutKind.HANDLE:
                L.append(f"  add_scalar<uint64_t>(b, {vo}, h.to_wire({self.objtype(o.type)}, handle_bits(*{o.name})));")
            elif o.kind is OutKind.COUNT:
                L.append(f"  add_scalar<uint64_t>(b, {vo}, {o.two_call} ? static_cast<uint64_t>(*{o.name}) + 1 : 0);")
            else:
                L.append(f"  add_offset(b, {vo}, i_{o.name});")
        L.append("  b.Finish(flatbuffers::Offset<Table>(b.EndTable(start)));")
        L.append("}")
        return "\n".join(L)

    def reply_verify(self, s: CommandShape) -> str:
        fr, cr = self.reply_ret_field(s)
        checks = [f"t->VerifyField<{cr}>(v, 4 /* result */, {4 if cr.endswith('32_t') else 8})"]
        for o in s.outs:
            if o.kind in (OutKind.HANDLE, OutKind.HANDLE_ARRAY):
                continue
            vo = o.vo
            if o.kind is OutKind.COUNT:
                checks.append(f"t->VerifyField<uint64_t>(v, {vo}, 8)")
            elif o.kind is OutKind.SCALAR:
                checks.append(f"t->VerifyField<uint64_t>(v, {vo}, 8)")
            elif o.kind is OutKind.STRUCT:
                checks.append(f"verify_table_field(v, t, {vo}, verify_{o.type})")
            elif o.kind is OutKind.STRUCT_ARRAY:
                checks.append(f"verify_table_vector(v, t, {vo}, verify_{o.type})")
            elif o.kind is OutKind.BYTES:
                checks.append(f"verify_vector_field<uint8_t>(v, t, {vo})")
            elif o.kind is OutKind.SCALAR_ARRAY:
                info = self.reg.scalar_info(o.type)
                checks.append(f"verify_vector_field<{info[1]}>(v, t, {vo})")
        return (
            f"static bool verify_reply_{s.name}(Verifier& v, const Table* t) {{\n  return t->VerifyTableStart(v)"
            + "".join(f" &&\n         {c}" for c in checks)
            + " &&\n         v.EndTable();\n}"
        )

    def guest_decode_reply(self, s: CommandShape) -> str:
        names = {p.name for p in s.cmd.params}
        ret = s.cmd.ret
        fr, cr = self.reply_ret_field(s)
        bad = {"VkResult": "VK_ERROR_DEVICE_LOST", "void": ""}.get(ret, f"{ret}{{}}")
        L = [self.reply_verify(s), ""]
        L.append(
            f"{ret} decode_reply_{s.name}(DecodeContext& c, const uint8_t* data, size_t size, {self.params_decl(s)}) {{"
        )
        for p in s.cmd.params:
            L.append(f"  (void){p.name};")
        L.append(f"  const Table* t = verify_root(data, size, verify_reply_{s.name});")
        L.append(f'  if (!t) {{ c.fail("{s.name}", "reply fails verification"); return {bad}; }}')
        counts = {o.name: o for o in s.outs if o.kind is OutKind.COUNT}
        for o in s.outs:
            if o.kind in (OutKind.HANDLE, OutKind.HANDLE_ARRAY):
                continue
            vo = o.vo
            if o.kind is OutKind.COUNT:
                continue  # written together with its array
            if o.kind is OutKind.SCALAR:
                ct = o.member.decl.rsplit("*", 1)[0].replace("const ", "").strip()
                L.append(f"  if ({o.name}) *{o.name} = static_cast<{ct}>(t->GetField<uint64_t>({vo}, 0));")
            elif o.kind is OutKind.STRUCT:
                L.append(
                    f"  if (auto* s = t->GetPointer<const Table*>({vo}); s && {o.name} && !decode_{o.type}(c, s, *{o.name}, true)) return {bad};"
                )
            elif o.kind in (OutKind.STRUCT_ARRAY, OutKind.BYTES, OutKind.SCALAR_ARRAY):
                vec_t = {OutKind.STRUCT_ARRAY: "TableVec", OutKind.BYTES: "Vec<uint8_t>"}.get(o.kind)
                if o.kind is OutKind.SCALAR_ARRAY:
                    vec_t = f"Vec<{self.reg.scalar_info(o.type)[1]}>"
                if o.two_call:
                    cnt = counts[o.two_call]
                    cvo = cnt.vo
                    L.append("  {")
                    L.append(f"    const uint64_t n = t->GetField<uint64_t>({cvo}, 0);")
                    L.append(f"    auto* s = t->GetPointer<const {vec_t}*>({vo});")
                    L.append(f"    if (!{o.name}) {{")
                    L.append(f"      *{o.two_call} = static_cast<std::remove_pointer_t<decltype({o.two_call})>>(n);")
                    L.append("    } else {")
                    L.append(
                        f'      if (n > *{o.two_call} || (n && (!s || s->size() < n))) {{ c.fail("{s.name}", "reply count exceeds capacity"); return {bad}; }}'
                    )
                    L.append(f"      *{o.two_call} = static_cast<std::remove_pointer_t<decltype({o.two_call})>>(n);")
                    self._copy_out(L, o, "n", bad, s)
                    L.append("    }")
                    L.append("  }")
                else:
                    n = c_expr(o.len_expr, names, "")
                    L.append("  {")
                    L.append(f"    auto* s = t->GetPointer<const {vec_t}*>({vo});")
                    L.append(f"    const size_t n = static_cast<size_t>({n});")
                    L.append(f"    if (s && {o.name}) {{")
                    L.append(f'      if (s->size() < n) {{ c.fail("{s.name}", "short reply array"); return {bad}; }}')
                    self._copy_out(L, o, "n", bad, s)
                    L.append("    }")
                    L.append("  }")
        if ret == "void":
            L.append("}")
        else:
            L.append(f"  return static_cast<{ret}>(t->GetField<{cr}>(4 /* result */, 0));")
            L.append("}")
        return "\n".join(L)

    @staticmethod
    def _async_failure(s: CommandShape) -> list:
        """An asynchronous call (codegen/data/async.txt) already told the guest VK_SUCCESS: a
        failure on the host cannot be reported, and the guest's view of its objects is now wrong,
        so the session ends naming the command and the result (the guest sees
        VK_ERROR_DEVICE_LOST with that reason). The same for a record of async_unasked.txt that
        asked for no reply, for any result but VK_SUCCESS (a pipeline's VK_PIPELINE_COMPILE_REQUIRED
        too: the guest holds its handle)."""
        if s.unasked:
            return [
                f'  if (!c.wants_reply && a.result != VK_SUCCESS) return c.decode.fail("{s.name}", ("VkResult " + '
                f'std::to_string(a.result) + " on the host, after the guest was told VK_SUCCESS (sent without '
                f'asking)").c_str(), Fault::kDriver);'
            ]
        if s.sync or s.cmd.ret != "VkResult":
            return []
        return [
            f'  if (a.result < 0) return c.decode.fail("{s.name}", ("VkResult " + std::to_string(a.result) + '
            f'" on the host, after the guest was told VK_SUCCESS (an asynchronous call)").c_str(), Fault::kDriver);'
        ]

    def _copy_out(self, L, o: OutParam, n: str, bad: str, s) -> None:
        if o.kind is OutKind.STRUCT_ARRAY:
            L.append(f"      for (size_t i = 0; i < {n}; ++i)")
            L.append(
                f"        if (!decode_{o.type}(c, s->Get(static_cast<flatbuffers::uoffset_t>(i)), {o.name}[i], true)) return {bad};"
            )
        elif o.kind is OutKind.BYTES:  # s may be absent when n is 0
            L.append(f"      if ({n}) std::memcpy({o.name}, s->data(), {n});")
        else:
            L.append(f"      if ({n}) std::memcpy({o.name}, s->data(), {n} * sizeof(*{o.name}));")

    # ------------------------------------------------------------------ host
    def host_run(self, s: CommandShape) -> str:
        names = {p.name for p in s.cmd.params}
        L = []
        if s.fixed:
            L.append(f"static bool run_{s.name}(HostContext& c, const uint8_t* data, size_t size) {{")
            cmp = "<" if s.trailing else "!="
            L.append(f'  if (size {cmp} sizeof({s.name}_s)) return c.fail("{s.name}", "bad record size");')
            L.append(f"  {s.name}_s w;")
            L.append("  std::memcpy(&w, data, sizeof(w));")
            L.append(f"  Args_{s.name} a;")
            if s.trailing:
                # Every array's place first, checked against the record's size: nothing is
                # read (no handle looked up) from a record whose counts do not match its bytes.
                L.append("  Unpacked u(data, size, sizeof(w));")
                for f in s.trailing:
                    n = f"static_cast<uint64_t>(w.{f.len_expr})"
                    if f.kind is FieldKind.FIXED_SCALAR:
                        L.append(f"  const uint8_t* in_{f.name} = u.take({f.count}, sizeof(a.{f.name}[0]));")
                    elif f.kind is FieldKind.BYTES:
                        L.append(f"  a.{f.name} = u.take({n}, 1);")
                    elif f.kind is FieldKind.ARRAY_HANDLE:
                        L.append(f"  const uint8_t* ids_{f.name} = u.take({n}, sizeof(uint64_t));")
                    else:
                        L.append(
                            f"  a.{f.name} = reinterpret_cast<decltype(a.{f.name})>(u.take({n}, sizeof(*a.{f.name})));"
                        )
                L.append(f'  if (!u.done()) return c.fail("{s.name}", "bad record size");')
                for f in s.trailing:
                    if f.kind is FieldKind.FIXED_SCALAR:
                        L.append(f"  std::memcpy(a.{f.name}, in_{f.name}, sizeof(a.{f.name}));")
                    elif f.kind is FieldKind.ARRAY_HANDLE:
                        opt = "true" if f.null_elements else "false"
                        ht = self.reg.resolve(f.type)
                        L.append(f"  if (ids_{f.name}) {{")
                        L.append(f"    const size_t n = static_cast<size_t>(w.{f.len_expr});")
                        L.append(f"    auto* p = c.decode.arena->make<{ht}>(n);")
                        L.append(f'    if (!p) return c.fail("{s.name}.{f.name}", "out of memory");')
                        L.append("    for (size_t i = 0; i < n; ++i) {")
                        L.append("      uint64_t id;")
                        L.append(f"      std::memcpy(&id, ids_{f.name} + i * sizeof(id), sizeof(id));")
                        L.append(
                            f'      if (!decode_handle(c.decode, id, {self.objtype(f.type)}, {opt}, "{s.name}.{f.name}", &p[i])) return false;'
                        )
                        L.append("    }")
                        L.append(f"    a.{f.name} = p;")
                        L.append("  }")
            for f in s.head:
                if f.kind is FieldKind.HANDLE:
                    opt = "true" if f.optional else "false"
                    L.append(
                        f'  if (!decode_handle(c.decode, w.{f.name}, {self.objtype(f.type)}, {opt}, "{s.name}.{f.name}", &a.{f.name})) return false;'
                    )
                elif f.member.objecttype:
                    # A handle typed by another parameter (vk.xml's objecttype), decoded before it.
                    L.append(
                        f'  if (!decode_handle(c.decode, w.{f.name}, a.{f.member.objecttype}, false, "{s.name}.{f.name}", &a.{f.name})) return false;'
                    )
                else:
                    if self.sg.unsigned_enum(f):
                        bad = f"w.{f.name} < 0"
                        if self.p.enum_checked(s.name, f):
                            valid = f"valid_{self.reg.resolve(f.type)}(w.{f.name})"
                            if f.member.optional and f.member.optional[0]:
                                valid = f"(w.{f.name} == 0 || {valid})"
                            bad = f"w.{f.name} < 0 || (c.decode.check_values && !{valid})"
                        L.append(
                            f'  if ({bad}) return fail_enum(c.decode, "{s.name}.{f.name}", "{self.reg.resolve(f.type)}", w.{f.name});'
                        )
                    L.append(f"  a.{f.name} = static_cast<decltype(a.{f.name})>(w.{f.name});")
            L.extend(self.unstride(s))
            L.extend(self.call_handler(s))
            L.append("}")
            return "\n".join(L)
        # table commands: verify, decode
        checks = [self.sg.verify_field(f) for f in s.fields]
        for o, ft in self.in_out_fields(s):
            vo = o.in_vo
            if ft == "ulong":
                checks.append(f"t->VerifyField<uint64_t>(v, {vo}, 8)")
            elif ft == "[ulong]":
                checks.append(f"verify_vector_field<uint64_t>(v, t, {vo})")
            else:
                checks.append(f"verify_vector_field<int32_t>(v, t, {vo})")
        L.append(f"static bool verify_args_{s.name}(Verifier& v, const Table* t) {{")
        L.append(
            "  return t->VerifyTableStart(v)"
            + "".join(f" &&\n         {c}" for c in checks)
            + " &&\n         v.EndTable();"
        )
        L.append("}")
        L.append("")
        L.append(f"static bool decode_args_{s.name}(HostContext& hc, const Table* t, Args_{s.name}& a) {{")
        L.append("  DecodeContext& c = hc.decode;")
        L.append("  (void)t; (void)c;")
        first = [f for f in s.fields if f.kind in (FieldKind.SCALAR, FieldKind.HANDLE)]
        rest = [f for f in s.fields if f not in first]
        for f in first + rest:
            for line in self.sg.decode_field(f, s.name, names, "a.", False):
                L.append("  " + line)
        for o, ft in self.in_out_fields(s):
            vo = o.in_vo
            if o.kind is OutKind.HANDLE:
                L.append(f"  a.id_{o.name} = t->GetField<uint64_t>({vo}, 0);")
                L.append(
                    f'  if (const char* why = hc.refuse_new_id({self.objtype(o.type)}, a.id_{o.name})) return c.fail("{s.name}.{o.name}", why);'
                )
                L.append(f"  a.{o.name} = &a.v_{o.name};")
            elif o.kind is OutKind.HANDLE_ARRAY:
                n = c_expr(o.len_expr, names, "a.")
                L.append(f"  a.ids_{o.name} = t->GetPointer<const Vec<uint64_t>*>({vo});")
                L.append("  {")
                L.append(f"    const size_t n = static_cast<size_t>({n});")
                L.append(
                    f'    if (!a.ids_{o.name} || a.ids_{o.name}->size() != n) return c.fail("{s.name}.{o.name}", "ids do not match the count");'
                )
                L.append(f"    for (size_t i = 0; i < n; ++i)")
                L.append(
                    f'      if (const char* why = hc.refuse_new_id({self.objtype(o.type)}, a.ids_{o.name}->Get(static_cast<flatbuffers::uoffset_t>(i)))) return c.fail("{s.name}.{o.name}", why);'
                )
                L.append(f"    a.{o.name} = c.arena->make<{self.reg.resolve(o.type)}>(n ? n : 1);")
                L.append(f'    if (!a.{o.name}) return c.fail("{s.name}.{o.name}", "out of memory");')
                L.append("  }")
            elif o.kind is OutKind.COUNT:
                L.append(f"  a.cap_{o.name} = t->GetField<uint64_t>({vo}, 0);")
                L.append(f"  a.{o.name} = &a.v_{o.name};")
        # output storage
        for o in s.outs:
            if o.kind is OutKind.STRUCT:
                L.append(f"  a.{o.name} = &a.v_{o.name};")
                if self.reg.struct(o.type).stype:
                    L.append(f"  a.v_{o.name}.sType = {self.reg.struct(o.type).stype};")
                if self.reg.struct(o.type).member("pNext"):
                    ivo = o.in_vo
                    L.append(
                        f"  if (!make_chain(c, t->GetPointer<const Vec<uint32_t>*>({ivo}), &a.v_{o.name}.pNext)) return false;"
                    )
            elif o.kind is OutKind.SCALAR:
                L.append(f"  a.{o.name} = &a.v_{o.name};")
            elif o.kind in (OutKind.STRUCT_ARRAY, OutKind.BYTES, OutKind.SCALAR_ARRAY):
                T = "uint8_t" if o.kind is OutKind.BYTES else self.reg.resolve(o.type)
                if o.two_call:
                    cnt = next(q for q in s.outs if q.name == o.two_call)
                    L.append(f"  if (a.cap_{cnt.name}) {{")
                    L.append(f"    const uint64_t n = a.cap_{cnt.name} - 1;")
                    L.append(f'    if (n > (1u << 20)) return c.fail("{s.name}.{o.name}", "capacity too large");')
                    L.append(f"    a.v_{cnt.name} = static_cast<decltype(a.v_{cnt.name})>(n);")
                    L.append(f"    a.{o.name} = reinterpret_cast<decltype(a.{o.name})>(c.arena->make<{T}>(n ? n : 1));")
                    L.append(f'    if (!a.{o.name}) return c.fail("{s.name}.{o.name}", "out of memory");')
                    if o.kind is OutKind.STRUCT_ARRAY and self.reg.struct(o.type).stype:
                        L.append(f"    auto* arr = reinterpret_cast<{T}*>(a.{o.name});")
                        L.append("    for (uint64_t i = 0; i < n; ++i) {")
                        L.append(f"      arr[i].sType = {self.reg.struct(o.type).stype};")
                        if self.reg.struct(o.type).member("pNext"):
                            ivo = o.in_vo
                            L.append(
                                f"      if (!make_chain(c, t->GetPointer<const Vec<uint32_t>*>({ivo}), &arr[i].pNext)) return false;"
                            )
                        L.append("    }")
                    L.append("  }")
                else:
                    n = c_expr(o.len_expr, names, "a.")
                    L.append("  {")
                    L.append(f"    const size_t n = static_cast<size_t>({n});")
                    L.append(f"    a.{o.name} = reinterpret_cast<decltype(a.{o.name})>(c.arena->make<{T}>(n ? n : 1));")
                    L.append(f'    if (!a.{o.name}) return c.fail("{s.name}.{o.name}", "out of memory");')
                    if o.kind is OutKind.STRUCT_ARRAY and self.reg.struct(o.type).stype:
                        L.append(f"    auto* arr = reinterpret_cast<{T}*>(a.{o.name});")
                        L.append(f"    for (size_t i = 0; i < n; ++i) arr[i].sType = {self.reg.struct(o.type).stype};")
                    L.append("  }")
        L.extend(self.unstride(s))
        L.append("  return true;")
        L.append("}")
        L.append("")
        L.append(f"static bool run_{s.name}(HostContext& c, const uint8_t* data, size_t size) {{")
        L.append(f"  const Table* t = verify_root(data, size, verify_args_{s.name});")
        L.append(f'  if (!t) return c.fail("{s.name}", "message fails verification");')
        if s.blocking:
            if s.name in self.checked:
                # Checked on the session thread before anything waits (and before the copy below).
                L.append(f"  if (c.handlers.check_{s.name}) {{")
                L.append(f"    Args_{s.name} a;")
                L.append(f"    if (!decode_args_{s.name}(c, t, a)) return false;")
                L.extend("  " + x for x in self.check_lines(s))
                L.append("  }")
            # The waiter thread needs the message and the decoded arguments to outlive the
            # session's arena: copy both into a job of their own.
            L.append("  uint64_t waited_ns = 0;")
            L.append(f"  if (c.handlers.try_{s.name}) {{")
            L.append("    // Most waits find their work done or nearly done: answering here saves handing the")
            L.append("    // call to a waiter thread (a wake-up and a thread switch per call).")
            L.append(f"    Args_{s.name} a;")
            L.append(f"    if (!decode_args_{s.name}(c, t, a)) return false;")
            L.append(f"    if (c.handlers.try_{s.name}(c, a)) {{")
            L.append(f"      reply_{s.name}(c, c.reply_builder(), a, c.reply_seq);")
            L.append("      return true;")
            L.append("    }")
            L.append("    waited_ns = a.waited_ns;")
            L.append("  }")
            L.append("  struct Job {")
            L.append("    std::vector<uint64_t> msg;")
            L.append("    Arena arena{size_t{64} << 20};")
            L.append(f"    Args_{s.name} a;")
            L.append("    uint64_t seq = 0;")
            L.append("  };")
            L.append("  auto job = std::make_shared<Job>();")
            L.append("  job->msg.resize((size + 7) / 8);")
            L.append("  std::memcpy(job->msg.data(), data, size);")
            L.append("  job->seq = c.reply_seq;")
            L.append(
                "  const Table* jt = flatbuffers::GetRoot<Table>(reinterpret_cast<const uint8_t*>(job->msg.data()));"
            )
            L.append("  Arena* saved = c.decode.arena;")
            L.append("  c.decode.arena = &job->arena;")
            L.append(f"  const bool ok = decode_args_{s.name}(c, jt, job->a);")
            L.append("  c.decode.arena = saved;")
            L.append("  if (!ok) return false;")
            L.append("  job->a.waited_ns = waited_ns;")
            L.append("  HostContext* hc = &c;")
            L.append("  return c.run_blocking([hc, job] {")
            L.append(f"    hc->handlers.{s.name}(*hc, job->a);")
            L.append(f"    reply_{s.name}(*hc, hc->reply_builder(), job->a, job->seq);")
            L.append("  });")
            L.append("}")
            return "\n".join(L)
        L.append(f"  Args_{s.name} a;")
        L.append(f"  if (!decode_args_{s.name}(c, t, a)) return false;")
        L.extend(self.call_handler(s))
        L.append("}")
        return "\n".join(L)

    def check_lines(self, s: CommandShape) -> list[str]:
        """The check hook on decoded `a`. A check that fails either ends the session (it called
        c.fail) or, for a call the guest waits on, answers it instead of the driver: the VkResult
        the guest gets, or (a query returning void) the outputs it filled in. The driver never
        sees the call."""
        L = [f"  if (c.handlers.check_{s.name} && !c.handlers.check_{s.name}(c, a)) {{"]
        L.append("    if (!c.decode.error.empty()) return false;")
        if s.sync and s.cmd.ret == "VkResult":
            L.append(f'    if (a.result >= 0) return c.fail("{s.name}", "rejected by its check without a reason");')
            if s.unasked:
                L.append(
                    f'    if (!c.wants_reply) return c.fail("{s.name}", ("VkResult " + std::to_string(a.result) + '
                    f'" from its check, after the guest was told VK_SUCCESS (sent without asking)").c_str());'
                )
            L.append(f"    reply_{s.name}(c, c.reply_builder(), a, c.reply_seq);")
            L.append("    return true;")
        elif s.sync and s.cmd.ret == "void":
            L.append(f"    reply_{s.name}(c, c.reply_builder(), a, c.reply_seq);")
            L.append("    return true;")
        else:
            L.append(f'    return c.fail("{s.name}", "rejected by its check without a reason");')
        L.append("  }")
        return L

    def call_handler(self, s: CommandShape) -> list[str]:
        """The end of run_vkX: the check hook, the handler, the record hook, the reply."""
        L = []
        reply = [f"  reply_{s.name}(c, c.reply_builder(), a, c.reply_seq);"] if s.sync else []
        if s.unasked:
            # async_unasked.txt: answered only when asked; the guest did not wait for the rest.
            reply = [f"  if (c.wants_reply) {reply[0].strip()}"]
        if s.name in self.checked:
            L.extend(self.check_lines(s))
        L.append(f"  c.handlers.{s.name}(c, a);")
        # A handler's c.fail() ends the session, with no reply of made-up results.
        L.append("  if (!c.decode.error.empty()) return false;")
        L.extend(self._async_failure(s))
        if s.name in self.checked:
            ok = "a.result >= 0 && " if s.cmd.ret == "VkResult" else ""
            L.append(f"  if ({ok}c.handlers.record_{s.name}) c.handlers.record_{s.name}(c, a);")
        L.extend(reply)
        L.append("  return true;")
        return L

    def host_reply(self, s: CommandShape) -> str:
        names = {p.name for p in s.cmd.params}
        fr, cr = self.reply_ret_field(s)
        L = [f"void reply_{s.name}(HostContext& c, Builder& b, Args_{s.name}& a, uint64_t seq) {{"]
        L.append("  HandleMap& h = *c.decode.handles;")
        L.append("  (void)h; (void)a;")
        L.append("  b.Clear();")
        counts = {o.name: o for o in s.outs if o.kind is OutKind.COUNT}
        offs = []
        for o in s.outs:
            if o.kind in (OutKind.HANDLE, OutKind.HANDLE_ARRAY, OutKind.COUNT, OutKind.SCALAR):
                continue
            v = f"o_{o.name}"
            offs.append((o, v))
            if o.kind is OutKind.STRUCT:
                L.append(f"  Off {v} = a.{o.name} ? encode_{o.type}(b, *a.{o.name}, h) : 0;")
                continue
            if o.two_call:
                n = f"static_cast<size_t>(a.v_{o.two_call})"
                L.append(f"  const size_t n_{o.name} = a.{o.name} ? {n} : 0;")
            else:
                n = c_expr(o.len_expr, names, "a.")
                L.append(f"  const size_t n_{o.name} = a.{o.name} ? static_cast<size_t>({n}) : 0;")
            if o.kind is OutKind.STRUCT_ARRAY:
                L.append(f"  Off {v} = 0;")
                L.append(f"  if (n_{o.name}) {{")
                L.append(f"    std::vector<Off> offs(n_{o.name});")
                L.append(f"    for (size_t i = 0; i < n_{o.name}; ++i) offs[i] = encode_{o.type}(b, a.{o.name}[i], h);")
                L.append(f"    {v} = table_vector(b, offs.data(), n_{o.name});")
                L.append("  }")
            elif o.kind is OutKind.BYTES:
                L.append(f"  Off {v} = n_{o.name} ? bytes_vector(b, a.{o.name}, n_{o.name}) : 0;")
            else:
                ct = self.reg.scalar_info(o.type)[1]
                L.append(
                    f"  Off {v} = n_{o.name} ? scalar_vector(b, reinterpret_cast<const {ct}*>(a.{o.name}), n_{o.name}) : 0;"
                )
        L.append("  const Off start = b.StartTable();")
        if s.cmd.ret != "void":
            L.append(f"  add_scalar<{cr}>(b, 4 /* result */, static_cast<{cr}>(a.result));")
        for o in s.outs:
            vo = o.vo
            if o.kind in (OutKind.COUNT, OutKind.SCALAR):
                L.append(f"  add_scalar<uint64_t>(b, {vo}, static_cast<uint64_t>(a.v_{o.name}));")
        for o, v in offs:
            L.append(f"  add_offset(b, {o.vo}, {v});")
        L.append("  b.Finish(flatbuffers::Offset<Table>(b.EndTable(start)));")
        res = "static_cast<int32_t>(a.result)" if s.cmd.ret == "VkResult" else "0"
        L.append(f"  c.send_reply(seq, kCmd_{s.name}, {res}, b);")
        L.append("}")
        return "\n".join(L)

    def host_default(self, s: CommandShape) -> str:
        L = [f"void default_{s.name}(HostContext& c, Args_{s.name}& a) {{"]
        first = s.cmd.params[0]
        args = ", ".join(f"a.{p.name}" for p in s.cmd.params)
        if object_of(s, self.reg) == "global":
            L.append("  (void)a;")
            L.append(f'  c.fail("{s.name}", "no default handler for a global command");')
            L.append("}")
            return "\n".join(L)
        call = f"c.dispatch_of(handle_bits(a.{first.name})).{s.name}"
        L.append(f"  auto fn = {call};")
        L.append(
            f'  if (!fn) {{ c.decode.fail("{s.name}", "not supported by the host driver", Fault::kDriver); return; }}'
        )
        if s.name.startswith("vkDestroy") and len(s.cmd.params) >= 2:
            # A pending blocking call may still use what is destroyed (a fence waited for).
            p = s.cmd.params[1]
            if self.reg.is_handle(p.type) and p.ptr == 0:
                L.append(f'  if (a.{p.name} && !c.destroy_ok("{s.name}", "{p.name}", handle_bits(a.{p.name}))) return;')
        child = self.may_defer_destroy(s)
        if child:
            # Work in flight may still use it: the session may destroy it once that is done.
            x = s.cmd.params[1].name
            L.append(
                f"  if (!a.{x} || !c.defer_destroy(handle_bits(a.{first.name}), {self.objtype(child)}, handle_bits(a.{x})))"
            )
            L.append(f"    fn({args});")
            ok = "true"
        elif s.cmd.ret == "void":
            L.append(f"  fn({args});")
            ok = "true"
        else:
            L.append(f"  a.result = fn({args});")
            ok = "a.result >= 0" if s.cmd.ret == "VkResult" else "true"
        owner = self.owners.get(s.name, "")
        owner_expr = f"handle_bits(a.{owner})" if owner else f"handle_bits(a.{first.name})"
        for o in s.outs:
            if o.kind is OutKind.HANDLE:
                L.append(
                    f"  if ({ok}) c.add_object({self.objtype(o.type)}, a.id_{o.name}, handle_bits(*a.{o.name}), {owner_expr});"
                )
            elif o.kind is OutKind.HANDLE_ARRAY:
                L.append(f"  if ({ok} && a.ids_{o.name}) {{")
                L.append(f"    for (flatbuffers::uoffset_t i = 0; i < a.ids_{o.name}->size(); ++i)")
                L.append(
                    f"      if (a.{o.name}[i]) c.add_object({self.objtype(o.type)}, a.ids_{o.name}->Get(i), handle_bits(a.{o.name}[i]), {owner_expr});"
                )
                L.append("  }")
        # destroys and frees drop their objects from the table
        if s.name.startswith("vkDestroy") and len(s.cmd.params) >= 2:
            p = s.cmd.params[1]
            if self.reg.is_handle(p.type) and p.ptr == 0:
                L.append(f"  if (a.{p.name}) c.remove_object({self.objtype(p.type)}, handle_bits(a.{p.name}));")
        if s.name.startswith("vkFree"):
            # vkFreeMemory(device, memory) frees its second parameter; vkFreeCommandBuffers and
            # vkFreeDescriptorSets free the array and keep the pool they name.
            frees_array = any(self.reg.is_handle(p.type) and p.ptr == 1 and p.len for p in s.cmd.params[1:])
            for p in s.cmd.params[1:]:
                if self.reg.is_handle(p.type) and p.ptr == 1 and p.len:
                    L.append(f"  for (size_t i = 0; i < static_cast<size_t>(a.{p.len[0]}); ++i)")
                    L.append(
                        f"    if (a.{p.name}[i]) c.remove_object({self.objtype(p.type)}, handle_bits(a.{p.name}[i]));"
                    )
                elif self.reg.is_handle(p.type) and p.ptr == 0 and p is s.cmd.params[1] and not frees_array:
                    L.append(f"  if (a.{p.name}) c.remove_object({self.objtype(p.type)}, handle_bits(a.{p.name}));")
        L.append("}")
        return "\n".join(L)

    def host_tables(self) -> str:
        L = [banner("gen_commands.py", self.reg), '#include "bypass/wire/host_context.h"', "", NS_OPEN]
        for s in self.shapes:
            L.append(f"bool run_entry_{s.name}(HostContext& c, const uint8_t* data, size_t size);")
        L.append("")
        L.append("const RunFn kRunTable[kCommandIdLimit] = {")
        by_id = {self.p.command_id(s.name): s for s in self.shapes}
        for i in range(max(by_id) + 1):
            L.append(f"  {'run_entry_' + by_id[i].name if i in by_id else 'nullptr'},")
        L.append("};")
        L.append("")
        L.append("const char* command_name(uint16_t id) {")
        L.append("  switch (id) {")
        for s in self.shapes:
            L.append(f'    case kCmd_{s.name}: return "{s.name}";')
        L.append('    default: return "(unknown command)";')
        L.append("  }")
        L.append("}")
        L.append("")
        L += membership_switch(
            "bool command_blocks(uint16_t id)", [f"kCmd_{s.name}" for s in self.shapes if s.blocking]
        )
        L.append("AnyFn handler_of(const Handlers& h, uint16_t id) {")
        L.append("  switch (id) {")
        for s in self.shapes:
            L.append(f"    case kCmd_{s.name}: return reinterpret_cast<AnyFn>(h.{s.name});")
        L.append("    default: return nullptr;")
        L.append("  }")
        L.append("}")
        L.append("")
        L.append("Handlers default_handlers() {")
        L.append("  Handlers h;")
        for s in self.shapes:
            L.append(f"  h.{s.name} = default_{s.name};")
        L.append("  return h;")
        L.append("}")
        L.append("")
        for level, loader, handle in (("instance", "gipa", "instance"), ("device", "gdpa", "device")):
            sig = (
                "PFN_vkGetInstanceProcAddr gipa, VkInstance instance"
                if level == "instance"
                else "PFN_vkGetDeviceProcAddr gdpa, VkDevice device"
            )
            L.append(f"void load_{level}_dispatch(Dispatch& d, {sig}) {{")
            for s in self.dispatchable:
                if level == "device" and s.level != "device":
                    continue
                if level == "instance" and s.level == "global":
                    continue
                names = [s.name] + s.aliases
                if level == "device":
                    L.append(f"  d.{s.name} = nullptr;  // the device's own entry point, not the loader's trampoline")
                for n in names:
                    L.append(
                        f'  if (!d.{s.name}) d.{s.name} = reinterpret_cast<PFN_{s.name}>({loader}({handle}, "{n}"));'
                    )
            L.append("}")
            L.append("")
        L.append(NS_CLOSE)
        return "\n".join(L)

    def write(self, src_dir: str, include_dir: str) -> list[str]:
        files = {
            "commands.h": self.header(),
            "host_commands.h": self.host_header(),
            "host_tables.cpp": self.host_tables(),
        }
        for obj in OBJECTS:
            group = [s for s in self.shapes if object_of(s, self.reg) == obj]
            if not group:
                continue
            tail = ["", "#include <cstring>", "#include <type_traits>", "", NS_OPEN]
            g = [banner("gen_commands.py", self.reg), include("commands.h")] + tail
            h = [banner("gen_commands.py", self.reg), '#include "bypass/wire/host_context.h"'] + tail
            for s in group:
                g.append(self.guest_encode(s))
                g.append("")
                if s.sync:
                    g.append(self.guest_decode_reply(s))
                    g.append("")
                h.append(self.host_run(s))
                h.append("")
                h.append(
                    f"bool run_entry_{s.name}(HostContext& c, const uint8_t* data, size_t size) {{ return run_{s.name}(c, data, size); }}"
                )
                h.append("")
                h.append(self.host_default(s))
                h.append("")
                if s.sync:
                    h.append(self.host_reply(s))
                    h.append("")
            g.append(NS_CLOSE)
            h.append(NS_CLOSE)
            files[f"guest_{obj}.cpp"] = "\n".join(g)
            files[f"host_{obj}.cpp"] = "\n".join(h)
        write_files(src_dir, include_dir, files)
        return sorted(files)
