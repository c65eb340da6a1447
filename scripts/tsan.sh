#!/usr/bin/env bash
# ThreadSanitizer run of everything that has more than one thread in bypassd or the ICD:
# configures build-tsan with -DBYPASS_TSAN=ON, builds it and runs the host-server, icd and e2e
# labels (not soak). A race ends the process that has it (halt_on_error), so its test fails and
# the report is in the test's output (bypassd's log for a worker). docs/host-threads.md says
# what each thread owns.
#   scripts/tsan.sh [extra ctest arguments, e.g. -R e2e_output_sync]
# BUILD_DIR (default: build-tsan) picks the build tree; JOBS (default: nproc) the parallelism.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build-tsan}
jobs=${JOBS:-$(nproc)}
cmake -S . -B "$build" -G Ninja -DBYPASS_WERROR=ON -DBYPASS_TSAN=ON -DBYPASS_BUILD_BENCH=OFF
cmake --build "$build" -j"$jobs"
ctest --test-dir "$build" --output-on-failure -j"$jobs" -L '^(host-server|icd|e2e)$' -LE soak "$@"
