#!/usr/bin/env bash
# One layout for the tree: clang-format (.clang-format) for C and C++, black (pyproject.toml)
# for Python. Generated code lives in the build tree and is never checked.
#   scripts/format.sh           rewrite every tracked source file in place
#   scripts/format.sh --check   list the files that differ and exit 1 (the `style` test)
set -euo pipefail
cd "$(dirname "$0")/.."
check=0
[[ ${1:-} == --check ]] && check=1

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t cxx < <(git ls-files '*.c' '*.cpp' '*.h')
  mapfile -t py < <(git ls-files '*.py' 'bench/run' 'scripts/bypass-conformance')
else
  mapfile -t cxx < <(find . -path ./build\* -prune -o \( -name '*.c' -o -name '*.cpp' -o -name '*.h' \) -print)
  mapfile -t py < <(find . -path ./build\* -prune -o -name '*.py' -print)
  py+=(bench/run scripts/bypass-conformance)
fi

if ((check)); then
  status=0
  bad=()
  for f in "${cxx[@]}"; do
    clang-format --style=file "$f" | cmp -s - "$f" || bad+=("$f")
  done
  if ((${#bad[@]})); then
    printf 'format: %s differs from clang-format (run scripts/format.sh)\n' "${bad[@]}" >&2
    status=1
  fi
  black --quiet --check "${py[@]}" || { echo "format: black would reformat the files above" >&2; status=1; }
  exit $status
fi
clang-format --style=file -i "${cxx[@]}"
black --quiet "${py[@]}"
