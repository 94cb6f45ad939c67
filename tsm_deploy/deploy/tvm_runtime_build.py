"""Cross-build TVM's C++ runtime (libtvm_runtime.so) for a Raspberry Pi.

No registry has an aarch64 libtvm_runtime.so, but the installed x86-64 apache-tvm wheel ships the
runtime's C++ sources (tvm/src/runtime, tvm/include). They are compiled with the Debian cross
toolchain, against the headers and libtvm_ffi.so of the device's apache-tvm-ffi wheel. Nothing of
TVM's code lives in this repository: sources are staged from the installed wheel at build time.

The wheel lacks a handful of support headers. Runtime files that are not needed to run a CNN
(RPC, disco, LLM KV caches, GPU/accelerator contribs) are left out; the headers that the needed
files cannot do without are replaced by this project's own small stand-ins in runtime_support/.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import importlib.util
import json
import os
import shutil
import time
from pathlib import Path

from ..target.arch import ArchSpec, arch_spec
from ..support.tools import (
    Progress,
    ToolchainMissing,
    atomic_cache_entry,
    logger,
    report,
    require_tool,
    resolve_cache_dir,
    run_logged,
)
from .ffi_wheel import fetch_tvm_ffi_wheel

__all__ = ["ToolchainMissing", "build_tvm_runtime", "EXCLUDED_RUNTIME_SOURCES", "runtime_sources"]

RUNTIME_LIB = "libtvm_runtime.so"
SUPPORT_DIR = Path(__file__).resolve().parent / "runtime_support"

# Runtime sources (glob, relative to the wheel's tvm/) left out of the device build, and why.
EXCLUDED_RUNTIME_SOURCES: dict[str, str] = {
    "src/runtime/extra/*": "contrib/BYOC libraries (cuBLAS, DNNL, TensorRT, ...) and disco",
    "src/runtime/rpc/*": "RPC needs socket/pipe support headers the wheel lacks",
    "src/runtime/builtin_fp16.cc": "needs compiler-rt's builtin_fp16.h; aarch64 converts fp16 natively",
    "src/runtime/vm/cuda/*": "CUDA graphs",
    "src/runtime/vm/hexagon/*": "Hexagon DSP",
    "src/runtime/vm/attn_backend.cc": "LLM attention",
    "src/runtime/vm/kv_state.cc": "LLM KV cache",
    "src/runtime/vm/paged_kv_cache.cc": "LLM KV cache",
    "src/runtime/vm/rnn_state.cc": "LLM RNN state",
    "src/runtime/vm/lm_support.cc": "LLM sampling helpers",
    "src/runtime/vm/tensor_cache_support.cc": "LLM weight-shard loader",
}


def build_tvm_runtime(arch: str = "aarch64", cache_dir: Path | None = None,
                      progress: Progress | None = None) -> Path:
    """Return the path of libtvm_runtime.so cross-built for `arch`, building it if not cached.

    Cached by (TVM version, arch) under `cache_dir` (default $TSM_DEPLOY_CACHE or
    ~/.cache/tsm-deploy). Raises ToolchainMissing when cmake or the cross compiler is absent.
    """
    spec = arch_spec(arch)
    final = resolve_cache_dir(cache_dir) / "tvm-runtime" / f"{tvm_version()}-{spec.name}"
    if (final / RUNTIME_LIB).is_file():
        logger.debug("using cached %s", final / RUNTIME_LIB)
        return final / RUNTIME_LIB

    tools = _find_build_tools(spec)
    ffi_root = fetch_tvm_ffi_wheel(arch, cache_dir, progress)
    with atomic_cache_entry(final) as out:
        started = time.monotonic()
        work = out / "work"
        stage = _stage_sources(work / "stage", progress)
        sources = runtime_sources(stage)
        report(progress, f"cross-compiling {len(sources)} TVM runtime sources for {spec.name}")
        built = _cmake_build(spec, tools, stage, sources, ffi_root, work / "build", out / "build.log")
        run_logged([tools["strip"], "--strip-unneeded", "-o", out / RUNTIME_LIB, built])
        shutil.rmtree(work)
        _write_build_info(out / "build-info.json", spec, sources, time.monotonic() - started)
        report(progress, f"built {RUNTIME_LIB} for {spec.name} in {time.monotonic() - started:.0f} s")
    return final / RUNTIME_LIB


def tvm_version() -> str:
    """Version of the installed apache-tvm wheel (the runtime sources' origin)."""
    return importlib.metadata.version("apache-tvm")


def tvm_package_dir() -> Path:
    """Directory of the installed `tvm` package, found without importing it (a slow import)."""
    spec = importlib.util.find_spec("tvm")
    if spec is None or spec.origin is None:
        raise RuntimeError("the apache-tvm package is not installed")
    return Path(spec.origin).resolve().parent


def runtime_sources(tvm_root: Path) -> list[str]:
    """The .cc files under `tvm_root`/src/runtime that the device runtime compiles (relative)."""
    found = sorted(p.relative_to(tvm_root).as_posix() for p in (tvm_root / "src/runtime").rglob("*.cc"))
    return [s for s in found if not any(fnmatch.fnmatch(s, pat) for pat in EXCLUDED_RUNTIME_SOURCES)]


def _find_build_tools(spec: ArchSpec) -> dict[str, str]:
    tools = {
        "cmake": require_tool("cmake", "cmake"),
        "cxx": require_tool(spec.cross_gxx, spec.cross_gxx_package),
        "strip": require_tool(f"{spec.gnu_triplet}-strip", f"binutils-{spec.gnu_triplet}"),
    }
    # Ninja is optional: CMake falls back to Makefiles.
    ninja = shutil.which("ninja")
    if ninja is not None:
        tools["ninja"] = ninja
    return tools


def _stage_sources(stage: Path, progress: Progress | None) -> Path:
    """Copy the wheel's runtime sources into `stage` and lay the project's stand-ins over them.

    A staged tree (rather than include paths into site-packages) is needed because the sources
    include the missing headers by relative path (`../support/bytes_io.h`).
    """
    pkg = tvm_package_dir()
    if not (pkg / "src" / "runtime").is_dir() or not (pkg / "include").is_dir():
        raise RuntimeError(f"the installed apache-tvm at {pkg} ships no C++ runtime sources")
    report(progress, f"staging TVM runtime sources from {pkg}")
    shutil.copytree(pkg / "include", stage / "include")
    shutil.copytree(pkg / "src" / "runtime", stage / "src" / "runtime")
    for part in ("include", "src"):
        shutil.copytree(SUPPORT_DIR / part, stage / part, dirs_exist_ok=True)
    return stage


def _cmake_build(spec: ArchSpec, tools: dict[str, str], stage: Path, sources: list[str],
                 ffi_root: Path, build_dir: Path, log_file: Path) -> Path:
    ffi_pkg = ffi_root / "tvm_ffi"
    configure = [
        tools["cmake"], "-S", SUPPORT_DIR, "-B", build_dir,
        "-DCMAKE_BUILD_TYPE=Release",
        "-DCMAKE_SYSTEM_NAME=Linux",
        f"-DCMAKE_SYSTEM_PROCESSOR={spec.cmake_processor}",
        f"-DCMAKE_CXX_COMPILER={tools['cxx']}",
        f"-DTVM_STAGE_DIR={stage}",
        f"-DTVM_FFI_INCLUDE_DIR={ffi_pkg / 'include'}",
        f"-DTVM_FFI_LIBRARY={ffi_pkg / 'lib' / 'libtvm_ffi.so'}",
        f"-DTVM_RUNTIME_SOURCES={';'.join(sources)}",
        f"-DTVM_VERSION_STRING={tvm_version()}",
    ]
    if "ninja" in tools:
        configure += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={tools['ninja']}"]
    run_logged(configure, log_file=log_file)
    jobs = str(os.cpu_count() or 1)
    run_logged([tools["cmake"], "--build", build_dir, "--parallel", jobs], log_file=log_file)
    return build_dir / RUNTIME_LIB


def _write_build_info(path: Path, spec: ArchSpec, sources: list[str], seconds: float) -> None:
    info = {
        "tvm_version": tvm_version(),
        "arch": spec.name,
        "sources": sources,
        "excluded": EXCLUDED_RUNTIME_SOURCES,
        "build_seconds": round(seconds, 1),
    }
    path.write_text(json.dumps(info, indent=2) + "\n")
