#!/usr/bin/env bash
# ThreadSanitizer run of everything that has more than one thread in bypassd or the ICD:
# configures build-tsan with -DBYPASS_TSAN=ON, builds it and runs the host-server, icd and e2e
# labels (not soak). A race ends the process that has it (halt_on_error) and its report lands in
# build-tsan/tsan-reports/: the script fails when any is there, even if the test passed (some
# tests expect a worker to die). docs/host-threads.md says what each thread owns.
#   scripts/tsan.sh [extra ctest arguments, e.g. -R e2e_output_sync]
# BUILD_DIR (default: build-tsan) picks the build tree; JOBS (default: nproc) the parallelism.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build-tsan}
jobs=${JOBS:-$(nproc)}
cmake -S . -B "$build" -G Ninja -DBYPASS_WERROR=ON -DBYPASS_TSAN=ON -DBYPASS_BUILD_BENCH=OFF
cmake --build "$build" -j"$jobs"
reports=$build/tsan-reports
rm -rf "$reports"
mkdir -p "$reports"
status=0
ctest --test-dir "$build" --output-on-failure -j"$jobs" -L '^(host-server|icd|e2e)$' -LE soak "$@" || status=$?
if compgen -G "$reports/report.*" >/dev/null; then
  echo "tsan.sh: ThreadSanitizer reports in $reports:" >&2
  for f in "$reports"/report.*; do
    echo "== $f" >&2
    cat "$f" >&2
  done
  status=1
fi
exit $status
