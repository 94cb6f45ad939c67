"""Run an aarch64 artifact on an emulated Raspberry Pi 4: the deploy bundle, unpacked into a Debian
arm64 user space, run by ``qemu-aarch64-static`` as a Cortex-A72 (``QEMU_CPU=cortex-a72``).

The guest runs exactly what a Pi runs: the bundle's thin runtime, runtime-only TVM and the
cross-built libtvm_runtime.so, under the rootfs's Python 3.11 + numpy. A module that uses
instructions the Cortex-A72 lacks (SVE, say) dies with SIGILL here as it would on the board.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from ...deploy.bundle import stage_bundle
from ...errors import CheckFailed, TsmDeployError
from ...runtime.manifest import read_manifest
from ...support.tools import require_tool
from ...target.arch import GUEST_PYTHON, QEMU_USER_STATIC_PACKAGE, emulated_cpu, require_emulatable
from . import StepOutput

log = logging.getLogger(__name__)

# Seconds per frame allowed under emulation (a MobileNetV2-size model takes ~3 s untuned), plus start-up.
FRAME_TIMEOUT_S, STARTUP_TIMEOUT_S = 60.0, 120.0


class EmulatedRunner:
    """The artifact on an emulated ARM CPU, the target's own core unless told (a
    :class:`~tsm_deploy.evaluate.runners.Runner`): the same inputs and report as on the host."""

    def __init__(self, artifact_dir: Path, qemu_cpu: str | None = None, progress: Callable[[str], None] = lambda m: None) -> None:
        from ...emulation.rootfs import build_arm64_rootfs

        self.artifact_dir = Path(artifact_dir)
        target = read_manifest(self.artifact_dir).target
        spec = require_emulatable(target, "--emulate")
        require_tool(spec.qemu, QEMU_USER_STATIC_PACKAGE)  # before minutes of preparation, not after
        self.qemu_cpu = qemu_cpu or emulated_cpu(target)
        self.name = f"qemu {self.qemu_cpu}"
        self.progress = progress
        progress("preparing the arm64 user space (cached after the first run)")
        self.rootfs = build_arm64_rootfs(progress=progress)

    def run(self, frames: np.ndarray) -> list[StepOutput]:
        from ...emulation.rootfs import run_under_qemu

        with tempfile.TemporaryDirectory(prefix="tsm-emulate-") as tmp:
            root = stage_bundle(self.artifact_dir, Path(tmp), self.progress)
            np.save(root / "frames.npy", frames)
            self.progress(f"streaming {len(frames)} frames on an emulated {self.qemu_cpu}")
            argv = [GUEST_PYTHON, "-m", "tsm_deploy.runtime", "artifact", "--inputs", "frames.npy", "--outputs", "out.npz"]
            env = {"PYTHONPATH": str(root / "python"), "QEMU_CPU": self.qemu_cpu}
            timeout = STARTUP_TIMEOUT_S + FRAME_TIMEOUT_S * len(frames)
            try:
                proc = run_under_qemu(self.rootfs, argv, env=env, timeout=timeout, cwd=root)
            except subprocess.TimeoutExpired:
                raise CheckFailed(f"the emulated run did not finish in {timeout:.0f} s") from None
            _raise_for_guest_failure(proc.returncode, proc.stderr, self.qemu_cpu)
            with np.load(root / "out.npz") as out:
                count = int(out["count"])
                n_buffers = len([k for k in out.files if k.startswith("buffer_0_")])
                return [
                    StepOutput(out[f"logits_{i}"], [out[f"buffer_{i}_{j}"] for j in range(n_buffers)]) for i in range(count)
                ]


def _raise_for_guest_failure(returncode: int, stderr: str, qemu_cpu: str) -> None:
    if returncode == 0:
        return
    if returncode == -signal.SIGILL:
        raise CheckFailed(
            f"the module died with SIGILL on an emulated {qemu_cpu}: it uses instructions this CPU lacks "
            "(check the target's mcpu/mattr)"
        )
    last = (stderr or "").strip().splitlines()[-1:] or [f"exit code {returncode}"]
    if returncode == 2 and last[0].startswith("error:"):
        raise TsmDeployError(f"on the emulated device: {last[0][len('error:'):].strip()}")
    raise CheckFailed(f"the emulated run failed (exit code {returncode}): {last[0]}")
