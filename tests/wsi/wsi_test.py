#!/usr/bin/env python3
"""Presentation and OpenGL through bypass: every case runs real programs on its own Xvfb
(a free display number chosen by the server, -displayfd) with its own bypassd, natively on
lavapipe and through the bypass ICD, and compares.

  caps               surface capabilities, formats, present modes, present support: identical
  present-modes      FIFO, FIFO_RELAXED, MAILBOX, IMMEDIATE: every frame succeeds, the window
                     shows the last frame, acquire with no free image is NOT_READY / TIMEOUT
  paced-modes        with a 30 Hz refresh clock: FIFO shows every frame and paces the program,
                     MAILBOX never waits and drops frames, IMMEDIATE is not paced
  xlib-and-putimage  Xlib surfaces, and the core PutImage path without MIT-SHM
  resize             a resized window is reported (SUBOPTIMAL, as natively), the recreated
                     swapchain fills the new size
  destroy-window     a window destroyed under a swapchain: SURFACE_LOST, no crash (as natively)
  headless           VK_EXT_headless_surface presents without any window
  private-data       private data on a headless swapchain and its surface (the ICD's own objects)
  vkcube             vkcube --c 300: the window's last frame is pixel-identical to native
  vkcube-shadow      the same with BYPASS_MEMORY=shadow (readback through memshare barriers)
  glxinfo            zink on the ICD reports the GL version and extensions zink reports natively
  glxgears           glxgears through zink on the ICD's swapchain draws its gears, quits cleanly
  egl-surfaceless    OpenGL on surfaceless EGL through zink: same version, extensions, pixels,
                     and GL_EXT_memory_object_fd interop with the probe's own Vulkan buffer
  guest-killed       a guest SIGKILLed while presenting: bypassd and another presenting guest
                     go on, its objects are released

Screenshots are written to $BYPASS_WSI_SHOTS (default: the work directory).
"""

import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import harness as h  # noqa: E402
import programs  # noqa: E402
from harness import check, log  # noqa: E402

SCREEN_W, SCREEN_H = 800, 700
# GL extensions zink cannot offer through bypass. (GL_EXT_memory_object and _fd were here
# until the ICD exposed VK_KHR_external_memory_fd.)
KNOWN_GL_GAPS = set()
ZINK_SW = programs.ZINK_ENV
# zink presenting through a Vulkan swapchain (kopper): on Mesa 22.3 only with the loader
# override; with GALLIUM_DRIVER=zink alone zink draws but shows nothing, natively too.
ZINK_KOPPER = {"LIBGL_ALWAYS_SOFTWARE": "1", "MESA_LOADER_DRIVER_OVERRIDE": "zink"}
GEAR_COLORS = {"red": (193, 24, 0), "green": (0, 193, 48), "blue": (48, 48, 242)}


