"""Numeric parity: stream the same frames through PyTorch and a compiled artifact, compare every step.

Frames are seeded uint8 camera-sized images, prepared once with the runtime's own preprocessing, and
fed to both sides; each side feeds its own shift buffers back, so an error in the buffers shows up in
later frames' logits. Reported per frame: max abs and relative error of the logits and of every
buffer, and whether the top-1 class agrees.

Where the artifact runs is a :class:`StreamRunner`: on this host (here), under QEMU or over RPC.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch

from .atomic import atomic_write_text
from .checkpoint import LoadedCheckpoint
from .errors import TsmDeployError
from .runtime.manifest import Manifest, check_runs_here, read_manifest
from .runtime.preprocess import prepare_frame

log = logging.getLogger(__name__)

DEFAULT_FRAMES = 32
DEFAULT_TOLERANCE = 1e-4
CAMERA_SHAPE = (240, 320, 3)  # the original demo's capture size


class StreamRunner(Protocol):
    """Runs prepared frames through an artifact in order, from zero buffers.

    Returns per frame ``(logits, [buffers...])`` as numpy arrays."""

    name: str

    def run(self, frames: np.ndarray) -> list[tuple[np.ndarray, list[np.ndarray]]]: ...


class HostRunner:
    """The artifact loaded on this machine with the thin runtime."""

    name = "host"

    def __init__(self, artifact_dir: Path) -> None:
        from .runtime.stream import StreamingModel

        check_runs_here(read_manifest(artifact_dir), artifact_dir, "verify it with --emulate (aarch64) or --rpc HOST:PORT on the device")
        self.model = StreamingModel(artifact_dir)

    def run(self, frames: np.ndarray) -> list[tuple[np.ndarray, list[np.ndarray]]]:
        self.model.reset()
        return [(self.model.run_prepared(frame), self.model.buffers()) for frame in frames]


@dataclass(frozen=True)
class FrameParity:
    frame: int
    logits_max_abs: float
    logits_max_rel: float
    buffers_max_abs: float
    top1_reference: int
    top1_artifact: int


@dataclass
class VerifyReport:
    artifact: str
    target: str
    runner: str
    checkpoint: str
    frames: int
    seed: int
    tolerance: float
    max_abs_error: float  # logits, over all frames
    max_rel_error: float  # logits, max |diff| / max |reference| per frame, over all frames
    buffers_max_abs_error: float
    top1_agreement: float  # fraction of frames, 0..1
    passed: bool
    per_frame: list[FrameParity] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    def table(self) -> str:
        lines = [
            f"{'frame':>5} {'logits max abs':>15} {'logits max rel':>15} {'buffers max abs':>16} {'top1 torch':>10} {'top1 tvm':>9}"
        ]
        for p in self.per_frame:
            mark = "" if p.top1_reference == p.top1_artifact else "  <- differs"
            lines.append(
                f"{p.frame:>5} {p.logits_max_abs:>15.3e} {p.logits_max_rel:>15.3e} {p.buffers_max_abs:>16.3e}"
                f" {p.top1_reference:>10} {p.top1_artifact:>9}{mark}"
            )
        verdict = "PASS" if self.passed else "FAIL"
        lines.append(
            f"{verdict}: {self.frames} frames on {self.runner} ({self.target}): logits max abs {self.max_abs_error:.3e} "
            f"(tolerance {self.tolerance:g}), max rel {self.max_rel_error:.3e}, buffers max abs "
            f"{self.buffers_max_abs_error:.3e}, top-1 agreement {self.top1_agreement:.1%}"
        )
        return "\n".join(lines)


def seeded_frames(manifest: Manifest, count: int, seed: int) -> np.ndarray:
    """``count`` prepared frames ``(count, 1, 3, S, S)`` from seeded uint8 camera-sized images."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(count, *CAMERA_SHAPE), dtype=np.uint8)
    return np.stack([prepare_frame(image, manifest.preprocess) for image in images])


