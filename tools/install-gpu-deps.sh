#!/usr/bin/env bash
# Installs Debian's HIP toolchain for the HIP backend (hipcc = clang 15, libamdhip64, the device
# bitcode libraries) when missing, through install-deps.sh. The CUDA toolkit is not a Debian package
# here: it is expected under /usr/local/cuda (nvcc); this script only reports whether it is there.
set -euo pipefail
"$(dirname "$0")/install-deps.sh" hipcc libamdhip64-dev rocm-device-libs "$@"
if [ -x /usr/local/cuda/bin/nvcc ] || command -v nvcc >/dev/null 2>&1; then
  echo "nvcc: $( (command -v nvcc || echo /usr/local/cuda/bin/nvcc) | head -1)" >&2
else
  echo "nvcc not found (CUDA backend will be skipped unless -Dcuda=enabled)" >&2
fi