class Xvfb:
    """An X server on a display number it picks itself; dies with the test."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.display = None
        self.proc = None

    def start(self):
        with open(os.path.join(self.workdir, "xvfb.log"), "ab") as log_file:
            self.proc, self.display = programs.start_xvfb(
                h.env_path("BYPASS_XVFB"), f"{SCREEN_W}x{SCREEN_H}x24", log_file, h._die_with_parent
            )
        h._children.append(self.proc)  # the harness's final sweep stops it, whatever happens
        check(self.display, "Xvfb did not report a display number; see xvfb.log")
        log(f"Xvfb on {self.display}")
        return self

    def env(self, env):
        env = dict(env)
        env["DISPLAY"] = self.display
        return env

    def screenshot(self, path):
        """The whole screen as PNG (xwd | convert), and its raw RGB bytes."""
        xwd = subprocess.run(["xwd", "-root", "-silent", "-display", self.display], capture_output=True, timeout=30)
        check(xwd.returncode == 0, f"xwd failed: {xwd.stderr.decode(errors='replace')}")
        png = subprocess.run(["convert", "xwd:-", "png:" + path], input=xwd.stdout, capture_output=True, timeout=30)
        check(png.returncode == 0, f"convert failed: {png.stderr.decode(errors='replace')}")
        raw = subprocess.run(["convert", path, "-depth", "8", "rgb:-"], capture_output=True, timeout=30)
        check(
            raw.returncode == 0 and len(raw.stdout) == SCREEN_W * SCREEN_H * 3,
            f"cannot read back {path} ({len(raw.stdout)} bytes)",
        )
        return raw.stdout


def shots_dir(workdir):
    d = os.environ.get("BYPASS_WSI_SHOTS") or workdir
    os.makedirs(d, exist_ok=True)
    return d


def setup(workdir, need_server=True):
    x = Xvfb(workdir).start()
    server = h.Bypassd(workdir).start() if need_server else None
    native = x.env(h.native_env(workdir))
    guest = x.env(h.unsanitized_guest_env(server.guest_env())) if server else None
    return x, server, native, guest


def parse(text):
    """ "key: value" lines of the probes, later keys win."""
    out = {}
    for line in text.splitlines():
        if ": " in line:
            k, v = line.split(": ", 1)
            out[k.strip()] = v.strip()
    return out


def wsi_stats(stderr):
    """The ICD's BYPASS_WSI_STATS lines: one dict per destroyed swapchain."""
    stats = []
    for m in re.finditer(
        r"bypass wsi: swapchain (\d+)x(\d+) (\w+), (\d+) images, ([\w-]+): presents (\d+), "
        r"shown (\d+), dropped (\d+), put ([\d.]+) us avg, memshare transfers (\d+) into the ([\w -]+)$",
        stderr,
        re.M,
    ):
        stats.append(
            {
                "size": (int(m[1]), int(m[2])),
                "mode": m[3],
                "images": int(m[4]),
                "path": m[5],
                "presents": int(m[6]),
                "shown": int(m[7]),
                "dropped": int(m[8]),
                "put_us": float(m[9]),
                "transfers": int(m[10]),
                "target": m[11],
            }
        )
    return stats


def probe(env, workdir, tag, *args, timeout=60, ok=True):
    r = h.run([h.env_path("BYPASS_WSI_PROBE")] + list(args), env, workdir, tag, timeout)
    if ok:
        h.check_ok(r, f"wsi_probe {' '.join(args)} ({tag})")
    return r


def both(x, native, guest, workdir, *args, stats=False):
    n = probe(native, workdir, "native-" + "-".join(args).replace("-", ""), *args)
    genv = dict(guest)
    if stats:
        genv["BYPASS_WSI_STATS"] = "1"
    b = probe(genv, workdir, "bypass-" + "-".join(args).replace("-", ""), *args)
    check("bypass (" in b.stdout, f"the bypass run did not use the bypass device:\n{b.describe()}")
    check("bypass (" not in n.stdout, f"the native run used the bypass device:\n{n.describe()}")
    return n, b


# ---------------------------------------------------------------- cases
def case_caps(workdir, _arg):
    x, server, native, guest = setup(workdir)
    for extra in ([], ["--xlib"]):
        n, b = both(x, native, guest, workdir, "caps", *extra)
        pn, pb = parse(n.stdout), parse(b.stdout)
        for key in ("capabilities", "formats", "present_modes", "present_support"):
            check(
                pn.get(key) == pb.get(key),
                f"{key} differs{' (xlib)' if extra else ''}: native {pn.get(key)!r}, " f"bypass {pb.get(key)!r}",
            )
        log(
            f"caps{' (xlib)' if extra else ''}: {pb['capabilities']}; formats {pb['formats']}; "
            f"modes {pb['present_modes']}"
        )
    server.check_alive()


