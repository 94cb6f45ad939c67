"""nn.Module -> ONNX, with named inputs/outputs, ``onnx.checker`` and an ONNX Runtime cross-check.

The legacy TorchScript exporter is used on purpose: it writes the shift's slices and concatenations
as plain Slice/Concat with static shapes, which TVM's ONNX frontend turns into strided_slice and
concatenate (the torch.export-based exporter is not needed for a static CNN).
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from ..errors import CheckFailed
from ..quantize.calibrate import INT8_RTOL
from ..support.atomic import atomic_write_bytes

log = logging.getLogger(__name__)

OPSET = 17


@dataclass(frozen=True)
class OrtTolerance:
    """How far ONNX Runtime may be from PyTorch: for every output, max |ort - torch| <= atol + rtol *
    max |torch| (the largest magnitude of that output). Relative, so that a model whose logits are
    in the hundreds is judged as one whose logits are near 1: float32 rounding grows with the values,
    a real mismatch (a wrong weight, a misexported op) is orders of magnitude above ``rtol``."""

    atol: float = 1e-4
    rtol: float = 1e-4

    def limit(self, scale: float) -> float:
        return self.atol + self.rtol * scale

    def __str__(self) -> str:
        return f"atol {self.atol:g} + rtol {self.rtol:g} x max |reference|"


ORT_TOLERANCE = OrtTolerance()
_tolerance: contextvars.ContextVar[OrtTolerance] = contextvars.ContextVar("ort_tolerance", default=ORT_TOLERANCE)


@contextlib.contextmanager
def ort_tolerance(tolerance: OrtTolerance):
    """Every :func:`export_onnx` inside the block checks with ``tolerance`` (``compile --ort-tolerance``:
    the export sits deep inside the compile pipeline)."""
    token = _tolerance.set(tolerance)
    try:
        yield tolerance
    finally:
        _tolerance.reset(token)


@dataclass(frozen=True)
class OrtParity:
    """ONNX Runtime vs PyTorch on one set of inputs: the worst output's errors."""

    max_abs_error: float
    max_rel_error: float  # max abs error / max |reference| of the same output
    reference_scale: float  # max |reference| of that output
    passed: bool
    tolerance: OrtTolerance
    output: str = ""  # the output closest to (or furthest over) its limit
    per_output: tuple[tuple[str, float, float], ...] = ()  # (name, max abs error, max |reference|)

    def describe(self) -> str:
        return (f"max abs error {self.max_abs_error:.3g}, relative {self.max_rel_error:.3g} (of max |{self.output}| "
                f"{self.reference_scale:.3g}); allowed {self.tolerance.limit(self.reference_scale):.3g} "
                f"= {self.tolerance}")


@dataclass(frozen=True)
class ExportResult:
    model: onnx.ModelProto
    input_shapes: dict[str, tuple[int, ...]]
    output_names: list[str]
    ort_max_abs_error: float | None  # ONNX Runtime vs PyTorch on random frames, None if not checked
    input_dtypes: dict[str, str] = field(default_factory=dict)
    ort_parity: OrtParity | None = None


def input_dtypes(model: nn.Module) -> dict[str, str]:
    """float32 everywhere unless the model says otherwise (a uint8 camera frame, say)."""
    declared = model.input_dtypes() if hasattr(model, "input_dtypes") else {}
    return {name: declared.get(name, "float32") for name in model.input_shapes()}


def example_inputs(model: nn.Module, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs shaped like what the model gets: frames (the inputs that are not state) as
    prepared frames are, random RGB pixels /255 and ImageNet-normalised (about -2.1 .. 2.6), or raw
    uint8 pixels where the model takes them; state inputs non-zero noise (zeros would hide a buffer
    wired to the wrong input); a clip's frames all different (a shift traced into constants would
    then show)."""
    rng = np.random.default_rng(seed)
    dtypes = input_dtypes(model)
    state = {i for _, i in model.state_pairs()} if hasattr(model, "state_pairs") else set()
    inputs = {}
    for name, shape in model.input_shapes().items():
        if dtypes[name] == "uint8":
            inputs[name] = rng.integers(0, 256, shape, dtype=np.uint8)
        elif name not in state and len(shape) >= 3 and shape[-3] == 3:
            inputs[name] = prepared_like(rng, shape).astype(dtypes[name])
        else:
            inputs[name] = rng.standard_normal(shape).astype(dtypes[name])
    return inputs


def prepared_like(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Float frames ``(..., 3, H, W)`` as the runtime prepares them: uniform pixels, /255, ImageNet mean/std."""
    from ..models import IMAGENET_MEAN, IMAGENET_STD

    pixels = rng.integers(0, 256, shape).astype(np.float32) / 255.0
    mean = np.asarray(IMAGENET_MEAN, np.float32).reshape(3, 1, 1)
    std = np.asarray(IMAGENET_STD, np.float32).reshape(3, 1, 1)
    return (pixels - mean) / std


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


