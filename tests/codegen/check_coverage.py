#!/usr/bin/env python3
"""Checks build/generated/coverage.json against vk.xml.

  check_coverage.py --coverage build/generated/coverage.json --registry vk.xml

coverage.json must be well-formed, list every command of the `vulkan` API in vk.xml (aliases
included) and nothing else, each as "generated", "handwritten" or "unsupported: <reason>",
and no Vulkan 1.0-1.3 core command may be unsupported. The checker also proves on a doctored
copy that it notices a core command turned unsupported and a missing command.
Prints `N passed, N failed` (ctest reads the exit code).
"""

import argparse
import copy
import json
import sys
import xml.etree.ElementTree as ET

CORE = ("VK_VERSION_1_0", "VK_VERSION_1_1", "VK_VERSION_1_2", "VK_VERSION_1_3")


def vulkan_api(elem) -> bool:
    api = elem.get("api")
    return api is None or "vulkan" in api.split(",")


def registry(path: str):
    root = ET.parse(path).getroot()
    commands = set()
    for c in root.find("commands"):
        if c.tag != "command" or not vulkan_api(c):
            continue
        commands.add(c.get("name") if c.get("alias") else c.find("proto").find("name").text)
    core = set()
    for f in root.findall("feature"):
        if f.get("name") in CORE and vulkan_api(f):
            for req in f.findall("require"):
                for c in req.findall("command"):
                    core.add(c.get("name"))
    version = 0
    for t in root.find("types"):
        if t.get("category") == "define" and t.find("name") is not None and t.find("name").text == "VK_HEADER_VERSION":
            version = int("".join(t.itertext()).split()[-1])
    return commands, core, version


def problems(doc, commands: set, core: set, version: int) -> list:
    out = []
    if not isinstance(doc, dict) or not isinstance(doc.get("commands"), dict):
        return ["top level must be an object with a `commands` object"]
    if doc.get("registry_version") != version:
        out.append(f"registry_version {doc.get('registry_version')} != vk.xml's {version}")
    cov = doc["commands"]
    for name in sorted(commands - set(cov)):
        out.append(f"{name}: in vk.xml but missing")
    for name in sorted(set(cov) - commands):
        out.append(f"{name}: listed but not a vulkan command in vk.xml")
    for name, status in sorted(cov.items()):
        if not isinstance(status, str):
            out.append(f"{name}: status is not a string")
        elif status not in ("generated", "handwritten") and not (
            status.startswith("unsupported: ") and status[len("unsupported: ") :].strip()
        ):
            out.append(f"{name}: bad status {status!r}")
        elif name in core and status.startswith("unsupported"):
            out.append(f"{name}: core command is {status}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--coverage", required=True)
    ap.add_argument("--registry", required=True)
    args = ap.parse_args()
    commands, core, version = registry(args.registry)
    passed = failed = 0

    def check(ok: bool, what: str) -> None:
        nonlocal passed, failed
        if ok:
            passed += 1
        else:
            failed += 1
            print(f"FAIL: {what}")

    try:
        with open(args.coverage) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        print(f"FAIL: {args.coverage}: {e}")
        print("0 passed, 1 failed")
        return 1
    found = problems(doc, commands, core, version)
    for p in found:
        print(f"  {p}")
    check(not found, f"{args.coverage} agrees with vk.xml ({len(found)} problems)")

    cov = doc.get("commands", {})
    counts = {}
    for s in cov.values():
        key = s.split(":")[0]
        counts[key] = counts.get(key, 0) + 1
    core_states = {}
    for name in core:
        key = cov.get(name, "missing").split(":")[0]
        core_states[key] = core_states.get(key, 0) + 1
    print(f"coverage: {len(cov)} commands: {counts}; core 1.0-1.3 ({len(core)}): {core_states}")

    # The checker itself must notice what it guards against.
    doctored = copy.deepcopy(doc)
    victim = sorted(core)[0]
    doctored["commands"][victim] = "unsupported: doctored"
    check(any(victim in p for p in problems(doctored, commands, core, version)), "detects an unsupported core command")
    doctored = copy.deepcopy(doc)
    del doctored["commands"][victim]
    check(any(victim in p for p in problems(doctored, commands, core, version)), "detects a missing command")
    doctored = copy.deepcopy(doc)
    doctored["commands"][victim] = "unsupported:"
    check(
        any(victim in p for p in problems(doctored, commands, core, version)),
        "detects an unsupported status without a reason",
    )

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
