"""Make "runs on a Raspberry Pi 4" checkable on an x86-64 host.

* build_tvm_runtime: cross-build TVM's libtvm_runtime.so for aarch64 from the installed wheel;
* build_arm64_rootfs / run_under_qemu: a Debian arm64 user space run under qemu-user as a
  Cortex-A72;
* assemble_device_packages: the Python packages (tvm_ffi, runtime-only tvm) for the device.
"""

from ._common import ToolchainMissing, resolve_cache_dir
from .pyenv import assemble_device_packages
from .rootfs import DEFAULT_QEMU_CPU, build_arm64_rootfs, run_under_qemu
from .tvm_runtime_build import build_tvm_runtime

__all__ = [
    "DEFAULT_QEMU_CPU",
    "ToolchainMissing",
    "assemble_device_packages",
    "build_arm64_rootfs",
    "build_tvm_runtime",
    "resolve_cache_dir",
    "run_under_qemu",
]