def case_present_modes(workdir, _arg):
    x, server, native, guest = setup(workdir)
    for mode in ("fifo", "fifo_relaxed", "mailbox", "immediate"):
        n, b = both(x, native, guest, workdir, "present", "--mode", mode, "--frames", "120", stats=True)
        pn, pb = parse(n.stdout), parse(b.stdout)
        for p in (pn, pb):
            check(p["window_mismatches"] == "0", f"{mode}: the window does not show the last frame: {p}")
        # The spec's answers when every image is the program's (native lavapipe says NOT_READY
        # for both).
        check(pb["acquire_none_free_timeout0"] == "VK_NOT_READY", f"{mode}: timeout 0 gave {pb}")
        check(pb["acquire_none_free_timeout1ms"] == "VK_TIMEOUT", f"{mode}: timeout 1 ms gave {pb}")
        st = wsi_stats(b.stderr)
        check(len(st) == 1 and st[0]["presents"] == 120, f"{mode}: presenter statistics {st}\n{b.stderr[-2000:]}")
        s = st[0]
        check(s["shown"] + s["dropped"] == s["presents"], f"{mode}: every present is shown or dropped: {s}")
        if mode.startswith("fifo"):
            check(s["dropped"] == 0, f"{mode} must show every frame: {s}")
        # every shown frame came over by a memshare transfer from bypassd's service
        check(s["transfers"] == s["shown"], f"{mode}: frames moved by memshare transfers: {s}")
        log(
            f"{mode}: native {pn['seconds']} s, bypass {pb['seconds']} s for 120 frames 320x240; shown {s['shown']}, "
            f"dropped {s['dropped']}, {s['path']} put {s['put_us']} us"
        )
    server.check_alive()


def case_paced_modes(workdir, _arg):
    x, server, native, guest = setup(workdir)
    env = dict(guest)
    env["BYPASS_WSI_STATS"] = "1"
    env["BYPASS_WSI_REFRESH_HZ"] = "30"
    frames = 30
    results = {}
    for mode in ("fifo", "fifo_relaxed", "mailbox", "immediate"):
        r = probe(env, workdir, "paced-" + mode, "present", "--mode", mode, "--frames", str(frames))
        p = parse(r.stdout)
        st = wsi_stats(r.stderr)
        check(len(st) == 1, f"{mode}: statistics {st}")
        results[mode] = (float(p["seconds"]), st[0])
        log(f"{mode} at 30 Hz: {frames} frames in {p['seconds']} s, shown {st[0]['shown']}, dropped {st[0]['dropped']}")
    fifo_s, fifo = results["fifo"]
    # FIFO: one frame per refresh, none dropped; the program waits for the display. Three
    # images may be ahead of the display, so at least frames - 3 refreshes pass.
    check(fifo["dropped"] == 0 and fifo["shown"] == frames, f"FIFO dropped frames: {fifo}")
    check(fifo_s >= (frames - 3) / 30.0 * 0.95, f"FIFO was not paced by the 30 Hz refresh: {fifo_s} s")
    relaxed_s, relaxed = results["fifo_relaxed"]
    check(relaxed["dropped"] == 0 and relaxed_s >= (frames - 3) / 30.0 * 0.95, f"FIFO_RELAXED: {relaxed_s} s {relaxed}")
    # MAILBOX: the program never waits for a refresh, frames are replaced.
    mb_s, mb = results["mailbox"]
    check(mb["dropped"] > 0 and mb_s < fifo_s / 2, f"MAILBOX waited for the display or dropped nothing: {mb_s} s {mb}")
    # IMMEDIATE: no refresh at all.
    im_s, im = results["immediate"]
    check(im_s < fifo_s / 2, f"IMMEDIATE was paced: {im_s} s {im}")
    server.check_alive()


