#!/usr/bin/env bash
# Installs the Debian packages the build and tests need (skips apt when all are present).
set -euo pipefail
packages=(meson ninja-build g++ pkg-config cmake libtbb-dev libfmt-dev doctest-dev libpcre2-dev python3 doxygen clang clang-format "$@")
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi
