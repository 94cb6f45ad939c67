#!/usr/bin/env bash
# Debian packages the project needs beyond Python: cross compilers for the Raspberry Pi and Jetson
# targets, the tools that cross-build the TVM runtime for aarch64, and QEMU + mmdebstrap for the
# emulated Raspberry Pi parity check and instruction meter. Idempotent: installs only what is missing.
set -euo pipefail

PACKAGES=(
  cmake ninja-build                               # build the TVM runtime
  gcc-aarch64-linux-gnu g++-aarch64-linux-gnu     # aarch64 cross toolchain (+ binutils: strip)
  gcc-arm-linux-gnueabihf g++-arm-linux-gnueabihf # 32-bit Raspberry Pi OS (rasp4-armv7)
  qemu-user-static                                # qemu-aarch64-static: run arm64 programs
  qemu-user                                       # dynamic qemu-aarch64: loads the instruction-meter plugin
  gcc                                             # builds that plugin (tsm_deploy/emulation/meter_plugin.c)
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
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
