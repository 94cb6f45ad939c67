"""What this machine has for each target: tools to build, a way to run (native, emulated, GPU),
committed tuning records. Backs ``tsm-deploy targets``."""

from __future__ import annotations

import json
from typing import Any

from ..support.host import cpu_flags
from .arch import ARCHES, CROSS_COMPILER_PACKAGES


# x86-64 micro-architecture levels the target files use, and the CPU flags each needs (a subset).
_X86_LEVEL_FLAGS = {
    "x86-64-v3": ("avx2", "fma", "bmi2", "f16c", "movbe"),
    "x86-64-v4": ("avx2", "fma", "bmi2", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"),
}


def target_status(target: Any) -> dict[str, Any]:
    """What this machine has for one target: tools to build, a way to run, tuning records, a GPU."""
    import platform
    import shutil

    from .library import library_dir, read_metadata, target_libraries
    from .targets import _detect_cuda_arch

    here = platform.machine()
    native = target.arch == here
    cross = None
    if target.cross_compiler:
        cross = {
            "compiler": target.cross_compiler,
            "installed": shutil.which(target.cross_compiler) is not None,
            "package": CROSS_COMPILER_PACKAGES.get(target.cross_compiler, target.cross_compiler),
        }
    emulator = None
    qemu = ARCHES[target.arch].qemu
    if target.device == "cpu" and not native and qemu:
        emulator = {"program": qemu, "installed": shutil.which(qemu) is not None}
    gpu = _detect_cuda_arch() if target.device == "cuda" else None
    if target.device == "cuda":
        if not native:
            runs, why = False, f"runs on the {target.arch} device (its GPU); compile here, run there"
        elif gpu:
            runs, why = True, f"GPU {gpu} found"
        else:
            runs, why = False, "no CUDA GPU/driver on this machine: compiles here, runs where there is one"
    elif native:
        needed = _X86_LEVEL_FLAGS.get(str(target.tvm_target.get("mcpu", "")), ())
        missing = [flag for flag in needed if flag not in cpu_flags()] if here == "x86_64" else []
        runs, why = (False, f"this CPU lacks {', '.join(missing)}") if missing else (True, "native")
    elif emulator:
        runs = emulator["installed"]
        why = f"emulated with {emulator['program']}" if runs else f"needs {emulator['program']} (apt-get install qemu-user-static)"
    else:
        runs, why = False, f"needs a {target.arch} machine"
    library = library_dir(target.tuning_logs)
    used = target_libraries(target)
    return {
        "name": target.name,
        "description": target.description,
        "device": target.device,
        "arch": target.arch,
        "tvm_target": target.tvm_target,
        "host": target.host,
        "source": target.source,
        "cross_compiler": cross,
        "emulator": emulator,
        "gpu": gpu,
        "runs_here": runs,
        "runs_here_detail": why,
        "tuning_records": {
            "path": str(library) if library else None,
            "present": any(lib.path == library for lib in used),
            "kernels": len(read_metadata(library).get("tasks", {})) if library else 0,
            "models": sorted(read_metadata(library).get("models", {})) if library else [],
            "fallbacks": [lib.name for lib in used if lib.path != library],
        },
    }


def format_target_status(s: dict[str, Any]) -> str:
    import os

    tvm_target = json.dumps(s["tvm_target"]) + (f" host {json.dumps(s['host'])}" if s["host"] else "")
    cross = s["cross_compiler"]
    if cross is None:
        build = "native toolchain"
    elif cross["installed"]:
        build = f"{cross['compiler']} (installed)"
    else:
        build = f"{cross['compiler']} MISSING (apt-get install {cross['package']})"
    records = s["tuning_records"]
    if records["path"] is None:
        tuning = "none kept for this target (untuned default schedules)"
    else:
        shown = os.path.relpath(records["path"]) if records["path"].startswith(os.getcwd() + os.sep) else records["path"]
        tuning = (f"{shown}: {records['kernels']} kernels of {len(records['models'])} models" if records["present"]
                  else f"{shown}: none yet")
        if records["fallbacks"]:
            tuning += f"; then the records of {', '.join(records['fallbacks'])}"
    return "\n".join(
        [
            f"{s['name']}  [{s['device']}, {s['arch']}]  {s['description']}",
            f"    tvm target  {tvm_target}",
            f"    build       {build}",
            f"    run here    {'yes' if s['runs_here'] else 'no'}: {s['runs_here_detail']}",
            f"    tuning      {tuning}",
        ]
    )
