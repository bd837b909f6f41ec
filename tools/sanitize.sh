#!/usr/bin/env bash
# The test suite against a build with AddressSanitizer and UndefinedBehaviorSanitizer (GCC).
#
#   tools/sanitize.sh                       # build into .venv-asan (once), run the whole suite
#   FASTNORM_ISA=baseline tools/sanitize.sh tests/test_fuzz.py   # another ISA level, some tests
#
# Any sanitizer report aborts the process (-fno-sanitize-recover=all), so a passing run has zero reports.  The
# sanitizer runtimes are preloaded because the interpreter itself is not built with them; leak detection is off
# (CPython keeps its own allocations alive until exit).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-asan
if [ ! -x "$venv/bin/python" ] || [ "${FASTNORM_REBUILD:-0}" = 1 ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  echo "building fastnorm with -fsanitize=address,undefined (several minutes on 2 cores)"
  "$venv/bin/pip" install --quiet ".[test]" -Ccmake.define.FASTNORM_SANITIZE=ON -Cbuild-dir=build/asan
fi

preload="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
LD_PRELOAD="$preload" ASAN_OPTIONS="detect_leaks=0:abort_on_error=1" UBSAN_OPTIONS="print_stacktrace=1" \
  "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
