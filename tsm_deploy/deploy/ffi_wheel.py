"""The device's copy of apache-tvm-ffi: the PyPI wheel for the device architecture.

libtvm_ffi.so (which libtvm_runtime.so links against) and the `tvm_ffi` Python package (with its
compiled extension) both come from that wheel. Its version must equal the host's, because the
runtime is compiled against the host wheel's headers.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import zipfile
from pathlib import Path

from ..support.tools import Progress, atomic_cache_entry, report, resolve_cache_dir
from ..target.arch import arch_spec

TVM_FFI_DIST = "apache-tvm-ffi"
PYTHON_VERSION = "3.11"  # Debian bookworm's python3, and the project's Python


def tvm_ffi_version() -> str:
    """Version of apache-tvm-ffi installed on the host."""
    return importlib.metadata.version(TVM_FFI_DIST)


def fetch_tvm_ffi_wheel(arch: str = "aarch64", cache_dir: Path | None = None,
                        progress: Progress | None = None) -> Path:
    """Download and unpack the host-matching apache-tvm-ffi wheel for `arch`; cached.

    Returns the directory holding the unpacked wheel (`tvm_ffi/`, its `.dist-info/`).
    """
    spec = arch_spec(arch)
    version = tvm_ffi_version()
    final = resolve_cache_dir(cache_dir) / "tvm-ffi" / f"{version}-cp311-{spec.name}"
    if final.is_dir():
        return final
    report(progress, f"downloading {TVM_FFI_DIST}=={version} wheel for {spec.name}")
    with atomic_cache_entry(final) as tmp:
        wheel = _download_wheel(version, spec.wheel_platforms, tmp / "download")
        report(progress, f"unpacking {wheel.name}")
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(tmp)
        wheel.unlink()
        (tmp / "download").rmdir()
        _restore_exec_bits(tmp)
    return final


def _download_wheel(version: str, platforms: tuple[str, ...], dest: Path) -> Path:
    # pip accepts several --platform tags and picks any wheel matching one of them.
    argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--python-version", PYTHON_VERSION, "--implementation", "cp", "--abi",
            f"cp{PYTHON_VERSION.replace('.', '')}", "--dest", str(dest), "--quiet"]
    for tag in platforms:
        argv += ["--platform", tag]
    argv.append(f"{TVM_FFI_DIST}=={version}")
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        raise RuntimeError(
            f"no {TVM_FFI_DIST}=={version} wheel on the package index for platforms "
            f"{', '.join(platforms)}: {proc.stderr.strip().splitlines()[-1:]}"
        )
    return wheels[0]


def _restore_exec_bits(root: Path) -> None:
    # zipfile drops permission bits; shared libraries should stay executable as pip leaves them.
    for lib in root.rglob("*.so*"):
        lib.chmod(0o755)
