"""An int8 artifact beside fp32, side by side in one process.

Runners, each one streaming step per sample (as :func:`tsm_deploy.evaluate.bench.benchmark`):

* ``tvm_int8``: the int8 artifact;
* ``tvm_fp32``: the same checkpoint compiled in fp32 for the same target with the same record
  libraries (its twin, built here);
* ``onnxruntime_int8``: the fp32 export quantized by ONNX Runtime's own static quantizer (QDQ format,
  per-channel int8 weights, uint8 activations, percentile calibration on the frames the artifact was
  calibrated on when they are the model's own task, else the same seeded frames): ORT fuses the Q/DQ
  pairs into its integer kernels, the int8 route an ORT user takes;
* ``onnxruntime_fp32``: the fp32 export, all graph optimisations.

All use the same thread count; rounds rotate the order (:mod:`.measure`). Reported: medians and
spreads, the ratios ``tvm_int8 / tvm_fp32`` and ``tvm_int8 / onnxruntime_int8``, each artifact's
tuning coverage, and the top-1 agreement of each int8 runner with PyTorch fp32 over the timed frames.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ...checkpoint import LoadedCheckpoint
from ...errors import TsmDeployError
from ...runtime.manifest import read_manifest
from ..inputs import reference_preparation, seeded_inputs
from ..runners.local import ArtifactRunner, OnnxRuntimeRunner, TorchRunner
from .machine import _load_average, measured_machine
from .measure import measure
from .report import RunnerStats, _coverage_text, plot_medians

log = logging.getLogger(__name__)

INT8_RUNNERS = ("tvm_int8", "tvm_fp32", "onnxruntime_int8", "onnxruntime_fp32")
_ORT_CALIBRATION_FRAMES = 64


def ort_static_int8(model: Any, proto: Any, frames: np.ndarray) -> Any:
    """``proto`` (the fp32 stream export of ``model``) quantized by ONNX Runtime's static quantizer,
    calibrated by streaming ``frames`` (prepared, ``(N, 1, 3, S, S)``) with the fp32 state fed back."""
    import onnx
    import torch
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    names = list(model.input_shapes())
    feeds, buffers = [], model.zero_buffers()
    with torch.no_grad():
        for frame in frames:
            feeds.append({n: np.ascontiguousarray(t, dtype=np.float32) for n, t in
                          zip(names, [frame, *(b.numpy() for b in buffers)])})
            _, *buffers = model(torch.from_numpy(np.ascontiguousarray(frame)), *buffers)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    with tempfile.TemporaryDirectory(prefix="tsm-ort-int8-") as tmp:
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(proto, str(source))
        quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.Percentile,
                        extra_options={"CalibPercentile": 99.99})
        return onnx.load(str(target))


@dataclass
class Int8BenchReport:
    artifact: str
    target: str
    model: dict[str, Any]
    runners: dict[str, RunnerStats]
    ratios: dict[str, float]
    top1_agreement_fp32: dict[str, float]  # int8 runner -> agreement with PyTorch fp32 over the timed frames
    tuning: dict[str, Any]  # {"int8": coverage, "fp32": coverage}
    machine: dict[str, Any]
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        data = asdict(self)
        data["runners"] = {name: stats.to_dict() for name, stats in self.runners.items()}
        return json.dumps(data, indent=2) + "\n"

    def table(self) -> str:
        lines = [f"{'runner':<18} {'median ms':>10} {'p10 ms':>8} {'p90 ms':>8} {'fps':>8} {'top-1 = fp32':>13}"]
        for name in INT8_RUNNERS:
            s = self.runners[name]
            agree = self.top1_agreement_fp32.get(name)
            lines.append(f"{name:<18} {s.median_ms:>10.3f} {s.p10_ms:>8.3f} {s.p90_ms:>8.3f} {s.fps:>8.1f} "
                         f"{'' if agree is None else f'{agree:.1%}':>13}")
        lines.append(", ".join(f"{k} {v:.2f}x" for k, v in self.ratios.items()))
        for precision, cov in self.tuning.items():
            lines.append(f"tvm_{precision} records: {_coverage_text(cov)}")
        m, st = self.machine, self.settings
        lines.append(f"ms per frame (prepared float tensors); {self.target} on {m.get('cpu')} ({m.get('logical_cores')} "
                     f"cores), {st['threads']} threads; {st['frames']} frames per runner after {st['warmup']} warm-up; "
                     f"load average {m.get('load_average_start') or 0:.2f} -> {m.get('load_average_end') or 0:.2f}")
        return "\n".join(lines)

    def plot(self, path: Path) -> None:
        plot_medians(Path(path), INT8_RUNNERS, [(None, self.runners, "#3b6ea8")],
                     f"int8 vs fp32, {self.model.get('arch')} {self.model.get('input_size')}px on {self.target}: "
                     f"{self.machine.get('cpu', '')}, {self.settings['threads']} threads", value_format=".2f")


def benchmark_int8(artifact_dir: Path, checkpoint: LoadedCheckpoint, frames: int, warmup: int, threads: int,
                   round_size: int, seed: int = 0, progress: Callable[[int, int], None] = lambda d, t: None,
                   stage: Callable[[str], None] = lambda message: None) -> Int8BenchReport:
    """Time the int8 artifact, its fp32 twin, ONNX Runtime int8 and fp32 side by side (module docstring)."""
    from ...compiler.artifact import compile_artifact
    from ...frontend.export import export_onnx
    from ...quantize import calibration_frames
    from . import DEFAULT_SETTLE, DISTINCT_FRAMES, _Runners, _set_threads, _target_from_manifest

    artifact_dir = Path(artifact_dir)
    manifest = read_manifest(artifact_dir)
    if manifest.quantization is None:
        raise TsmDeployError(f"{artifact_dir} is an fp32 artifact: the int8 benchmark needs an int8 one")
    load_start = _load_average()
    prepared = seeded_inputs(manifest, min(frames + warmup, DISTINCT_FRAMES), seed)
    prepare = reference_preparation(manifest)
    model = checkpoint.model()
    runners = _Runners()
    recorded = manifest.tuning or {}
    libraries = [d for d in (recorded.get("libraries") or []) if Path(d).is_dir()]
    with tempfile.TemporaryDirectory(prefix="tsm-bench-int8-") as tmp:
        stage("compiling the fp32 twin (same target and record libraries)")
        twin = compile_artifact(checkpoint, _target_from_manifest(manifest), Path(tmp) / "fp32", database=libraries)
        stage("exporting for ONNX Runtime and quantizing with its static quantizer")
        proto = export_onnx(model, check_ort=False).model
        calibration = calibration_frames(checkpoint, None, _ORT_CALIBRATION_FRAMES)
        proto_int8 = ort_static_int8(model, proto, calibration.frames)
        runners.add(lambda: ArtifactRunner(artifact_dir, "tvm_int8"), "tvm_int8")
        runners.add(lambda: ArtifactRunner(Path(tmp) / "fp32", "tvm_fp32"), "tvm_fp32")
        runners.add(lambda: OnnxRuntimeRunner(model, proto_int8, threads, "onnxruntime_int8", prepare=prepare),
                    "onnxruntime_int8")
        runners.add(lambda: OnnxRuntimeRunner(model, proto, threads, "onnxruntime_fp32", prepare=prepare),
                    "onnxruntime_fp32")
        _set_threads(threads)
        by_name = runners.by_name
        agreement = _top1_agreement(by_name, TorchRunner(model, "pytorch", prepare=prepare), prepared)
        stage(f"timing {frames} frames x {len(INT8_RUNNERS)} runners side by side")
        stats, _ = measure([[by_name[n]] for n in INT8_RUNNERS], runners.setup_rss, prepared, frames, warmup,
                           round_size, runners.peak, progress, settle=DEFAULT_SETTLE)
        runners.clear()
    machine, load_notes = measured_machine(load_start)
    ratios = {
        "tvm_int8 / tvm_fp32": stats["tvm_int8"].median_ms / stats["tvm_fp32"].median_ms,
        "tvm_int8 / onnxruntime_int8": stats["tvm_int8"].median_ms / stats["onnxruntime_int8"].median_ms,
        "tvm_int8 / onnxruntime_fp32": stats["tvm_int8"].median_ms / stats["onnxruntime_fp32"].median_ms,
    }
    notes = [f"onnxruntime_int8: onnxruntime.quantization.quantize_static, QDQ, per-channel int8 weights, uint8 "
             f"activations, percentile 99.99 on {calibration.source}", *load_notes]
    return Int8BenchReport(
        artifact=str(artifact_dir), target=manifest.target.name,
        model={k: v for k, v in manifest.model.items() if k != "source"},
        runners={n: stats[n] for n in INT8_RUNNERS}, ratios=ratios, top1_agreement_fp32=agreement,
        tuning={"int8": manifest.tuning, "fp32": twin.coverage.to_dict()}, machine=machine,
        settings={"frames": frames, "warmup": warmup, "threads": threads, "round_size": round_size, "seed": seed,
                  "distinct_frames": len(prepared), "checkpoint": checkpoint.source,
                  "quantization": {k: v for k, v in manifest.quantization.items() if k != "activations"}},
        notes=notes,
    )


def _top1_agreement(by_name: dict[str, Any], reference: Any, prepared: np.ndarray) -> dict[str, float]:
    """Each runner's per-frame top-1 against PyTorch fp32 over one stream of the prepared frames."""
    want = [int(np.argmax(step.logits)) for step in reference.run(prepared)]
    result = {}
    for name in ("tvm_int8", "onnxruntime_int8", "tvm_fp32"):
        got = [int(np.argmax(step.logits)) for step in by_name[name].run(prepared)]
        result[name] = sum(a == b for a, b in zip(want, got)) / len(want)
    return result