def onnxruntime_parity(model: nn.Module, proto: onnx.ModelProto, tolerance: OrtTolerance | None = None,
                       seed: int = 1) -> OrtParity:
    """Run :func:`example_inputs` through ONNX Runtime and PyTorch; judge every output by
    ``tolerance`` (:class:`OrtTolerance`: max abs error <= atol + rtol x max |reference|) and report
    the output that comes closest to its limit (or exceeds it most)."""
    import onnxruntime as ort

    tolerance = tolerance or _tolerance.get()
    feeds = example_inputs(model, seed)
    options = ort.SessionOptions()
    if any(node.op_type == "QuantizeLinear" for node in proto.graph.node):
        # a fake-quantized export: ONNX Runtime's optimizer would fuse the Q/DQ pairs into its own int8
        # kernels (another requantization rounding); unoptimized, it checks the exported graph itself,
        # within the steps another summation order moves a requantized value by (INT8_RTOL)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        tolerance = OrtTolerance(atol=tolerance.atol, rtol=max(tolerance.rtol, INT8_RTOL))
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    got = session.run(None, feeds)
    with torch.no_grad():
        want = _as_tuple(model(*(torch.from_numpy(a) for a in feeds.values())))
    names = list(model.output_names()) if hasattr(model, "output_names") else []
    per_output, worst = [], None
    for i, (g, w) in enumerate(zip(got, want)):
        reference = w.numpy()
        error = float(np.max(np.abs(g - reference))) if reference.size else 0.0
        scale = float(np.max(np.abs(reference))) if reference.size else 0.0
        if not (np.isfinite(error) and np.isfinite(scale)):
            error = scale = float("inf")
        name = names[i] if i < len(names) else f"output {i}"
        per_output.append((name, error, scale))
        limit = tolerance.limit(scale)
        ratio = error / limit if limit > 0 else (0.0 if error == 0 else float("inf"))
        if worst is None or ratio > worst[0] or ratio != ratio:
            worst = (ratio, error, scale, name)
    ratio, error, scale, name = worst or (0.0, 0.0, 0.0, "")
    return OrtParity(max_abs_error=error, max_rel_error=error / scale if scale > 0 else error, reference_scale=scale,
                     passed=ratio <= 1.0, tolerance=tolerance, output=name, per_output=tuple(per_output))


def onnxruntime_max_abs_error(model: nn.Module, proto: onnx.ModelProto, seed: int = 1) -> float:
    return onnxruntime_parity(model, proto, seed=seed).max_abs_error


def check_onnxruntime(model: nn.Module, proto: onnx.ModelProto, tolerance: OrtTolerance | None = None) -> OrtParity:
    """:func:`onnxruntime_parity`, raising :class:`CheckFailed` (one line, both errors and the rule) above it."""
    parity = onnxruntime_parity(model, proto, tolerance)
    log.info("ONNX Runtime vs PyTorch: %s", parity.describe())
    if not parity.passed:
        raise CheckFailed(f"ONNX Runtime disagrees with PyTorch: {parity.describe()} (compile --ort-tolerance "
                          "ATOL,RTOL sets the limit)")
    return parity


def export_onnx(model: nn.Module, output: Path | None = None, check_ort: bool = True,
                tolerance: OrtTolerance | None = None) -> ExportResult:
    """Export a model of the registry (stream or clip); optionally write it (atomically) and
    cross-check it in ONNX Runtime (:func:`check_onnxruntime`; ``tolerance`` default: the one
    :func:`ort_tolerance` set, else :data:`ORT_TOLERANCE`)."""
    proto = to_onnx(model)
    parity = check_onnxruntime(model, proto, tolerance) if check_ort else None
    if output is not None:
        atomic_write_bytes(Path(output), proto.SerializeToString())
        log.info("wrote %s", output)
    return ExportResult(proto, model.input_shapes(), model.output_names(),
                        parity.max_abs_error if parity else None, input_dtypes(model), parity)
