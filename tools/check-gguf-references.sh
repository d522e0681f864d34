#!/usr/bin/env bash
# Checks the evaluation runner's GGUF decoding against independent implementations on real models:
# every K-quant tensor (and samples of the others) bit for bit against gguf-py's decoder, and the
# SentencePiece tokenizer id for id against sentencepiece and transformers. Fetches Gemma 3 270M,
# builds the two small tools in build-main, and installs the Python references into a venv
# ($PATTERNKV_CACHE_DIR/venv-references, from PyPI). A few minutes on 2 cores.
#
#   tools/check-gguf-references.sh [--llama-tokenize BIN]   (llama.cpp's llama-tokenize: a third reference)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cache="${PATTERNKV_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/patternkv}"
venv="$cache/venv-references"

gemma="$("$root/tools/fetch-gemma3.sh")"
if [ ! -f build-main/build.ninja ]; then
    meson setup build-main --buildtype=release -Dtests=false -Dbench=true -Dcuda=disabled -Dhip=disabled
fi
meson compile -C build-main gguf-tensor-dump gguf-tokenize

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import gguf, numpy, sentencepiece, transformers" 2>/dev/null; then
    echo "check-gguf-references: installing gguf, numpy, sentencepiece, protobuf, transformers into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --disable-pip-version-check -q gguf numpy sentencepiece protobuf transformers tokenizers
fi
"$venv/bin/python" tools/check-gguf-dequant.py "$gemma" build-main/bench/eval/gguf-tensor-dump
"$venv/bin/python" tools/check-gguf-tokenizer.py "$gemma" build-main/bench/eval/gguf-tokenize "$@"
