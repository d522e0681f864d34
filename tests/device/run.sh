#!/usr/bin/env bash
# One device check for the CUDA backend, sized for a fresh H200 machine (< 8 minutes, no network):
#   1. finds the tools (nvcc under /usr/local/cuda, a C++20 g++, TBB/fmt/doctest headers and libs;
#      missing ones are reported in $OUT/summary.json and the script stops),
#   2. builds libpatternkv with the CUDA backend for sm_90 only, test_differential and attend_bench
#      with plain g++/nvcc commands (no Meson/pkg-config/CMake needed on the device; the flags are
#      those of backends/meson.build and meson.build),
#   3. runs the differential tests against the CPU reference with PATTERNKV_REQUIRE_GPU=1,
#   4. times decode attention: bench/patternkv-bench --backend cuda if bench/ has one, else
#      tests/device/attend_bench.cpp (contexts 1K/4K/16K/64K, GB/s against 4.8 TB/s).
# Logs and JSON go to $OUT (default build-device/out). Without a GPU it stops cleanly after step 2.
# If the machine has no TBB/fmt/doctest: run tests/device/prepare-deps.sh where apt works and carry
# the .gpu-deps folder it makes (it is picked up automatically).
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
elapsed() { echo $(( $(date +%s) - t0 )); }
step() { echo; echo "=== [$(elapsed) s] $*"; }

declare -A S=([status]=started [arch]="sm_$arch")
summary() {  # writes $OUT/summary.json from S
  { echo "{"; local first=1 k
    for k in "${!S[@]}"; do
      [ $first = 1 ] || echo ","; first=0
      printf '  "%s": "%s"' "$k" "$(printf '%s' "${S[$k]}" | tr '\n"\\' "  /")"
    done; echo; echo "}"; } > "$OUT/summary.json"
}
finish() { S[status]=$1; S[seconds]=$(elapsed); summary; echo; echo "=== result: $1 ($(elapsed) s)"; exit "$2"; }

# --- 1. tools --------------------------------------------------------------------------------------
step "tools"
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
if command -v nvcc >/dev/null; then
  cuda_root=$(dirname "$(dirname "$(command -v nvcc)")")
  nvcc --version | tail -2
  S[nvcc]=$(nvcc --version | grep -o 'release [0-9.]*')
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
sources=$(sed -n "s/^ *'\([^']*\.cpp\)',\{0,1\} *$/reference\/\1/p" reference/meson.build)
build_start=$(date +%s)
(
  set -e
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
  "$CXX" "${cxxflags[@]}" tests/device/attend_bench.cpp -o "$build/attend_bench" -L"$build" -lpatternkv \
    -Wl,-rpath,"$PWD/$build"
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
step "differential tests (CPU reference vs CUDA)"
PATTERNKV_REQUIRE_GPU=1 timeout 330 "$build/test_differential" --backend cuda > "$OUT/differential.log" 2>&1
diff_rc=$?
grep -E "FAIL|passed" "$OUT/differential.log" | tail -20
S[differential]="rc=$diff_rc; $(grep -E '^[0-9]+ passed' "$OUT/differential.log" | tail -1)"

# --- 4. decode-attention timing ----------------------------------------------------------------------
step "decode attention timing"
if grep -q -- '"--backend"' bench/perf/bench_main.cpp 2>/dev/null; then
  "$CXX" "${cxxflags[@]}" bench/perf/*.cpp -o "$build/patternkv-bench" -L"$build" -lpatternkv -ltbb -lfmt \
    -Wl,-rpath,"$PWD/$build" >> "$OUT/build.log" 2>&1 &&
    timeout 150 "$build/patternkv-bench" --backend cuda --quick --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1
  bench_rc=$?
  S[bench]="bench/patternkv-bench rc=$bench_rc"
else
  timeout 150 "$build/attend_bench" --backend cuda --contexts 1024,4096,16384,65536 --reps 20 --json "$OUT/bench.json" \
    > "$OUT/bench.log" 2>&1
  bench_rc=$?
  S[bench]="tests/device/attend_bench rc=$bench_rc"
fi
cat "$OUT/bench.log" | tail -12
[ $diff_rc -eq 0 ] || finish differential-failed 1
finish ok 0
