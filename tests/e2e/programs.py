"""Real programs that run through bypass unchanged: what tests/e2e/programs_test.py compares with
native runs and bench/run times (process start to exit). Standard library only.

Each program writes a deterministic text digest of its output to stdout, so native and bypass
runs compare byte for byte.
"""

import shutil

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


NAMES = sorted(FFMPEG_CHAINS)
