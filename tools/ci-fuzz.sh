#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/) with clang++ -fsanitize=fuzzer,address,undefined (library
# coverage-instrumented) and runs each for a bounded time from its committed seed corpus.
# Usage: tools/ci-fuzz.sh [seconds per target (default 60)] [build-dir (default build-fuzz)]
# Environment: PKV_FUZZ_TARGETS (default "fuzz_load fuzz_api"), PKV_FUZZ_SECONDS, PKV_FUZZ_CORPUS_DIR
# (where each target's growing corpus lives, default the build dir; tools/fuzz-campaign.sh keeps it
# across runs). New inputs found during the run go there, never into fuzz/corpus/. Exits non-zero
# when a target crashes, leaks, hits UB or times out; the reproducer is left in the build dir.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
seconds=${1:-${PKV_FUZZ_SECONDS:-60}}
build=${2:-build-fuzz}
targets=${PKV_FUZZ_TARGETS:-fuzz_load fuzz_api}
start=$SECONDS
source tools/find-clang.sh
opts=(-Dfuzz=true -Dtests=false -Dbench=false -Dcuda=disabled -Dhip=disabled -Db_sanitize=address,undefined
      -Db_lundef=false -Dcpp_args=-fsanitize=fuzzer-no-link --buildtype=debugoptimized -Ddefault_library=static)
if [ -d "$build" ]; then meson setup --reconfigure "$build" "${opts[@]}" | tail -n 3; else meson setup "$build" "${opts[@]}" | tail -n 3; fi
meson compile -C "$build" fuzz/fuzz_load fuzz/fuzz_api
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
rc=0
corpus_root=$(mkdir -p "${PKV_FUZZ_CORPUS_DIR:-$build/fuzz}" && cd "${PKV_FUZZ_CORPUS_DIR:-$build/fuzz}" && pwd)
for t in $targets; do
  scratch="$corpus_root/corpus-$t"
  mkdir -p "$scratch"
  log="$build/fuzz/$t.log"
  echo "ci-fuzz: $t for $seconds s"
  if (cd "$build/fuzz" && ./"$t" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -max_len=8192 \
        -print_final_stats=1 \
        "$scratch" "$root/fuzz/corpus/$t") >"$log" 2>&1; then
    echo "ci-fuzz: $t ok: $(grep -E 'stat::number_of_executed_units' "$log" | tail -1 | awk '{print $2}') executions"
  else
    rc=1
    echo "ci-fuzz: $t FAILED (log $log):"
    tail -n 60 "$log"
  fi
done
echo "ci-fuzz: $((SECONDS - start)) s, exit $rc"
exit $rc
