#!/usr/bin/env bash
# The main evaluation job: installs what is missing, fetches SmolLM2-135M-Instruct and Gemma 3 270M,
# builds a release build in build-main and compares every KV-cache method on both models over the
# GPL-3 text (plus the small stories260K model on TinyStories when the shared data is present).
# Results (JSON, SVG, text tables) go to results/. 11-12 minutes on 2 cores from a fresh clone.
#
#   tools/main-job.sh            environment: PATTERNKV_CACHE_DIR (model cache), PATTERNKV_DATA_DIR
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
start=$(date +%s)

# --- 1. packages (apt only when something is missing) ---
missing=0
for cmd in meson ninja g++ pkg-config cmake python3; do command -v "$cmd" >/dev/null || missing=1; done
for pc in tbb fmt libpcre2-8; do pkg-config --exists "$pc" 2>/dev/null || missing=1; done
[ -f /usr/include/doctest/doctest.h ] || missing=1
python3 -m pip --version >/dev/null 2>&1 || command -v pip3 >/dev/null || missing=1
if [ "$missing" = 1 ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "main-job: installing build dependencies with apt-get" >&2
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends \
        meson ninja-build g++ pkg-config cmake libtbb-dev libfmt-dev doctest-dev libpcre2-dev python3 python3-pip
fi

# --- 2. models (Gemma 3 under Google's Gemma Terms of Use: see tools/fetch-gemma3.sh) ---
gguf="$("$root/tools/fetch-smollm2.sh")"
gemma="$("$root/tools/fetch-gemma3.sh")"

# --- 3. build ---
if [ ! -f build-main/build.ninja ]; then
    # a CPU job: the GPU backends are not needed and would only lengthen the build
    meson setup build-main --buildtype=release -Dtests=false -Dbench=true -Dcuda=disabled -Dhip=disabled
fi
meson compile -C build-main patternkv-eval
eval_bin="build-main/bench/eval/patternkv-eval"

# --- 4. evaluation: the program's default methods (KIVI's 2/3/4-bit curve, PatternKV at 2/3/4 bits and
#        two ablations), at a 1K and a 4K prompt, each over several chunks of the GPL-3 text ---
mkdir -p results
run_eval() {  # model-file name prefill tokens chunks [methods]
    echo "main-job: $2 on GPL-3, $5 chunk(s) of prefill $3 + decode $4" >&2
    local t0=$(date +%s)
    "$eval_bin" --model "$1" --prefill "$3" --tokens "$4" --chunks "$5" ${6:+--methods "$6"} \
        --json "results/$2.json" --plot "results/$2.svg" | tee "results/$2.txt"
    echo "wall time of the command: $(( $(date +%s) - t0 )) s" | tee -a "results/$2.txt"
}
run_eval "$gguf" smollm2-gpl3-1k 1024 256 3
run_eval "$gguf" smollm2-gpl3-4k 4096 512 2
# the attention sink (docs/accuracy.md, section 5): PatternKV keeps the first token in fp16 by default;
# the same sink given to KIVI shows how much of PatternKV's gain it explains
sink="fp32,kivi-2,kivi-3,kivi-4,kivi-8,patternkv-2,patternkv-3,patternkv-4"
for m in kivi-2 kivi-3 kivi-4; do sink="$sink,$m+sink_tokens=1"; done
run_eval "$gguf" smollm2-sink-1k 1024 256 3 "$sink"

# Gemma 3 270M (head_dim 256, sliding-window layers): a greedy generation as a smoke test, then the table
echo "main-job: Gemma 3 270M greedy generation (smoke test)" >&2
"$eval_bin" --model "$gemma" --generate "The GNU General Public License is" --max-new 40 | tee results/gemma3-generate.txt
run_eval "$gemma" gemma3-gpl3-1k 1024 256 3
run_eval "$gemma" gemma3-gpl3-4k 4096 512 2

data="${PATTERNKV_DATA_DIR:-$root/../shared/data}"
if [ -f "$data/stories260K.bin" ] && [ -f "$data/tok512.bin" ] && [ -f "$data/tinystories_val.txt" ]; then
    echo "main-job: stories260K on TinyStories" >&2
    "$eval_bin" --model "$data/stories260K.bin" --tokenizer "$data/tok512.bin" --text "$data/tinystories_val.txt" \
        --prefill 256 --tokens 255 --json results/stories260k-tinystories.json --plot results/stories260k-tinystories.svg \
        | tee results/stories260k-tinystories.txt
else
    echo "main-job: shared data not found at $data: stories260K run skipped" >&2
fi
echo "main-job: done in $(( $(date +%s) - start )) s; results in $root/results/" >&2
