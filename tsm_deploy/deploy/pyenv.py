"""Assemble the Python packages a device needs to run a compiled TVM module.

The result is a site-packages style directory; on the device (or under qemu)
`PYTHONPATH=<dir> python3 -c "import tvm; tvm.runtime.load_module('./model.so')"` works with
only Debian's python3 and python3-numpy installed. It holds:

* `tvm_ffi`: the device-architecture apache-tvm-ffi wheel (libtvm_ffi.so + compiled extension);
* `tvm`: the pure-Python modules of the host's apache-tvm that a runtime-only import loads, plus
  libtvm_runtime.so cross-built by build_tvm_runtime(). With no libtvm_compiler.so beside it,
  `import tvm` falls back to runtime-only mode;
* `typing_extensions.py` from the host: tvm_ffi needs a newer one than Debian bookworm ships.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ..support.tools import Progress, report
from .ffi_wheel import fetch_tvm_ffi_wheel
from .tvm_runtime_build import RUNTIME_LIB, build_tvm_runtime, tvm_package_dir

__all__ = ["assemble_device_packages", "runtime_only_tvm_files"]

# Build-time parts of the tvm-ffi wheel (headers, C++ sources, Cython, CMake files): not needed
# to run, and 5 MiB a Pi does not need to store. (lib/libtvm_ffi_testing.so stays: the compiled
# extension core.so links against it.)
_FFI_BUILD_ONLY = ("include", "src", "3rdparty", "cython", "share")
_TVM_LEGAL_FILES = ("LICENSE", "NOTICE")

# Imports what a deployed model uses, in runtime-only mode, and lists the tvm files loaded.
_TRACE_SCRIPT = """
import json, os, sys
import tvm, tvm.runtime, tvm.runtime.vm
root = os.path.dirname(os.path.abspath(tvm.__file__))
files = {
    os.path.relpath(os.path.abspath(m.__file__), root)
    for name, m in list(sys.modules.items())
    if (name == "tvm" or name.startswith("tvm.")) and getattr(m, "__file__", None)
}
print(json.dumps(sorted(f for f in files if f.endswith(".py"))))
"""


def assemble_device_packages(dest: Path, arch: str = "aarch64", cache_dir: Path | None = None,
                             progress: Progress | None = None) -> Path:
    """Fill `dest` with tvm_ffi, a runtime-only tvm and libtvm_runtime.so for `arch`.

    Existing `tvm`/`tvm_ffi` entries in `dest` are replaced. Returns `dest`, the directory to put
    on PYTHONPATH. The runtime and the tvm-ffi wheel come from the cache (built on first use).
    """
    dest = Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    runtime = build_tvm_runtime(arch, cache_dir, progress)
    ffi_root = fetch_tvm_ffi_wheel(arch, cache_dir, progress)

    report(progress, f"assembling device Python packages in {dest}")
    _copy_tvm_ffi(ffi_root, dest)
    _copy_runtime_only_tvm(dest / "tvm")
    lib_dir = dest / "tvm" / "lib"
    lib_dir.mkdir()
    shutil.copy2(runtime, lib_dir / RUNTIME_LIB)
    _copy_module_file("typing_extensions", dest)
    return dest


def runtime_only_tvm_files() -> list[str]:
    """Files of the host's `tvm` package (relative) that a runtime-only `import tvm` loads.

    Found by tracing the import on the host in runtime-only mode (TVM_USE_RUNTIME_LIB=1), which
    runs the same Python code as the device, so the list follows whatever TVM version is installed.
    """
    env = dict(os.environ, TVM_USE_RUNTIME_LIB="1")
    proc = subprocess.run([sys.executable, "-c", _TRACE_SCRIPT], env=env, capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"tracing the runtime-only tvm import failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _copy_tvm_ffi(ffi_root: Path, dest: Path) -> None:
    for entry in ffi_root.iterdir():
        target = dest / entry.name
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        if entry.is_dir():
            shutil.copytree(entry, target, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(entry, target)
    for rel in _FFI_BUILD_ONLY:
        path = dest / "tvm_ffi" / rel
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _copy_runtime_only_tvm(dest_pkg: Path) -> None:
    src_pkg = tvm_package_dir()
    if dest_pkg.exists():
        shutil.rmtree(dest_pkg)
    for rel in [*runtime_only_tvm_files(), *_TVM_LEGAL_FILES]:
        src = src_pkg / rel
        if src.is_file():
            (dest_pkg / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest_pkg / rel)


def _copy_module_file(module: str, dest: Path) -> None:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"host module {module!r} is needed on the device but is not installed")
    shutil.copy2(spec.origin, dest / Path(spec.origin).name)
