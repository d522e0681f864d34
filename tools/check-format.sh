#!/bin/sh
# Fails when a C++ source of the repository is not formatted as .clang-format says (clang-format 14,
# Debian 12's). Fix with: clang-format -i --style=file $(git ls-files '*.hpp' '*.cpp' '*.cu' '*.hip')
# Usage: tools/check-format.sh SOURCE_ROOT
set -eu
cd "$1"
files=$(git ls-files '*.hpp' '*.cpp' '*.cu' '*.hip' 2>/dev/null || find include core src reference backends tests bench fuzz -name '*.[ch]pp' -o -name '*.cu' -o -name '*.hip')
[ -n "$files" ] || { echo "check-format: no sources found under $1"; exit 1; }
# shellcheck disable=SC2086
clang-format --dry-run --Werror --style=file $files
echo "check-format: $(echo "$files" | wc -l) files formatted as .clang-format says"
