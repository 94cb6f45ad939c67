"""Numeric parity: run the same inputs through PyTorch and a compiled artifact, compare every step.

Inputs are seeded uint8 camera-sized images, prepared once with the runtime's own preprocessing, and
fed to both sides. Streams: each side feeds its own shift buffers back, so an error in a buffer shows
up in later frames' logits. Clips: T frames at once, every clip from a different seed. Reported per
step: max abs and relative error (max |diff| / max |reference logit|) of the logits, max abs error
of every buffer, and whether the top-1 agrees. A step passes when the logits' max abs error is within
``tolerance + rtol x max |reference logit|`` (``rtol`` 0 by default: the absolute rule), the buffers'
within ``tolerance``, the top-1 agrees, and both sides' outputs are finite: a NaN or infinity on
either side is a failure, counted in ``non_finite_steps``.

An int8 artifact is compared with the fake-quantized PyTorch model (the integers it runs, computed in
fp32), in quantization steps: the two sum in another order, so a requantized value that lies within
an fp32 rounding of a half step can land one step apart, and that step travels on through the network
and the state. Its buffers pass within :data:`INT8_STATE_STEPS` steps of their grid, its logits within
``tolerance + rtol x max |reference logit|`` (``rtol`` :data:`INT8_RTOL` unless given), and a top-1
that differs fails only where the reference's lead over its second class is beyond that tolerance (a
near tie is not a decision). The report adds the top-1 agreement with the fp32 model.

Where the artifact runs is a :class:`~tsm_deploy.evaluate.runners.Runner`: this host, QEMU or RPC;
the reference is the :class:`~tsm_deploy.evaluate.runners.local.TorchRunner` of the checkpoint.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..checkpoint import LoadedCheckpoint
from ..errors import TsmDeployError
from ..quantize.calibrate import INT8_RTOL
from ..runtime.manifest import Manifest, read_manifest
from ..support.atomic import atomic_write_text
from .inputs import reference_preparation, seeded_inputs
from .runners import Runner
from .runners.local import ArtifactRunner, TorchRunner

log = logging.getLogger(__name__)

DEFAULT_FRAMES = 32
DEFAULT_TOLERANCE = 1e-4
# int8 artifacts vs the fake-quantized model (module docstring). Measured on a seeded random
# MobileNetV2 (64x64, width 0.5) over 12 frames: state within 4 steps (logits: INT8_RTOL).
INT8_STATE_STEPS = 8
HOST_HINT = "verify it with --emulate (aarch64) or --rpc HOST:PORT on the device"


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
    per_frame: list[FrameParity] = field(default_factory=list)  # one per step (frame or clip)
    kind: str = "stream"
    rtol: float = 0.0  # logits may also be off by rtol x max |reference logit|
    non_finite_steps: int = 0  # steps where either side returned NaN or infinity (logits or buffers)
    precision: str = "fp32"
    buffers_max_steps: float | None = None  # int8: the buffers' max error in steps of their grid
    top1_agreement_fp32: float | None = None  # int8: top-1 agreement of the artifact with the fp32 model

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    def table(self) -> str:
        lines = [
            f"{'step':>5} {'logits max abs':>15} {'logits max rel':>15} {'buffers max abs':>16} {'top1 torch':>10} {'top1 tvm':>9}"
        ]
        for p in self.per_frame:
            mark = "" if p.top1_reference == p.top1_artifact else "  <- differs"
            lines.append(
                f"{p.frame:>5} {p.logits_max_abs:>15.3e} {p.logits_max_rel:>15.3e} {p.buffers_max_abs:>16.3e}"
                f" {p.top1_reference:>10} {p.top1_artifact:>9}{mark}"
            )
        verdict = "PASS" if self.passed else "FAIL"
        steps = "frames" if self.kind == "stream" else "clips"
        rule = f"tolerance {self.tolerance:g}" + (f" + {self.rtol:g} x max |logit|" if self.rtol else "")
        lines.append(
            f"{verdict}: {self.frames} {steps} on {self.runner} ({self.target}): logits max abs {self.max_abs_error:.3e} "
            f"({rule}), max rel {self.max_rel_error:.3e}, buffers max abs "
            f"{self.buffers_max_abs_error:.3e}, top-1 agreement {self.top1_agreement:.1%}"
            + (f"; {self.non_finite_steps} {steps} with NaN or infinite outputs" if self.non_finite_steps else "")
        )
        if self.precision == "int8":
            lines.append(
                f"int8: compared with the fake-quantized model; buffers within {self.buffers_max_steps:g} steps of "
                f"their grid (allowed {INT8_STATE_STEPS}); top-1 agreement with the fp32 model "
                f"{self.top1_agreement_fp32:.1%}")
        return "\n".join(lines)


def check_checkpoint_matches(manifest: Manifest, checkpoint: LoadedCheckpoint) -> None:
    """The reference must be the model the artifact was compiled from: same architecture and shapes."""
    compiled = manifest.model.config()
    given = checkpoint.config.to_dict()
    for key, value in compiled.items():
        if given.get(key) != value:
            raise TsmDeployError(
                f"checkpoint does not match the artifact: {key}={given.get(key)!r} in the checkpoint, "
                f"{value!r} in the artifact"
            )
    if manifest.model.checkpoint_sha256 != checkpoint.sha256:
        log.warning("checkpoint %s is not the one the artifact was compiled from (sha256 differs)", checkpoint.source)


def _references(manifest: Manifest, checkpoint: LoadedCheckpoint) -> tuple[Any, Any, list[float] | None]:
    """``(reference model, fp32 model, state grid steps)``: for an fp32 artifact the checkpoint's model,
    ``None``, ``None``; for an int8 one the model fake-quantized with the manifest's calibration (the
    integers it runs, in fp32), the model itself, and each state buffer's grid step."""
    model = checkpoint.model()
    if manifest.quantization is None:
        return model, None, None
    from ..quantize import QuantSpec, fake_quantize, state_grids

    spec = QuantSpec.from_json(manifest.quantization)
    return fake_quantize(model, spec), model, [g.scale for g in state_grids(model, spec)]


