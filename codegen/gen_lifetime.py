"""Object lifetimes on the host, from vk.xml: which commands destroy objects, and the order a
session's teardown destroys a device's children in.

Output: wire/host_lifetime.cpp (declared in bypass/wire/host_context.h)
  command_destroys(id)    vkDestroy* and vkFree* commands: the session waits for pending
                          calls before it runs one
  command_may_defer_destroy(id)
                          those of them that destroy one child of a device (vkDestroyX(device,
                          x, pAllocator)): the session may destroy it once work in flight is
                          done (HostContext::defer_destroy) instead of waiting for that work
  kTeardownOrder          the device children that have a vkDestroyX(device, x, pAllocator) or
                          vkFreeX(device, x, pAllocator), users before what they use
  destroy_device_child()  calls that command for one object

The order: a type is destroyed before its vk.xml parent, before every type its create info
names (an image view before its image, a pipeline before its layout and shader modules; for
objects freed with their pool, what their allocation names: a descriptor pool before the set
layouts of its sets), and
before the memory it is bound to (vkBind*: a buffer before its memory). Structures that only
extend a create info (pNext) add an edge where it makes no cycle: a dedicated allocation names
its image, but the image is bound to that memory, so the image goes first.
"""

from __future__ import annotations

from common import banner, membership_switch, write_files
from gen_commands import CommandGenerator
from wire import Protocol


class LifetimeGenerator:
    def __init__(self, proto: Protocol, cg: CommandGenerator):
        self.p, self.cg, self.reg = proto, cg, proto.reg
        self.destroyers = self._destroyers()
        self.order = self._order()

    def _destroyers(self) -> dict[str, str]:
        """Device-child handle type -> the command that destroys one (d.vkX(device, x, nullptr))."""
        out = {}
        for s in self.cg.dispatchable:
            child = self.cg.child_destroyed(s)
            if child:
                out[child] = s.name
        return out

    def _handles_in(self, type_name: str, chain: bool, seen: set[str]) -> set[str]:
        """Handle types a parameter of `type_name` names, through struct members (and, with
        `chain`, the structs that may extend them)."""
        t = self.reg.resolve(type_name)
        if t in seen:
            return set()
        seen.add(t)
        if self.reg.is_handle(t):
            return {t}
        out: set[str] = set()
        if t in self.reg.structs:
            for m in self.reg.structs[t].members:
                if m.name != "pNext":
                    out |= self._handles_in(m.type, chain, seen)
            if chain:
                for e in self.reg.extenders(t):
                    if e in self.p.chainable:
                        out |= self._handles_in(e, chain, seen)
        return out

    def _creators(self, handle: str) -> list:
        """Covered commands that return a new `handle` (vkCreateX, vkAllocateX, ...)."""
        out = []
        for s in self.cg.dispatchable:
            for p in s.cmd.params:
                if p.ptr == 1 and not p.const and self.reg.resolve(p.type) == handle:
                    out.append(s)
        return out

    def _order(self) -> list[str]:
        types = sorted(self.destroyers)
        strong: dict[str, set[str]] = {t: set() for t in types}  # t is destroyed before each
        weak: dict[str, set[str]] = {t: set() for t in types}
        for t in types:
            h = self.reg.handles[t]
            if h.parent in strong:
                strong[t].add(h.parent)
            for s in self._creators(t):
                for p in s.cmd.params:
                    if p.ptr == 1 and not p.const:
                        continue
                    strong[t] |= self._handles_in(p.type, False, set()) & set(types)
                    weak[t] |= self._handles_in(p.type, True, set()) & set(types)
        # Objects freed with their parent (descriptor sets, command buffers): what their
        # allocation names outlives the parent too.
        for h in self.reg.handles.values():
            if h.parent in strong and h.name not in strong:
                for s in self._creators(h.name):
                    for p in s.cmd.params:
                        if not (p.ptr == 1 and not p.const):
                            strong[h.parent] |= self._handles_in(p.type, False, set()) & set(types)
        for s in self.cg.dispatchable:
            if not s.name.startswith("vkBind"):
                continue
            named: set[str] = set()
            for p in s.cmd.params:
                named |= self._handles_in(p.type, False, set())
            if "VkDeviceMemory" in named:
                for t in named & set(types) - {"VkDeviceMemory"}:
                    strong[t].add("VkDeviceMemory")
        for t in types:
            strong[t].discard(t)
            weak[t] -= strong[t] | {t}

        def reaches(a: str, b: str) -> bool:
            todo, seen = [a], set()
            while todo:
                x = todo.pop()
                if x == b:
                    return True
                if x not in seen:
                    seen.add(x)
                    todo += strong[x]
            return False

        for t in types:
            for u in sorted(weak[t]):
                if not reaches(u, t):
                    strong[t].add(u)
        # Kahn's algorithm; ties in vk.xml's order of handle types, so the output is stable.
        rank = {name: i for i, name in enumerate(self.reg.handles)}
        before = {t: {u for u in types if t in strong[u]} for t in types}  # destroyed before t
        order: list[str] = []
        ready = sorted((t for t in types if not before[t]), key=rank.get)
        while ready:
            t = ready.pop(0)
            order.append(t)
            for u in strong[t]:
                before[u].discard(t)
                if not before[u] and u not in order and u not in ready:
                    ready.append(u)
            ready.sort(key=rank.get)
        if len(order) != len(types):
            raise SystemExit(f"codegen: destroy order has a cycle among {sorted(set(types) - set(order))}")
        return order

    def source(self) -> str:
        L = [banner("gen_lifetime.py", self.reg), '#include "bypass/wire/host_context.h"', ""]
        L += ["namespace bypass::wire {", ""]
        destroys = [f"kCmd_{s.name}" for s in self.cg.shapes if s.name.startswith(("vkDestroy", "vkFree"))]
        L += membership_switch("bool command_destroys(uint16_t id)", destroys)
        defers = [f"kCmd_{s.name}" for s in self.cg.shapes if self.cg.may_defer_destroy(s)]
        L += membership_switch("bool command_may_defer_destroy(uint16_t id)", defers)
        L.append("const VkObjectType kTeardownOrder[] = {")
        for t in self.order:
            L.append(f"    {self.reg.handles[t].objtype},  // {self.destroyers[t]}")
        L.append("};")
        L.append(f"const size_t kTeardownOrderCount = {len(self.order)};")
        L.append("")
        L.append("bool destroy_device_child(const Dispatch& d, VkDevice device, VkObjectType type, uint64_t handle) {")
        L.append("  switch (type) {")
        for t in self.order:
            fn = self.destroyers[t]
            L.append(f"    case {self.reg.handles[t].objtype}:")
            L.append(f"      if (d.{fn}) d.{fn}(device, handle_from_bits<{t}>(handle), nullptr);")
            L.append("      return true;")
        L.append("    default:")
        L.append("      return false;")
        L.append("  }")
        L.append("}")
        L.append("")
        L.append("}  // namespace bypass::wire")
        return "\n".join(L) + "\n"

    def write(self, src_dir: str, include_dir: str) -> list[str]:
        write_files(src_dir, include_dir, {"host_lifetime.cpp": self.source()})
        return ["host_lifetime.cpp"]
