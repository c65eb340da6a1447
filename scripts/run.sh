#!/usr/bin/env bash
# README command (1): set up, build and run the main job.
#   scripts/run.sh [transport_demo arguments]
# For now the main job is the transport demo: a host and a guest process moving data through one
# shared-memory session (messages, bytes, checksums, throughput, round trips, fd passing, a refused
# handshake and a killed peer). BUILD_DIR (default: build) picks the build tree.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
build=${BUILD_DIR:-build}
cmake -S . -B "$build" -G Ninja -DBYPASS_WERROR=ON
cmake --build "$build" -j"$(nproc)"
exec "$build"/transport/transport_demo "$@"
