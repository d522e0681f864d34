#!/usr/bin/env bash
# The whole test run, as CI does it: installs the Debian packages it needs, then
#   1. a release build with the CUDA and HIP backends compiled (when their toolchains exist) and
#      every test suite (unit, real-data, differential incl. the emulated GPU mapping, eval,
#      consumers, docs);
#   2. the suites again under clang ASan + UBSan (tools/ci-sanitizers.sh);
#   3. each libFuzzer target for PATTERNKV_FUZZ_SECONDS (default 60) (tools/ci-fuzz.sh).
# Usage: tools/test.sh [build-dir] [extra meson setup options...]
# PATTERNKV_QUICK=1 runs step 1 only. Real-data tests read $PATTERNKV_DATA_DIR or ../shared/data.
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-test}
shift || true
tools/install-deps.sh || exit 1
tools/install-gpu-deps.sh || echo "test.sh: HIP toolchain not installed; the HIP backend will not be built" >&2
# nvcc lives outside PATH on these machines; Meson's CUDA detection needs it on PATH.
if [ -d /usr/local/cuda/bin ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
if [ -z "${PATTERNKV_DATA_DIR:-}" ] && [ -d ../shared/data ]; then
  export PATTERNKV_DATA_DIR=$(cd ../shared/data && pwd)
fi
gpu=()
command -v nvcc >/dev/null && gpu+=(-Dcuda=enabled)
command -v hipcc >/dev/null && gpu+=(-Dhip=enabled)
status=0
if [ -d "$build" ]; then meson setup --reconfigure "$build" "${gpu[@]}" "$@" >/dev/null || exit 1
else meson setup "$build" --buildtype=release "${gpu[@]}" "$@" || exit 1; fi
meson compile -C "$build" || exit 1
meson test -C "$build" --print-errorlogs --num-processes 2 || status=1
if [ "${PATTERNKV_QUICK:-0}" != 1 ]; then
  tools/ci-sanitizers.sh build-asan || status=1
  tools/ci-fuzz.sh "${PATTERNKV_FUZZ_SECONDS:-60}" build-fuzz || status=1
fi
exit $status
