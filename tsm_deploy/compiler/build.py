"""The build: TVM's compile under the project's pass context, and the module linked for the target.

Compile and the tuner's builder both build under :func:`build_context`, so a record is measured as it
is compiled.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import tvm

from ..errors import TsmDeployError
from ..runtime.errors import WriteFailed, describe_os_error
from ..target.targets import DeployTarget

# Loop partitioning of constant loops: a merged kernel's channel loop is split at the shifted channels
# (the condition marked ``likely``), so each part reads the state or the activation without a test per
# element.
BUILD_CONFIG = {"s_tir.LoopPartition": {"partition_const_loop": True}}


def build_context() -> tvm.transform.PassContext:
    """The pass context every build of the project runs under (same optimisation level as TVM's default)."""
    return tvm.transform.PassContext(opt_level=tvm.transform.PassContext.current().opt_level, config=BUILD_CONFIG)


def build_executable(mod: tvm.IRModule, target: tvm.target.Target) -> Any:
    """``tvm.compile`` of a scheduled module under :func:`build_context`."""
    with build_context():
        return tvm.compile(mod, target)


def export_module(executable: Any, path: Path, target: DeployTarget) -> None:
    """Link the compiled executable as a shared library for the target (cross-linked when needed).

    A link that fails (a full disk, a read-only directory: the linker's own error, or an OSError
    writing its objects) raises one line: :class:`~tsm_deploy.runtime.errors.WriteFailed` naming the
    reason the linker printed, e.g. ``No space left on device``."""
    try:
        if target.cross_compiler:
            from tvm.support import cc

            executable.export_library(str(path), fcompile=cc.cross_compiler(target.cross_compiler))
        else:
            executable.export_library(str(path))
    except OSError as exc:
        raise WriteFailed(f"cannot write the module {path}: {describe_os_error(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - TVM raises RuntimeError/TVMError with the linker's output
        text = str(exc)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        known = r"No space left on device|Read-only file system|Permission denied|Disk quota exceeded|File too large"
        reason = next((m.group(0) for line in lines if (m := re.search(known, line))), None)
        if reason is not None:
            raise WriteFailed(f"cannot write the module {path}: {reason}") from None
        telling = next((line for line in lines if re.search(r"\berror\b", line) and "exit status" not in line), None)
        shown = telling or (lines[-1] if lines else type(exc).__name__)
        raise TsmDeployError(f"linking the module {path} failed: {shown[:300]}") from None