def case_xlib_and_putimage(workdir, _arg):
    x, server, native, guest = setup(workdir)
    n, b = both(x, native, guest, workdir, "present", "--xlib", "--frames", "40", stats=True)
    check(parse(b.stdout)["window_mismatches"] == "0", f"xlib: {b.describe()}")
    st = wsi_stats(b.stderr)
    check(st and st[0]["path"] == "MIT-SHM", f"a local Xvfb should take MIT-SHM: {st}")
    env = dict(guest)
    env["BYPASS_WSI_STATS"] = "1"
    env["BYPASS_WSI_NO_SHM"] = "1"
    r = probe(env, workdir, "putimage", "present", "--frames", "40")
    check(parse(r.stdout)["window_mismatches"] == "0", f"PutImage: {r.describe()}")
    st2 = wsi_stats(r.stderr)
    check(st2 and st2[0]["path"] == "PutImage", f"BYPASS_WSI_NO_SHM=1 should use PutImage: {st2}")
    check(
        st2[0]["target"] == "frame buffer" and st2[0]["transfers"] == st2[0]["shown"],
        f"without MIT-SHM, frames should be transferred into the ICD's own frame buffer: {st2}",
    )
    log(f"put 320x240: MIT-SHM {st[0]['put_us']} us, PutImage {st2[0]['put_us']} us")
    server.check_alive()


def case_resize(workdir, _arg):
    x, server, native, guest = setup(workdir)
    for mode in ("fifo", "mailbox"):
        n, b = both(x, native, guest, workdir, "resize", "--mode", mode)
        pn, pb = parse(n.stdout), parse(b.stdout)
        log(
            f"{mode}: native after resize '{pn['after_resize']}' (frame {pn['frames_to_notice']}), "
            f"bypass '{pb['after_resize']}' (frame {pb['frames_to_notice']})"
        )
        # Natively lavapipe reports SUBOPTIMAL from the next acquire; bypass learns the new
        # size from the put of the frame after, so one frame later.
        check(
            pb["after_resize"].split()[-1] == pn["after_resize"].split()[-1],
            f"{mode}: resize reported as {pb['after_resize']!r}, natively {pn['after_resize']!r}",
        )
        check(int(pb["frames_to_notice"]) <= 3, f"{mode}: noticed only after {pb['frames_to_notice']} frames")
        for p in (pn, pb):
            check(p["current_extent"] == "400x300" and p["window_mismatches"] == "0", f"{mode}: {p}")
    server.check_alive()


def case_destroy_window(workdir, _arg):
    x, server, native, guest = setup(workdir)
    n, b = both(x, native, guest, workdir, "destroy-window")
    pn, pb = parse(n.stdout), parse(b.stdout)
    log(
        f"native: {pn['first_error']}, caps {pn['capabilities_after_destroy']}; "
        f"bypass: {pb['first_error']}, caps {pb['capabilities_after_destroy']}"
    )
    check(re.search(r"SURFACE_LOST|OUT_OF_DATE", pb["first_error"]), f"no error after the window went: {pb}")
    check(pb["first_error"] == pn["first_error"], f"bypass {pb['first_error']!r}, natively {pn['first_error']!r}")
    check(pb["capabilities_after_destroy"] == "VK_ERROR_SURFACE_LOST_KHR", f"{pb}")
    check(pb.get("clean_exit") == "yes", f"{b.describe()}")
    server.check_alive()
    # The session ended cleanly: nothing of the swapchain is left on the host.
    stats = server.wait_gone(b.pid)
    h.check_ended_clean(stats, b.pid)


def case_headless(workdir, _arg):
    server = h.Bypassd(workdir).start()
    env = h.unsanitized_guest_env(server.guest_env())
    env["BYPASS_WSI_STATS"] = "1"
    r = probe(env, workdir, "headless", "headless", "--frames", "50")
    p = parse(r.stdout)
    st = wsi_stats(r.stderr)
    check(p["extent"] == "64x48" and st and st[0]["path"] == "headless" and st[0]["shown"] == 50, f"{r.describe()}")
    server.check_alive()


def case_private_data(workdir, _arg):
    # Natively, Debian 12's lavapipe has no headless surface: through bypass only.
    server = h.Bypassd(workdir).start()
    r = probe(h.unsanitized_guest_env(server.guest_env()), workdir, "private-data", "private-data")
    p = parse(r.stdout)
    check(p.get("private data") == "7 8 9" and p.get("new swapchain") == "0" and p.get("done") == "ok", r.describe())
    h.check_ended_clean(server.wait_gone(r.pid), r.pid)
    server.check_alive()


