#!/usr/bin/env bash
# README command (1): install, build, start bypassd on lavapipe, render the triangle sample
# through the bypass ICD, and say where the image is.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
build=${BUILD_DIR:-build}
cmake -S . -B "$build" -G Ninja
cmake --build "$build" -j"$(nproc)"

run_dir=$(mktemp -d /tmp/bypass-run.XXXXXX)
export XDG_RUNTIME_DIR=$run_dir
socket=$run_dir/bypassd.sock
out=${OUT:-$PWD/out}
mkdir -p "$out"

# The host server: the real driver is lavapipe, picked by the loader in its own environment.
VK_DRIVER_FILES=/usr/share/vulkan/icd.d/lvp_icd.x86_64.json \
  "$build/host-server/bypassd" --socket "$socket" 2>"$run_dir/bypassd.log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$run_dir"' EXIT
for _ in $(seq 50); do [[ -S $socket ]] && break; sleep 0.1; done

# The guest: an ordinary Vulkan program; the loader finds only the bypass ICD.
VK_DRIVER_FILES=$PWD/$build/guest-icd/bypass_icd.json BYPASS_ENDPOINT=unix:$socket \
  "$build/samples/triangle" --out "$out/triangle.png"
"$build/host-server/bypassctl" --control "$socket.ctl" --json stats >"$out/bypassd-stats.json"
echo
echo "bypass: the triangle was rendered by bypassd on lavapipe for a guest that used the bypass ICD."
echo "bypass: image: $out/triangle.png"
echo "bypass: server log:"
sed 's/^/  /' "$run_dir/bypassd.log"
