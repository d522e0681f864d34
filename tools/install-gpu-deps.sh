#!/usr/bin/env bash
# Installs Debian's HIP toolchain for the HIP backend (hipcc = clang 15, libamdhip64, the device
# bitcode libraries) when missing. The CUDA toolkit is not a Debian package here: it is expected
# under /usr/local/cuda (nvcc); this script only reports whether it is there.
set -euo pipefail
packages=(hipcc libamdhip64-dev rocm-device-libs "$@")
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
if [ -x /usr/local/cuda/bin/nvcc ] || command -v nvcc >/dev/null 2>&1; then
  echo "nvcc: $( (command -v nvcc || echo /usr/local/cuda/bin/nvcc) | head -1)" >&2
else
  echo "nvcc not found (CUDA backend will be skipped unless -Dcuda=enabled)" >&2
fi