def vkcube_shot(x, env, workdir, tag, frames=300):
    """vkcube --c FRAMES, stopped by the hold shim just before it destroys its window."""
    env = dict(env)
    env["LD_PRELOAD"] = (env.get("LD_PRELOAD", "") + " " + h.env_path("BYPASS_HOLD_WINDOW")).strip()
    run = h.Running([h.env_path("BYPASS_VKCUBE"), "--c", str(frames)], env, workdir, tag)
    deadline = time.monotonic() + 90
    state = ""
    while time.monotonic() < deadline:
        if run.proc.poll() is not None:
            raise h.TestFailure(f"vkcube ({tag}) exited before its last frame:\n{run.wait(1).describe()}")
        try:
            with open(f"/proc/{run.pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            state = ""
        if state == "T":
            break
        time.sleep(0.02)
    check(state == "T", f"vkcube ({tag}) did not reach its last frame in time")
    seconds = time.monotonic() - run.start
    path = os.path.join(shots_dir(workdir), f"vkcube-{tag}.png")
    pixels = x.screenshot(path)
    os.kill(run.pid, signal.SIGCONT)
    result = run.wait(60)
    h.check_ok(result, f"vkcube ({tag})")
    return pixels, path, result, seconds


def check_vkcube(workdir, shadow):
    x, server, native, guest = setup(workdir)
    genv = dict(guest)
    genv["BYPASS_WSI_STATS"] = "1"
    if shadow:
        genv["BYPASS_MEMORY"] = "shadow"
    npx, npath, _, nsec = vkcube_shot(x, native, workdir, "native")
    bpx, bpath, bres, bsec = vkcube_shot(x, genv, workdir, "bypass-shadow" if shadow else "bypass")
    check("bypass (" in bres.stdout + bres.stderr, f"vkcube did not select the bypass device:\n{bres.describe()}")
    colors = len(set(npx[i : i + 3] for i in range(0, len(npx), 3 * 97)))
    check(colors > 50, f"the native screenshot {npath} looks empty ({colors} colors)")
    diff = sum(1 for i in range(0, len(npx), 3) if npx[i : i + 3] != bpx[i : i + 3])
    check(diff == 0, f"{bpath} differs from {npath} in {diff} pixels")
    st = wsi_stats(bres.stderr)
    check(st and st[-1]["presents"] == 300 and st[-1]["shown"] == 300, f"vkcube presenter statistics: {st}")
    # local: memshare transfers; shadow memory (no shared memory with the host): the read barrier
    want = 0 if shadow else 300
    check(st[-1]["transfers"] == want, f"vkcube: {st[-1]['transfers']} frames moved by memshare transfers, want {want}")
    if not shadow:  # on a local X server, straight into its MIT-SHM segment
        check(st[-1]["target"] == "MIT-SHM segment", f"vkcube: frames transferred into the {st[-1]['target']}")
    log(
        f"vkcube --c 300: pixel-identical ({SCREEN_W}x{SCREEN_H} screen, {colors}+ colors); native {nsec:.2f} s, "
        f"bypass {bsec:.2f} s (incl. start-up); {st[-1]['path']} put {st[-1]['put_us']} us for 500x500"
    )
    server.check_alive()


def case_vkcube(workdir, _arg):
    check_vkcube(workdir, shadow=False)


def case_vkcube_shadow(workdir, _arg):
    check_vkcube(workdir, shadow=True)


def glx_env(env, extra):
    env = dict(env)
    env.update(extra)
    return env


def gl_extensions(glxinfo_text):
    """Every extension name glxinfo lists, per section, as one set."""
    return set(re.findall(r"\bGL[X]?_[A-Za-z0-9]+_[A-Za-z0-9_]+\b", glxinfo_text))


def case_glxinfo(workdir, _arg):
    x, server, native, guest = setup(workdir)
    results = {}
    for tag, env in (("native", native), ("bypass", guest)):
        env = glx_env(h.unsanitized_guest_env(env), ZINK_SW)
        brief = h.run(["glxinfo", "-B"], env, workdir, f"glxinfo-B-{tag}", 60)
        full = h.run(["glxinfo"], env, workdir, f"glxinfo-{tag}", 60)
        h.check_ok(brief, f"glxinfo -B ({tag})")
        h.check_ok(full, f"glxinfo ({tag})")
        results[tag] = (brief.stdout, full.stdout)
    nb, bb = results["native"][0], results["bypass"][0]
    check("zink (bypass (" in bb, f"glxinfo through bypass does not run zink on the bypass device:\n{bb}")
    check("zink (llvmpipe" in nb, f"the native glxinfo does not run zink on lavapipe:\n{nb}")
    # Identical but for the device name.
    norm = lambda t: re.sub(r"zink \(bypass \((.*)\)\)", r"zink (\1)", t)  # noqa: E731
    diff = h.text_diff(nb, norm(bb), "native", "bypass")
    check(not diff, f"glxinfo -B differs beyond the device name:\n{diff}")
    for key in ("OpenGL core profile version string", "OpenGL version string", "OpenGL ES profile version string"):
        v = re.search(key + r": (.*)", bb)
        log(f"{key}: {v[1] if v else '?'}")
    ne, be = gl_extensions(results["native"][1]), gl_extensions(results["bypass"][1])
    missing, extra = ne - be, be - ne
    log(f"GL/GLX extensions: native {len(ne)}, bypass {len(be)}; missing through bypass: {sorted(missing)}")
    check(not extra, f"extensions only through bypass: {sorted(extra)}")
    check(
        missing <= KNOWN_GL_GAPS,
        f"extensions missing through bypass beyond the known gap: {sorted(missing - KNOWN_GL_GAPS)}",
    )
    server.check_alive()


def color_counts(pixels):
    counts = dict.fromkeys(GEAR_COLORS, 0)
    wanted = {bytes(v): k for k, v in GEAR_COLORS.items()}
    for i in range(0, len(pixels), 3):
        name = wanted.get(pixels[i : i + 3])
        if name:
            counts[name] += 1
    return counts


def glxgears_run(x, env, workdir, tag, seconds):
    """glxgears for `seconds`; a screenshot while it is stopped; then Escape must end it."""
    run = h.Running(["glxgears"], env, workdir, tag)
    time.sleep(seconds)
    if run.proc.poll() is not None:
        raise h.TestFailure(f"glxgears ({tag}) ended early:\n{run.wait(1).describe()}")
    os.kill(run.pid, signal.SIGSTOP)
    time.sleep(0.2)  # what it presented before the stop reaches the window
    pixels = x.screenshot(os.path.join(shots_dir(workdir), f"glxgears-{tag}.png"))
    os.kill(run.pid, signal.SIGCONT)
    probe(env, workdir, f"escape-{tag}", "send-escape", "glxgears")
    result = run.wait(30)
    h.check_ok(result, f"glxgears ({tag}) after Escape")
    return pixels, result


def case_glxgears(workdir, _arg):
    x, server, native, guest = setup(workdir)
    counts = {}
    fps = {}
    for tag, env in (("native", native), ("bypass", guest)):
        env = glx_env(h.unsanitized_guest_env(env), ZINK_KOPPER)
        env["BYPASS_WSI_STATS"] = "1"
        pixels, result = glxgears_run(x, env, workdir, tag, 5.5)
        counts[tag] = color_counts(pixels)
        m = re.search(r"frames in [\d.]+ seconds = ([\d.]+) FPS", result.stdout)
        fps[tag] = float(m[1]) if m else None
        if tag == "bypass":
            st = wsi_stats(result.stderr)
            check(st and st[-1]["presents"] > 100, f"glxgears did not present through the ICD's swapchain: {st}")
            log(
                f"glxgears through bypass: {st[-1]['presents']} presents, {st[-1]['path']} put {st[-1]['put_us']} us "
                f"for {st[-1]['size'][0]}x{st[-1]['size'][1]}"
            )
    log(
        f"gear pixels native {counts['native']}, bypass {counts['bypass']}; FPS native {fps['native']}, "
        f"bypass {fps['bypass']}"
    )
    for name in GEAR_COLORS:
        n, b = counts["native"][name], counts["bypass"][name]
        check(n > 1000, f"native glxgears shows too few {name} pixels ({n}): is zink presenting?")
        # The gears turn with time, so compare the amount of each color loosely.
        check(abs(b - n) <= 0.25 * n, f"{name} gear pixels: native {n}, bypass {b}")
    # With GALLIUM_DRIVER=zink alone (the swrast frontend), Mesa 22.3 renders but shows
    # nothing, natively and through bypass alike: it must still run and quit cleanly.
    sw = glx_env(h.unsanitized_guest_env(guest), ZINK_SW)
    glxgears_run(x, sw, workdir, "bypass-swrast-zink", 1.5)
    server.check_alive()


def case_glmark2(workdir, _arg):
    """glmark2's validation (programs.py): every scene drawn through zink on the bypass device
    matches glmark2's reference pixels wherever it does natively."""
    if programs.glmark2() is None:
        log("SKIPPED: glmark2 is not installed (scripts/setup.sh installs it)")
        sys.exit(77)
    x, server, native, guest = setup(workdir)
    runs = {}
    for tag, env in (("native", native), ("bypass", guest)):
        runs[tag] = h.run(programs.glmark2_argv(), glx_env(env, ZINK_SW), workdir, f"glmark2-{tag}", 300)
        h.check_ok(runs[tag], f"glmark2 --validate ({tag})")
    results = {tag: r.stdout for tag, r in runs.items()}
    check("zink (llvmpipe" in results["native"], f"native glmark2 did not run zink on lavapipe:\n{results['native']}")
    check("zink (bypass (" in results["bypass"], f"glmark2 did not run zink on the bypass device:\n{results['bypass']}")
    scenes = {tag: re.findall(r"^(\[\w+\] .*: Validation: \w+)$", out, re.M) for tag, out in results.items()}
    passed = sum(1 for line in scenes["native"] if line.endswith("Success"))
    check(passed >= 20, f"native glmark2 validated only {passed} scenes:\n{results['native']}")
    diff = h.text_diff("\n".join(scenes["native"]), "\n".join(scenes["bypass"]), "native", "bypass")
    check(not diff, f"glmark2 validation differs through bypass:\n{diff}")
    log(f"glmark2: {len(scenes['bypass'])} scenes, {passed} validated against glmark2's reference pixels, as natively")
    pid = runs["bypass"].pid
    h.check_ended_clean(server.wait_gone(pid), pid)
    server.check_alive()


def case_egl_surfaceless(workdir, _arg):
    server = h.Bypassd(workdir).start()
    probe_path = os.environ.get("BYPASS_EGL_PROBE")
    check(probe_path, "wsi_egl_probe was not built (no EGL/OpenGL development files)")
    out = {}
    for tag, env in (("native", h.native_env(workdir)), ("bypass", server.guest_env())):
        env = glx_env(h.unsanitized_guest_env(env), ZINK_SW)
        r = h.run([probe_path], env, workdir, f"egl-{tag}", 60)
        h.check_ok(r, f"egl_probe ({tag})")
        out[tag] = parse(r.stdout)
    n, b = out["native"], out["bypass"]
    check(b["GL_RENDERER"].startswith("zink (bypass ("), f"not zink on the bypass device: {b['GL_RENDERER']}")
    check(n["GL_VERSION"] == b["GL_VERSION"], f"GL_VERSION {n['GL_VERSION']!r} vs {b['GL_VERSION']!r}")
    ne, be = set(n["GL_EXTENSIONS"].split()), set(b["GL_EXTENSIONS"].split())
    check(
        not (be - ne) and (ne - be) <= KNOWN_GL_GAPS,
        f"extensions differ: missing {sorted(ne - be)}, extra {sorted(be - ne)}",
    )
    check(n["pixels"] == b["pixels"], f"rendered pixels differ: native {n['pixels']}, bypass {b['pixels']}")
    log(f"surfaceless EGL: {b['GL_VERSION']}, {len(be)} extensions ({len(ne)} natively), pixels {b['pixels']}")
    # GL_EXT_memory_object_fd: the probe's Vulkan buffer (another bypass session) shared with GL
    for key in ("interop same device", "interop GL reads Vulkan's writes", "interop Vulkan reads GL's writes"):
        check(key in b and b[key] == n.get(key), f"{key}: native {n.get(key)!r}, bypass {b.get(key)!r}")
    for key in ("interop GL reads Vulkan's writes", "interop Vulkan reads GL's writes"):
        right, total = b[key].split("/")
        check(right == total, f"{key}: {b[key]} words right")
    check(b["interop same device"] == "yes", "GL_DEVICE_UUID_EXT differs from the Vulkan device's UUID")
    gl_reads, vk_reads = b["interop GL reads Vulkan's writes"], b["interop Vulkan reads GL's writes"]
    log(f"GL_EXT_memory_object_fd: GL read {gl_reads} words Vulkan wrote, Vulkan read {vk_reads} GL wrote")
    server.check_alive()


def case_guest_killed(workdir, _arg):
    x, server, native, guest = setup(workdir)
    victim = h.Running([h.env_path("BYPASS_WSI_PROBE"), "loop"], guest, workdir, "victim")
    other = h.Running([h.env_path("BYPASS_WSI_PROBE"), "loop", "--seconds", "6"], guest, workdir, "other")

    def frames(run):
        found = re.findall(r"^frame: (\d+)$", run.stdout_text(), re.M)
        return int(found[-1]) if found else -1

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (frames(victim) < 100 or frames(other) < 100):
        check(victim.proc.poll() is None and other.proc.poll() is None, "a presenting guest ended early")
        time.sleep(0.05)
    check(frames(victim) >= 100 and frames(other) >= 100, "the guests did not present 100 frames each")
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = frames(other)
    victim.wait(10)
    stats = server.wait_gone(victim.pid, "the killed guest's session to end")
    main = h.ended_for_pid(stats, victim.pid)
    check(all(e["objects"] == 0 for e in main), f"the killed guest's objects were not all released: {main}")
    log(f"killed a guest at frame {frames(victim)}; session ended: {main[-1]['reason']} ({main[-1]['detail']!r})")
    result = other.wait(60)
    h.check_ok(result, "the other presenting guest")
    check(
        frames(other) > killed_at + 100,
        f"the other guest stalled after the kill (frame {killed_at} -> {frames(other)})",
    )
    server.check_alive("after a guest was killed while presenting")
    # And a new guest is served.
    r = probe(guest, workdir, "after", "present", "--frames", "20")
    check(parse(r.stdout)["window_mismatches"] == "0", r.describe())
    h.check_stats_consistent(server.stats())


CASES = {
    "caps": case_caps,
    "present-modes": case_present_modes,
    "paced-modes": case_paced_modes,
    "xlib-and-putimage": case_xlib_and_putimage,
    "resize": case_resize,
    "destroy-window": case_destroy_window,
    "headless": case_headless,
    "private-data": case_private_data,
    "vkcube": case_vkcube,
    "vkcube-shadow": case_vkcube_shadow,
    "glxinfo": case_glxinfo,
    "glxgears": case_glxgears,
    "glmark2": case_glmark2,
    "egl-surfaceless": case_egl_surfaceless,
    "guest-killed": case_guest_killed,
}

if __name__ == "__main__":
    sys.exit(h.main(CASES))