def _margin(logits: np.ndarray) -> float:
    """How far the top class leads the second."""
    flat = np.sort(np.asarray(logits, dtype=np.float64).reshape(-1))
    return float(flat[-1] - flat[-2]) if flat.size > 1 else float("inf")


def _scale(reference: np.ndarray) -> float:
    return float(np.max(np.abs(reference))) if reference.size else 0.0


def _relative(diff: float, reference: np.ndarray) -> float:
    scale = _scale(reference)
    return diff / scale if scale > 0 else diff


def _finite(*arrays: np.ndarray) -> bool:
    return all(bool(np.isfinite(a).all()) for a in arrays)


def verify_artifact(
    artifact_dir: Path,
    checkpoint: LoadedCheckpoint,
    frames: int = DEFAULT_FRAMES,
    seed: int = 0,
    tolerance: float = DEFAULT_TOLERANCE,
    runner: Runner | None = None,
    progress: Callable[[int, int], None] = lambda done, total: None,
    rtol: float = 0.0,
) -> VerifyReport:
    """Compare PyTorch and the artifact over ``frames`` steps (frames of a stream, or clips). Never
    raises on a mismatch: the report says ``passed``; the caller decides the exit code."""
    if frames < 1:
        raise TsmDeployError(f"--frames must be >= 1, got {frames}")
    artifact_dir = Path(artifact_dir)
    manifest = read_manifest(artifact_dir)
    check_checkpoint_matches(manifest, checkpoint)
    runner = runner or ArtifactRunner(artifact_dir, name="host", hint=HOST_HINT)
    inputs = seeded_inputs(manifest, frames, seed)
    reference, fp32_model, steps = _references(manifest, checkpoint)
    if steps is not None and not rtol:
        rtol = INT8_RTOL
    log.info("running %d steps through PyTorch", frames)
    want = TorchRunner(reference, prepare=reference_preparation(manifest)).run(inputs)
    fp32 = TorchRunner(fp32_model, prepare=reference_preparation(manifest)).run(inputs) if fp32_model is not None else None
    progress(0, frames)
    log.info("running %d steps through the artifact (%s)", frames, runner.name)
    got = runner.run(inputs)
    if len(got) != frames:
        raise TsmDeployError(f"runner {runner.name} returned {len(got)} steps, expected {frames}")
    per_frame = []
    non_finite, within, decisive_misses = 0, True, 0
    max_steps = 0.0
    for i, (ref, art) in enumerate(zip(want, got)):
        diff = float(np.max(np.abs(ref.logits - art.logits)))
        if len(ref.state) != len(art.state):
            raise TsmDeployError(f"runner {runner.name} returned {len(art.state)} buffers, expected {len(ref.state)}")
        buffer_diffs = [float(np.max(np.abs(a - b))) if a.size else 0.0 for a, b in zip(ref.state, art.state)]
        buffer_diff = max(buffer_diffs, default=0.0)
        if not _finite(ref.logits, art.logits, *ref.state, *art.state):
            non_finite += 1
            log.warning("step %d: %s returned NaN or infinity", i,
                        "the artifact" if _finite(ref.logits, *ref.state) else "PyTorch")
            diff = buffer_diff = float("nan")
        allowed = tolerance + rtol * _scale(ref.logits)
        within = within and diff <= allowed
        if steps is not None:
            max_steps = max([max_steps] + [d / s for d, s in zip(buffer_diffs, steps) if s > 0])
        top1_ref, top1_art = int(np.argmax(ref.logits)), int(np.argmax(art.logits))
        if top1_ref != top1_art and (steps is None or _margin(ref.logits) > allowed):
            decisive_misses += 1
        per_frame.append(
            FrameParity(
                frame=i,
                logits_max_abs=diff,
                logits_max_rel=_relative(diff, ref.logits),
                buffers_max_abs=buffer_diff,
                top1_reference=top1_ref,
                top1_artifact=top1_art,
            )
        )
        progress(i + 1, frames)
    max_abs = float("nan") if non_finite else max(p.logits_max_abs for p in per_frame)
    buffers_max = max(p.buffers_max_abs for p in per_frame)
    agreement = sum(p.top1_reference == p.top1_artifact for p in per_frame) / frames
    finite = all(np.isfinite(p.logits_max_abs) and np.isfinite(p.buffers_max_abs) for p in per_frame)
    buffers_within = buffers_max <= tolerance if steps is None else max_steps <= INT8_STATE_STEPS
    agreement_fp32 = None
    if fp32 is not None:
        agreement_fp32 = sum(int(np.argmax(f.logits)) == int(np.argmax(a.logits)) for f, a in zip(fp32, got)) / frames
    return VerifyReport(
        artifact=str(artifact_dir),
        target=manifest.target.name,
        runner=runner.name,
        checkpoint=checkpoint.source,
        frames=frames,
        seed=seed,
        tolerance=tolerance,
        max_abs_error=max_abs,
        max_rel_error=max(p.logits_max_rel for p in per_frame),
        buffers_max_abs_error=buffers_max,
        top1_agreement=agreement,
        passed=finite and non_finite == 0 and within and buffers_within and decisive_misses == 0,
        per_frame=per_frame,
        kind=manifest.kind,
        rtol=rtol,
        non_finite_steps=non_finite,
        precision=manifest.precision,
        buffers_max_steps=max_steps if steps is not None else None,
        top1_agreement_fp32=agreement_fp32,
    )


def write_report(report: VerifyReport, path: Path) -> None:
    atomic_write_text(Path(path), report.to_json())
