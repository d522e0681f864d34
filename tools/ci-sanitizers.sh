#!/usr/bin/env bash
# Builds the library and tests with clang++ under AddressSanitizer + UndefinedBehaviorSanitizer and
# runs the unit, real-data and differential suites (a skipped differential suite is fine).
# Usage: tools/ci-sanitizers.sh [build-dir]     (default build-asan). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-asan}
start=$SECONDS
source tools/find-clang.sh
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1}
if [ -z "${PATTERNKV_DATA_DIR:-}" ] && [ -d ../shared/data ]; then
  export PATTERNKV_DATA_DIR=$(cd ../shared/data && pwd)
fi
opts=(-Db_sanitize=address,undefined -Db_lundef=false -Dbench=false -Dtests=true -Dcuda=disabled -Dhip=disabled
      --buildtype=debugoptimized)
if [ -d "$build" ]; then meson setup --reconfigure "$build" "${opts[@]}" | tail -n 3; else meson setup "$build" "${opts[@]}" | tail -n 3; fi
meson compile -C "$build"
rc=0
meson test -C "$build" --suite unit --suite real-data --suite differential --print-errorlogs \
  --num-processes "${PKV_SANITIZER_JOBS:-2}" --timeout-multiplier 3 || rc=$?
echo "ci-sanitizers: $cxx ASan+UBSan, $((SECONDS - start)) s, exit $rc"
exit $rc
