#!/usr/bin/env bash
# A long, resumable fuzz campaign of both libFuzzer targets (the CI runs each for 60 s only).
# Usage: tools/fuzz-campaign.sh [hours per target (default 2)] [campaign dir (default fuzz-campaign)]
# The corpus grows in <campaign dir>/corpus-<target> and is reused by the next campaign, so runs add
# up. Each campaign appends one line per target to <campaign dir>/results.txt (date, commit, seconds,
# executions, corpus size, ok/FAILED); docs/testing.md records the last one. A crash leaves its
# reproducer and log in build-fuzz/fuzz/ and makes the script exit non-zero.
set -uo pipefail
cd "$(dirname "$0")/.."
hours=${1:-2}
dir=${2:-fuzz-campaign}
mkdir -p "$dir"
seconds=$(python3 -c "print(int(float('$hours') * 3600))")
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
PKV_FUZZ_CORPUS_DIR="$dir" tools/ci-fuzz.sh "$seconds" build-fuzz | tee "$dir/last-run.txt"
rc=${PIPESTATUS[0]}
while read -r line; do
  case "$line" in
    "ci-fuzz: "*" ok: "*|"ci-fuzz: "*" FAILED"*)
      target=$(echo "$line" | awk '{print $2}')
      status=$(echo "$line" | grep -q FAILED && echo FAILED || echo ok)
      execs=$(echo "$line" | sed -n 's/.* ok: \([0-9]*\) executions/\1/p')
      files=$(find "$dir/corpus-$target" -type f 2>/dev/null | wc -l)
      echo "$(date -u +%Y-%m-%dT%H:%MZ) commit $commit $target ${seconds}s executions ${execs:-?} corpus $files files $status" \
        | tee -a "$dir/results.txt"
      ;;
  esac
done < "$dir/last-run.txt"
exit "$rc"
