#!/usr/bin/env bash
# Host packages for cross-building the TVM runtime for a Raspberry Pi 4 (aarch64) and running
# the result under emulation (tsm_deploy.device). Idempotent: apt-get skips installed packages.
set -euo pipefail

PACKAGES=(
  cmake ninja-build                               # build the TVM runtime
  gcc-aarch64-linux-gnu g++-aarch64-linux-gnu     # aarch64 cross toolchain (+ binutils: strip)
  qemu-user-static                                # qemu-aarch64-static: run arm64 programs
  mmdebstrap                                      # Debian arm64 root filesystem (python3, numpy)
)

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  SUDO=(sudo)
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -eq 0 ]; then
  echo "cross deps already installed"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
