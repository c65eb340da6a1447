"""Real programs that run through bypass unchanged: what tests/e2e/programs_test.py compares with
native runs and bench/run times (process start to exit). Standard library only.

Each program writes a deterministic text digest of its output to stdout, so native and bypass
runs compare byte for byte.
"""

import os
import shutil
import subprocess
import time

# ffmpeg's Vulkan filters (Debian's ffmpeg 5.1): a 1 s 640x360 testsrc2 clip uploaded to Vulkan
# images, filtered on the GPU, downloaded, and one MD5 per frame printed (framemd5).
FFMPEG_CHAINS = {
    "ffmpeg_scale": "format=nv12,hwupload,scale_vulkan=w=320:h=180,hwdownload,format=nv12",
    "ffmpeg_chromaber": "hwupload,chromaber_vulkan,transpose_vulkan,hwdownload,format=yuv420p",
    "ffmpeg_libplacebo": "hwupload,libplacebo=w=320:h=180:format=yuv420p,hwdownload,format=yuv420p",
}


def ffmpeg():
    return shutil.which("ffmpeg")


def argv(name, loglevel="error"):
    """The command line of program `name` (a key of FFMPEG_CHAINS)."""
    return [
        ffmpeg() or "ffmpeg",
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        loglevel,
        "-init_hw_device",
        "vulkan",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:duration=1:rate=25",
        "-vf",
        FFMPEG_CHAINS[name],
        "-f",
        "framemd5",
        "-",
    ]


# glmark2 (Debian's glmark2-x11) through Mesa's zink, OpenGL on the Vulkan driver the loader
# finds: drawn off-screen, on an X display (Xvfb) only for its GLX context. Its scenes run for a
# set time, so what it measures is frames per second (its score, the mean over the scenes), not
# the process's wall time; `--validate` instead draws one frame of each scene and compares it
# with glmark2's reference pixels (tests/wsi, wsi_glmark2).
ZINK_ENV = {"LIBGL_ALWAYS_SOFTWARE": "1", "GALLIUM_DRIVER": "zink"}
GLMARK2_SCENES = [
    "build:use-vbo=true",
    "texture:texture-filter=linear",
    "shading:shading=phong",
    "bump:bump-render=high-poly",
    "effect2d",
    "desktop:effect=shadow:windows=4",
    "conditionals",
]


def glmark2():
    return shutil.which("glmark2")


def start_xvfb(xvfb, screen, log_file, preexec_fn=None):
    """Starts Xvfb (the binary `xvfb`, one screen `screen` such as "640x480x24", output to
    `log_file`) on a display number it picks itself; returns (process, ":N" or None when it did
    not say which within 20 s)."""
    read_fd, write_fd = os.pipe()
    argv = [xvfb, "-displayfd", str(write_fd), "-screen", "0", screen, "-nolisten", "tcp", "-noreset"]
    proc = subprocess.Popen(
        argv,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        pass_fds=(write_fd,),
        preexec_fn=preexec_fn,
    )
    proc.argv_text = " ".join(argv)
    os.close(write_fd)
    number = b""
    deadline = time.monotonic() + 20
    while not number.endswith(b"\n") and time.monotonic() < deadline:
        chunk = os.read(read_fd, 16)
        if not chunk:
            break
        number += chunk
    os.close(read_fd)
    return proc, ":" + number.decode().strip() if number.strip().isdigit() else None


def glmark2_argv(seconds=None):
    """glmark2 off-screen: each of GLMARK2_SCENES for `seconds` at 320x240, or (None) validation
    (at glmark2's own 800x600, the size of its reference pixels)."""
    argv = [glmark2() or "glmark2", "--off-screen"]
    if seconds is None:
        return argv + ["--validate"]
    argv += ["--size", "320x240"]
    for scene in GLMARK2_SCENES:
        argv += ["--benchmark", f"{scene}:duration={seconds}"]
    return argv


NAMES = sorted(FFMPEG_CHAINS)
