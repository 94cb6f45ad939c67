"""nn.Module -> ONNX, with named inputs/outputs, ``onnx.checker`` and an ONNX Runtime cross-check.

The legacy TorchScript exporter is used on purpose: it writes the shift's slices and concatenations
as plain Slice/Concat with static shapes, which TVM's ONNX frontend turns into strided_slice and
concatenate (the torch.export-based exporter is not needed for a static CNN).
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from .atomic import atomic_write_bytes
from .errors import CheckFailed

log = logging.getLogger(__name__)

OPSET = 17
ORT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ExportResult:
    model: onnx.ModelProto
    input_shapes: dict[str, tuple[int, ...]]
    output_names: list[str]
    ort_max_abs_error: float | None  # ONNX Runtime vs PyTorch on random inputs, None if not checked
    input_dtypes: dict[str, str] = field(default_factory=dict)


def input_dtypes(model: nn.Module) -> dict[str, str]:
    """float32 everywhere unless the model says otherwise (a uint8 camera frame, say)."""
    declared = model.input_dtypes() if hasattr(model, "input_dtypes") else {}
    return {name: declared.get(name, "float32") for name in model.input_shapes()}


def example_inputs(model: nn.Module, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs; buffers non-zero (zeros would hide a buffer wired to the wrong input), and a
    clip's frames all different (a shift traced into constants would then show)."""
    rng = np.random.default_rng(seed)
    dtypes = input_dtypes(model)
    inputs = {}
    for name, shape in model.input_shapes().items():
        if dtypes[name] == "uint8":
            inputs[name] = rng.integers(0, 256, shape, dtype=np.uint8)
        else:
            inputs[name] = rng.standard_normal(shape).astype(dtypes[name])
    return inputs


def _as_tuple(outputs: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return outputs if isinstance(outputs, tuple) else (outputs,)


def to_onnx(model: nn.Module) -> onnx.ModelProto:
    model = model.eval()
    names = list(model.input_shapes())
    args = tuple(torch.from_numpy(a) for a in example_inputs(model).values())
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "legacy exporter": chosen on purpose, see above
        torch.onnx.export(
            model,
            args,
            buffer,
            input_names=names,
            output_names=model.output_names(),
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    return proto


def onnxruntime_max_abs_error(model: nn.Module, proto: onnx.ModelProto, seed: int = 1) -> float:
    import onnxruntime as ort

    feeds = example_inputs(model, seed)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, feeds)
    with torch.no_grad():
        want = _as_tuple(model(*(torch.from_numpy(a) for a in feeds.values())))
    return max(float(np.max(np.abs(g - w.numpy()))) for g, w in zip(got, want))


def export_onnx(model: nn.Module, output: Path | None = None, check_ort: bool = True) -> ExportResult:
    """Export a model of the registry (stream or clip); optionally write it (atomically) and
    cross-check it in ONNX Runtime."""
    proto = to_onnx(model)
    error = None
    if check_ort:
        error = onnxruntime_max_abs_error(model, proto)
        log.info("ONNX Runtime vs PyTorch: max abs error %.3g", error)
        if error > ORT_TOLERANCE:
            raise CheckFailed(f"ONNX Runtime disagrees with PyTorch: max abs error {error:.3g} > {ORT_TOLERANCE}")
    if output is not None:
        atomic_write_bytes(Path(output), proto.SerializeToString())
        log.info("wrote %s", output)
    return ExportResult(proto, model.input_shapes(), model.output_names(), error, input_dtypes(model))
