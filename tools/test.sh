#!/usr/bin/env bash
# Builds the library, tests and tools in release mode and runs every test suite.
# Usage: tools/test.sh [build-dir] [extra meson setup options...]
# Real-data tests read ../shared/data (or $PATTERNKV_DATA_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-test}
shift || true
tools/install-deps.sh
# nvcc lives outside PATH on these machines; Meson's CUDA detection needs it on PATH.
if [ -d /usr/local/cuda/bin ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
if [ -z "${PATTERNKV_DATA_DIR:-}" ] && [ -d ../shared/data ]; then
  export PATTERNKV_DATA_DIR=$(cd ../shared/data && pwd)
fi
if [ -d "$build" ]; then meson setup --reconfigure "$build" "$@" >/dev/null; else meson setup "$build" --buildtype=release "$@"; fi
meson compile -C "$build"
meson test -C "$build" --print-errorlogs --num-processes 2
