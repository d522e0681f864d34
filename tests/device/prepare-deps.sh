#!/usr/bin/env bash
# Run where apt works: downloads Debian's TBB, fmt and doctest packages and unpacks them into
# .gpu-deps/ (repository root) for a device machine that has none; tests/device/run.sh picks
# .gpu-deps/usr up when the folder is carried (git-ignore it locally: echo /.gpu-deps/ >> .git/info/exclude).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .gpu-deps/debs
(cd .gpu-deps/debs && apt-get download libtbb-dev libtbb12 libtbbmalloc2 libtbbbind-2-5 libfmt-dev libfmt9 doctest-dev)
for f in .gpu-deps/debs/*.deb; do dpkg -x "$f" .gpu-deps; done
du -sh .gpu-deps
