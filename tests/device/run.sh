#!/usr/bin/env bash
# One device check for the CUDA backend, sized for a fresh H200 machine (at most 6.5 minutes, no
# network, no Debian libraries: carry .gpu-deps, made by tests/device/prepare-deps.sh where apt works):
#   1. toolchain: the compilers' versions and what the dependencies resolve to (ldd), first, so a
#      toolchain problem fails in seconds; missing tools stop the run;
#   2. build: libpatternkv with the CUDA backend for sm_90 (the sources of src/ and reference/
#      meson.build, the flags of meson.build and backends/meson.build), test_differential and
#      attend_bench, with plain g++/nvcc commands (no Meson on the device);
#   3. differential tests against the CPU reference (PATTERNKV_REQUIRE_GPU=1), small cases first,
#      the 32K-token cases last (test_differential lists them last);
#   4. compute-sanitizer memcheck, racecheck and initcheck on a few small cases, into one log;
#   5. decode attention: tests/device/attend_bench.cpp (KIVI and PatternKV at 2 and 4 bits, batch 1
#      and 8, 16K and 64K tokens, caches rotated past the L2; GB/s end to end, kernel only, and with
#      device views on a stream, checked bit for bit against the host-view output).
# $OUT/summary.json is rewritten after every phase, so a run cut short still says how far it got.
# Everything goes to $OUT (default build-device/out), at most 8 files: summary.json, run.log,
# build.log, gpu.txt, differential.log, sanitizer.log, bench.log, bench.json.
# Without a GPU it stops cleanly after the build (exit 2): that is the dry run on a CPU machine.
# Exit: 0 all passed; 1 a test failed; 2 no usable GPU; 3 tools missing; 4 build failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/build-device/out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/run.log") 2>&1
build=${PKV_DEVICE_BUILD:-build-device}
arch=${PKV_CUDA_ARCH:-90}
jobs=$(nproc 2>/dev/null || echo 4)
t0=$(date +%s)
budget=${PKV_DEVICE_BUDGET:-390}  # seconds for the whole run (6.5 minutes)
elapsed() { echo $(( $(date +%s) - t0 )); }
left() { echo $(( budget - $(elapsed) )); }  # seconds left to the budget
step() { summary; echo; echo "=== [$(elapsed) s of $budget] $*"; }

declare -A S=([status]=started [arch]="sm_$arch")
summary() {  # writes $OUT/summary.json from S
  { echo "{"; local first=1 k
    for k in "${!S[@]}"; do
      [ $first = 1 ] || echo ","; first=0
      printf '  "%s": "%s"' "$k" "$(printf '%s' "${S[$k]}" | tr '\n"\\' "  /")"
    done; echo; echo "}"; } > "$OUT/summary.json"
}
finish() { S[status]=$1; S[seconds]=$(elapsed); summary; echo; echo "=== result: $1 ($(elapsed) s)"; exit "$2"; }
# `limit SECONDS-WANTED RESERVE`: the time a phase may take, never past the budget minus what the
# later phases need (RESERVE); at least 10 s.
limit() { local l=$(( $(left) - $2 )); [ "$l" -gt "$1" ] && l=$1; [ "$l" -lt 10 ] && l=10; echo "$l"; }

# --- 1. toolchain -----------------------------------------------------------------------------------
step "toolchain"
[ -d /usr/local/cuda/bin ] && export PATH=/usr/local/cuda/bin:$PATH
CXX=${CXX:-g++}
if [ -d .gpu-deps/usr ]; then
  deps=$PWD/.gpu-deps/usr
  echo "using carried dependencies in $deps"
  export CPATH=$deps/include${CPATH:+:$CPATH}
  export LIBRARY_PATH=$deps/lib/x86_64-linux-gnu${LIBRARY_PATH:+:$LIBRARY_PATH}
  export LD_LIBRARY_PATH=$deps/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
missing=()
command -v nvcc >/dev/null || missing+=("nvcc (CUDA toolkit; looked in PATH and /usr/local/cuda/bin)")
command -v "$CXX" >/dev/null || missing+=("$CXX")
if command -v "$CXX" >/dev/null; then
  for h in tbb/parallel_for.h fmt/format.h doctest/doctest.h; do
    printf '#include <%s>\nint main() {}\n' "$h" | "$CXX" -std=c++20 -fsyntax-only -x c++ - 2>/dev/null || missing+=("header <$h>")
  done
  for l in tbb fmt; do
    printf 'int main() {}\n' | "$CXX" -x c++ - -o /tmp/pkv-link-$l -l$l 2>/dev/null || missing+=("library -l$l")
  done