def reference_outputs(checkpoint: LoadedCheckpoint, frames: np.ndarray) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    model = checkpoint.model()
    buffers = model.zero_buffers()
    results = []
    with torch.no_grad():
        for frame in frames:
            logits, *buffers = model(torch.from_numpy(frame), *buffers)
            results.append((logits.numpy().reshape(-1), [b.numpy() for b in buffers]))
    return results


def check_checkpoint_matches(manifest: Manifest, checkpoint: LoadedCheckpoint) -> None:
    """The reference must be the model the artifact was compiled from: same architecture and shapes."""
    compiled = {k: v for k, v in manifest.model.items() if k not in ("checkpoint_sha256", "source")}
    given = checkpoint.config.to_dict()
    for key, value in compiled.items():
        if given.get(key) != value:
            raise TsmDeployError(
                f"checkpoint does not match the artifact: {key}={given.get(key)!r} in the checkpoint, "
                f"{value!r} in the artifact"
            )
    if manifest.model.get("checkpoint_sha256") != checkpoint.sha256:
        log.warning("checkpoint %s is not the one the artifact was compiled from (sha256 differs)", checkpoint.source)


def _relative(diff: float, reference: np.ndarray) -> float:
    scale = float(np.max(np.abs(reference)))
    return diff / scale if scale > 0 else diff


def verify_artifact(
    artifact_dir: Path,
    checkpoint: LoadedCheckpoint,
    frames: int = DEFAULT_FRAMES,
    seed: int = 0,
    tolerance: float = DEFAULT_TOLERANCE,
    runner: StreamRunner | None = None,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> VerifyReport:
    """Compare PyTorch and the artifact over ``frames`` streamed frames. Never raises on a mismatch:
    the report says ``passed``; the caller decides the exit code."""
    if frames < 1:
        raise TsmDeployError(f"--frames must be >= 1, got {frames}")
    artifact_dir = Path(artifact_dir)
    manifest = read_manifest(artifact_dir)
    check_checkpoint_matches(manifest, checkpoint)
    runner = runner or HostRunner(artifact_dir)
    prepared = seeded_frames(manifest, frames, seed)
    log.info("running %d frames through PyTorch", frames)
    want = reference_outputs(checkpoint, prepared)
    progress(0, frames)
    log.info("running %d frames through the artifact (%s)", frames, runner.name)
    got = runner.run(prepared)
    if len(got) != frames:
        raise TsmDeployError(f"runner {runner.name} returned {len(got)} frames, expected {frames}")
    per_frame = []
    for i, ((ref_logits, ref_buffers), (art_logits, art_buffers)) in enumerate(zip(want, got)):
        diff = float(np.max(np.abs(ref_logits - art_logits)))
        buffer_diff = max((float(np.max(np.abs(a - b))) for a, b in zip(ref_buffers, art_buffers)), default=0.0)
        per_frame.append(
            FrameParity(
                frame=i,
                logits_max_abs=diff,
                logits_max_rel=_relative(diff, ref_logits),
                buffers_max_abs=buffer_diff,
                top1_reference=int(np.argmax(ref_logits)),
                top1_artifact=int(np.argmax(art_logits)),
            )
        )
        progress(i + 1, frames)
    max_abs = max(p.logits_max_abs for p in per_frame)
    buffers_max = max(p.buffers_max_abs for p in per_frame)
    agreement = sum(p.top1_reference == p.top1_artifact for p in per_frame) / frames
    finite = all(np.isfinite(p.logits_max_abs) and np.isfinite(p.buffers_max_abs) for p in per_frame)
    return VerifyReport(
        artifact=str(artifact_dir),
        target=manifest.target["name"],
        runner=runner.name,
        checkpoint=checkpoint.source,
        frames=frames,
        seed=seed,
        tolerance=tolerance,
        max_abs_error=max_abs,
        max_rel_error=max(p.logits_max_rel for p in per_frame),
        buffers_max_abs_error=buffers_max,
        top1_agreement=agreement,
        passed=finite and max_abs <= tolerance and buffers_max <= tolerance and agreement == 1.0,
        per_frame=per_frame,
    )


def write_report(report: VerifyReport, path: Path) -> None:
    atomic_write_text(Path(path), report.to_json())
