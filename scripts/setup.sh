#!/usr/bin/env bash
# Installs every Debian 12 package bypass needs to build, test and run. Idempotent: when every
# package is already installed it does nothing. Run as root.
set -euo pipefail

packages=(
  # toolchain
  cmake ninja-build g++ python3 pkg-config git
  # Vulkan: loader, headers + registry (vk.xml), lavapipe, tools, validation layers, glslc
  libvulkan-dev vulkan-tools mesa-vulkan-drivers vulkan-validationlayers glslc
  # wire format, network path, logging, command lines
  flatbuffers-compiler libflatbuffers-dev libgrpc++-dev libprotobuf-dev protobuf-compiler
  protobuf-compiler-grpc libspdlog-dev libcli11-dev
  # one layout: clang-format for C and C++, black for Python (scripts/format.sh, the style test)
  clang-format black
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev gnuplot-nox libpng-dev
  # presentation and OpenGL (X11, Xvfb, zink, demos)
  xvfb xauth libx11-dev libxcb1-dev libx11-xcb-dev libxcb-shm0-dev libxext-dev mesa-utils
  libgl1-mesa-dri libegl1 x11-apps imagemagick
  # conformance runs (scripts/bypass-conformance): piglit through zink, wflinfo for its GL queries
  piglit waffle-utils
  # crossover NIC and VM queues: network namespaces, TAP devices, traffic tools
  iproute2 iputils-ping netcat-openbsd
  # network path tests: a test CA and certificates (tests/network)
  openssl
  # real programs (tests/e2e/programs_test.py, bench/run's program rows): ffmpeg's Vulkan filters,
  # glmark2's OpenGL scenes through zink (tests/wsi, wsi_glmark2)
  ffmpeg glmark2-x11
  # VM-queue pipeline sample (zlib compression stage)
  zlib1g-dev
  # VM guests (scripts/vm.sh): QEMU, a Debian kernel for the guest, busybox + cpio for its
  # initramfs
  qemu-system-x86 qemu-utils linux-image-amd64 busybox-static cpio file
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "setup: missing packages (${missing[*]}); run this script as root" >&2
  exit 1
fi

echo "setup: installing ${#missing[@]} packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${packages[@]}"
