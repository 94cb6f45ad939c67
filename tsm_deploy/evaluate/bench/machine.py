"""What machine a benchmark ran on, for the report."""

from __future__ import annotations

import datetime
import os
import platform
from typing import Any

import numpy as np

from ...support.host import cpu_name


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _source_commit() -> str | None:
    """The commit of the checkout this package runs from (a figure says what code it measured); None
    for an installed wheel or without git."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--",
                                "tsm_deploy"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")


def machine_info() -> dict[str, Any]:
    import onnxruntime
    import psutil
    import torch
    import tvm

    from ... import __version__

    return {
        "cpu": cpu_name(),
        "arch": platform.machine(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": _source_commit(),
        "versions": {
            "python": platform.python_version(),
            "tvm": tvm.__version__,
            "onnxruntime": onnxruntime.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "tsm_deploy": __version__,
        },
    }


def measured_machine(load_start: float | None) -> tuple[dict[str, Any], list[str]]:
    """:func:`machine_info` with the load average at the start (given) and now, and the notes it calls
    for (a machine busy when the benchmark started makes absolute figures noisy)."""
    machine = machine_info()
    machine["load_average_start"] = load_start
    machine["load_average_end"] = _load_average()
    notes = []
    if (load_start or 0) > 0.5 * (os.cpu_count() or 1):
        notes.append(f"the machine was busy when the benchmark started (load average {load_start:.2f} "
                     f"on {os.cpu_count()} cores): absolute figures are noisy")
    return machine, notes