fi
command -v "$CXX" >/dev/null && { "$CXX" --version | head -1; S[cxx]=$("$CXX" --version | head -1); }
if command -v nvcc >/dev/null; then
  cuda_root=$(dirname "$(dirname "$(command -v nvcc)")")
  nvcc --version | tail -2
  S[nvcc]=$(nvcc --version | grep -o 'release [0-9.]*')
fi
# what -ltbb -lfmt resolve to at run time (a carried library the loader cannot find shows here)
if printf '#include <tbb/task_arena.h>\n#include <fmt/format.h>\nint main() { return fmt::format("{}", tbb::this_task_arena::max_concurrency()).empty(); }\n' |
   "$CXX" -std=c++20 -x c++ - -o /tmp/pkv-ldd-probe -ltbb -lfmt 2>/dev/null; then
  ldd /tmp/pkv-ldd-probe | grep -E 'tbb|fmt|stdc' | sed 's/^/  ldd: /'
  /tmp/pkv-ldd-probe || missing+=("a program linked with -ltbb -lfmt does not run (see ldd above)")
fi
command -v nvidia-smi >/dev/null && nvidia-smi > "$OUT/gpu.txt" 2>&1 && S[gpu]=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)
if ((${#missing[@]})); then
  printf 'MISSING: %s\n' "${missing[@]}"
  S[missing]=$(IFS=';'; echo "${missing[*]}")
  finish tools-missing 3
fi

# --- 2. build --------------------------------------------------------------------------------------
step "build (sm_$arch, $jobs jobs)"
mkdir -p "$build/obj"
cxxflags=(-std=c++20 -O2 -fPIC -DNDEBUG -ffp-contract=off -fno-fast-math -fno-finite-math-only -Iinclude -I.
          -DPATTERNKV_WITH_CUDA=1 -DPATTERNKV_WITH_HIP=0)
# backends/meson.build's nvcc flags (keep in sync)
nvccflags=(--std=c++20 -O3 --expt-relaxed-constexpr -fmad=false -prec-div=true -prec-sqrt=true -ftz=false
           -Xcompiler=-ffp-contract=off -Xcompiler=-fno-fast-math -Xcompiler=-fPIC -diag-suppress=554
           "-gencode=arch=compute_$arch,code=sm_$arch" -DNDEBUG -Iinclude -I.)
sources=$(for d in reference src; do sed -n "s/^ *'\([^']*\.cpp\)',\{0,1\} *$/$d\/\1/p" $d/meson.build; done)
[ -n "$sources" ] || { echo "no sources found in reference/ and src/ meson.build"; S[build]="no sources"; finish build-failed 4; }
build_start=$(date +%s)
(
  set -e
  echo "sources: $(echo $sources)"
  printf '%s\n' $sources | xargs -P "$jobs" -I{} sh -c \
    'echo "c++ {}"; '"$CXX"' '"${cxxflags[*]}"' -c {} -o '"$build"'/obj/$(echo {} | tr / _).o' &
  cpu_pid=$!
  echo "nvcc backends/cuda/cuda_backend.cu"
  time nvcc "${nvccflags[@]}" -c backends/cuda/cuda_backend.cu -o "$build/obj/cuda_backend.o"
  wait $cpu_pid
  "$CXX" -shared -o "$build/libpatternkv.so" "$build"/obj/*.o -L"$cuda_root/lib64" -lcudart -ltbb -lfmt \
    -Wl,-rpath,"$cuda_root/lib64"
  "$CXX" "${cxxflags[@]}" tests/test_differential.cpp -o "$build/test_differential" -L"$build" -lpatternkv -ltbb -lfmt \
    -Wl,-rpath,"$PWD/$build" &
  diff_pid=$!
  "$CXX" "${cxxflags[@]}" -DPKV_BENCH_CUDA -I"$cuda_root/include" tests/device/attend_bench.cpp -o "$build/attend_bench" \
    -L"$build" -lpatternkv -L"$cuda_root/lib64" -lcudart -Wl,-rpath,"$PWD/$build" -Wl,-rpath,"$cuda_root/lib64"
  wait $diff_pid
) > "$OUT/build.log" 2>&1
build_rc=$?
S[build_seconds]=$(( $(date +%s) - build_start ))
tail -5 "$OUT/build.log"
[ $build_rc -eq 0 ] && [ -x "$build/test_differential" ] && [ -x "$build/attend_bench" ] || { S[build]=failed; finish build-failed 4; }
S[build]=ok

# --- 3. differential tests ---------------------------------------------------------------------------
step "GPU available?"
if ! PATTERNKV_REQUIRE_GPU=1 "$build/test_differential" --backend cuda --filter '#no-case#'; then
  S[differential]="not run: no usable CUDA device"
  finish no-gpu 2
fi
step "differential tests (CPU reference vs CUDA; 32K cases last)"
# the sanitizer (about 40 s) and the benchmark (about 90 s) keep their share of the budget
PATTERNKV_REQUIRE_GPU=1 timeout "$(limit 200 150)" "$build/test_differential" --backend cuda > "$OUT/differential.log" 2>&1
diff_rc=$?
grep -E "FAIL|passed" "$OUT/differential.log" | tail -20
S[differential]="rc=$diff_rc$([ $diff_rc = 124 ] && echo ' (timed out)'); $(grep -E '^[0-9]+ passed' "$OUT/differential.log" | tail -1); $(grep -c '^\[cuda\] OK' "$OUT/differential.log") cases OK"

# --- 4. compute-sanitizer ----------------------------------------------------------------------------
step "compute-sanitizer (memcheck, racecheck, initcheck) on small cases"
sanitizer=$(command -v compute-sanitizer || ls "$cuda_root"/compute-sanitizer/compute-sanitizer 2>/dev/null | head -1)
if [ -z "$sanitizer" ]; then
  S[sanitizer]="not run: compute-sanitizer not found (PATH, $cuda_root/compute-sanitizer)"
else
  : > "$OUT/sanitizer.log"
  san=""
  for tool in memcheck racecheck initcheck; do
    echo "=== $tool" >> "$OUT/sanitizer.log"
    PATTERNKV_REQUIRE_GPU=1 timeout "$(limit 40 100)" "$sanitizer" --tool "$tool" --error-exitcode 9 \
      "$build/test_differential" --backend cuda --filter 'prefill/patternkv K2V2 d128 kv2 q8 R128 batch1 prompts300 ' \
      --filter 'flush/kivi' --filter 'page-pool/kivi' >> "$OUT/sanitizer.log" 2>&1
    rc=$?
    san="$san $tool=$rc"
    echo "$tool rc=$rc"
  done
  S[sanitizer]="rc:$san (0 clean, 9 errors found, 124 timed out)"
fi

# --- 5. decode-attention timing ----------------------------------------------------------------------
step "decode attention timing (end to end and kernel only)"
timeout "$(limit 200 5)" "$build/attend_bench" --backend cuda --methods kivi-2,patternkv-2,kivi-4,patternkv-4 --contexts 16384,65536 \
  --batches 1,8 --reps 20 --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1
bench_rc=$?
# the same kernels without int8 MMA (dp4a, as HIP runs them): PatternKV-2 at 64K, appended to bench.log
echo "--- PATTERNKV_GPU_INT8_MMA=0 (dp4a code sums) ---" >> "$OUT/bench.log"
PATTERNKV_GPU_INT8_MMA=0 timeout "$(limit 60 5)" "$build/attend_bench" --backend cuda --methods patternkv-2 --contexts 65536 \
  --batches 1,8 --reps 20 >> "$OUT/bench.log" 2>&1
# a short context at batch 1 (8 KV heads x 5 splits = 40 blocks for 132 SMs): GQA groups chunked
# until the blocks cover the SMs (the default), then whole groups (PATTERNKV_GPU_FILL_SMS=0)
for fill in 1 0; do
  echo "--- 4K tokens, batch 1, PATTERNKV_GPU_FILL_SMS=$fill ---" >> "$OUT/bench.log"
  PATTERNKV_GPU_FILL_SMS=$fill timeout "$(limit 30 5)" "$build/attend_bench" --backend cuda --methods kivi-2,patternkv-2 \
    --contexts 4096 --batches 1 --reps 20 >> "$OUT/bench.log" 2>&1
done
cat "$OUT/bench.log" | tail -32
S[bench]="rc=$bench_rc$([ $bench_rc = 124 ] && echo ' (timed out; bench.json holds the rows it finished)'); $(($(wc -l < "$OUT/bench.log") - 1)) rows"
[ $diff_rc -eq 0 ] || finish differential-failed 1
finish ok 0
