"""Post-training int8 calibration of a stream model, and the fake-quantized PyTorch model it defines.

What is quantized, and how (the form integer kernels consume):

- **weights** of every convolution and linear layer: int8, symmetric, one scale per output channel
  (``max |w| / 127``). Per-channel scales commute with the BatchNorm folded into the convolution at
  compile time, so quantizing before or after folding gives the same integers.
- **activations** at every tensor that crosses a kernel boundary: the input of every convolution and
  linear layer, and the output of every block (which the next block's residual path reads as well):
  uint8, affine, one scale and zero point per tensor, ``0.0`` exactly representable (its zero point is
  an integer), so ReLU6 outputs use all 256 levels and the zero fill of the first frame stays zero.
- **percentile calibration**: a tensor's range is the ``percentile`` / ``100 - percentile`` quantiles of
  the values seen over the calibration stream (default 99.99), not its min and max: one outlier frame
  would otherwise stretch the scale of every frame. On the default model's 660 held-out clips
  (2026-12-04, calibrated on 16 clips of the task): top-1 99.2 % in int8 as in fp32, 98.4 % of the
  per-frame arg-maxes unchanged. With quantization at convolution inputs only, max, 99.999 and 99.99
  gave the same top-1; 99.9 clipped enough to change 3 % of the per-frame arg-maxes.

The fake-quantized model exports with QuantizeLinear / DequantizeLinear at its quantization points;
:func:`tsm_deploy.compiler.pipeline.prepare_module` given the spec compiles its convolutions as
uint8 x int8 -> int32 kernels (:mod:`tsm_deploy.compiler.passes.int8_conv`).

Shift-aware by construction: the state a shifted block caches is a slice of the block's input, which
is the previous block's (quantized) output, so the state carries that tensor's scale and zero point,
and the shift moves integers without requantizing. A calibration stream whose cached slices are all
zero (a single frame) is not an error: the range is the whole tensor's.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import TsmDeployError

__all__ = ["DEFAULT_PERCENTILE", "INT8_RTOL", "ActivationQuant", "QuantSpec", "calibrate", "fake_quantize", "quantize_weight",
           "state_grids"]

log = logging.getLogger(__name__)

DEFAULT_PERCENTILE = 99.99
# How far an int8 network's outputs may be from its fake-quantized PyTorch twin's, relative to the
# largest magnitude of the output. The two round the same values computed in other orders (PyTorch
# sums products of dequantized fp32 values, the integer kernel sums integers exactly), so a value within
# an fp32 rounding of a half step lands one step apart, and that step travels on through every later
# layer and, in the state, to later frames. Measured (2026-12-07): the trained default model, 32 seeded
# frames, 8.5 % at worst (median frame 2.9 %), state within 3 steps; ONNX Runtime running the same
# export unoptimized is off by up to 0.4 % on frames where it rounds differently (it divides by the
# scale where PyTorch multiplies by its inverse).
INT8_RTOL = 0.15
# Values kept per tensor for the quantiles: every frame's strided sample until this many are held
# (about 64 frames' worth), so memory does not grow with the stream.
_SAMPLES_PER_TENSOR = 1 << 20
_FRAMES_SAMPLED = 64


@dataclass(frozen=True)
class ActivationQuant:
    """uint8 affine quantization of one tensor: ``real = scale * (q - zero_point)``, ``q`` in [0, 255]."""

    scale: float
    zero_point: int

    @classmethod
    def from_range(cls, lo: float, hi: float) -> "ActivationQuant":
        lo, hi = min(lo, 0.0), max(hi, 0.0)  # 0.0 must be representable: the shift's zero fill, padding
        if hi - lo <= 0.0:  # a tensor that was zero throughout calibration
            return cls(scale=1.0 / 255, zero_point=0)
        scale = (hi - lo) / 255
        return cls(scale=float(scale), zero_point=int(np.clip(round(-lo / scale), 0, 255)))

    def fake(self, x: torch.Tensor) -> torch.Tensor:
        # PyTorch's own op: it exports as a QuantizeLinear / DequantizeLinear pair, which the compiler
        # turns into integer kernels (tsm_deploy.compiler.passes.int8_conv)
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, 0, 255)


@dataclass(frozen=True)
class QuantSpec:
    """The calibration's result: per quantization point (a module name and ``in`` / ``out``) its
    activation quantization; the weights' scales follow from the weights themselves."""

    method: str
    frames: int
    activations: dict[str, ActivationQuant] = field(default_factory=dict)
    source: str = ""  # what the calibration frames were (a file, a folder, the model's task)

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "frames": self.frames, "source": self.source,
                "weights": "int8 symmetric per output channel",
                "activations": {k: {"scale": v.scale, "zero_point": v.zero_point} for k, v in self.activations.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "QuantSpec":
        """The spec an int8 artifact's manifest records (:meth:`to_json`)."""
        try:
            return cls(method=str(data["method"]), frames=int(data["frames"]), activations={
                str(k): ActivationQuant(scale=float(v["scale"]), zero_point=int(v["zero_point"]))
                for k, v in data["activations"].items()}, source=str(data.get("source", "")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TsmDeployError(f"malformed quantization section ({type(exc).__name__}: {exc})") from None


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(int8 values, per-output-channel scales)`` with ``weight ~= values * scales``."""
    flat = weight.detach().reshape(weight.shape[0], -1)
    scales = (flat.abs().amax(1) / 127).clamp_min(torch.finfo(torch.float32).tiny)
    values = torch.clamp(torch.round(flat / scales[:, None]), -127, 127).reshape(weight.shape)
    return values.to(torch.int8), scales


def _points(model: nn.Module) -> list[tuple[str, nn.Module, str, str]]:
    """``(name, module, "in" | "out", key)``: every convolution's and linear layer's input, every
    block's output. ``key`` names the parameters the point uses: a block's first convolution reads the
    block's input (shifted or not), the previous block's output, and so shares its key: the shift and
    the state then move integers of one grid."""
    blocks = getattr(model, "features", None)
    n_blocks = len(blocks) if isinstance(blocks, nn.ModuleList) else 0
    points = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            parts = name.split(".")
            reads_block_input = (len(parts) == 4 and parts[0] == "features" and parts[2:] == ["conv", "0"]
                                 and 1 <= int(parts[1]) < n_blocks)
            points.append((name, m, "in", f"features.{int(parts[1]) - 1}:out" if reads_block_input else f"{name}:in"))
    points += [(f"features.{i}", blocks[i], "out", f"features.{i}:out") for i in range(n_blocks)]
    return points


def _main_tensor(value: Any) -> torch.Tensor:
    """A block's activation output (a shifted block also returns its next state, a slice of its input)."""
    return value[0] if isinstance(value, tuple) else value


def calibrate(model: nn.Module, frames: Iterable[np.ndarray], percentile: float = DEFAULT_PERCENTILE) -> QuantSpec:
    """Stream prepared frames ``(1, 3, S, S)`` through the stream `model` (state fed back) and take each
    quantization point's range from the values seen. Raises TsmDeployError without frames."""
    if not 50.0 < percentile <= 100.0:
        raise TsmDeployError(f"calibration percentile must be in (50, 100], got {percentile}")
    model = model.eval()
    seen: dict[str, list[torch.Tensor]] = {}
    held: dict[str, int] = {}
    strides: dict[str, int] = {}

    def keep(key: str, x: torch.Tensor) -> None:
        if held.get(key, 0) >= _SAMPLES_PER_TENSOR:
            return
        flat = x.detach().reshape(-1)
        stride = strides.setdefault(key, max(1, flat.numel() // (_SAMPLES_PER_TENSOR // _FRAMES_SAMPLED)))
        sample = flat[::stride].clone()
        seen.setdefault(key, []).append(sample)
        held[key] = held.get(key, 0) + sample.numel()

    hooks = []
    for name, module, where, key in _points(model):
        if key != f"{name}:{where}":
            continue  # calibrated where its tensor is made
        if where == "in":
            hooks.append(module.register_forward_pre_hook(lambda m, args, key=key: keep(key, args[0])))
        else:
            hooks.append(module.register_forward_hook(lambda m, args, out, key=key: keep(key, _main_tensor(out))))
    count = 0
    try:
        buffers = model.zero_buffers()
        with torch.no_grad():
            for frame in frames:
                _, *buffers = model(torch.as_tensor(np.asarray(frame, dtype=np.float32)), *buffers)
                count += 1
    finally:
        for hook in hooks:
            hook.remove()
    if not count:
        raise TsmDeployError("calibration: no frames")
    activations = {}
    q = percentile / 100
    for key, chunks in seen.items():
        values = torch.cat(chunks)[:_SAMPLES_PER_TENSOR]
        lo, hi = (float(values.min()), float(values.max())) if q >= 1.0 else \
            tuple(float(v) for v in np.quantile(values.numpy(), [1 - q, q]))  # numpy's selection: 4x torch's sort
        activations[key] = ActivationQuant.from_range(lo, hi)
    log.info("calibrated %d quantization points on %d frames (percentile %s)", len(activations), count, percentile)
    return QuantSpec(method=f"percentile {percentile:g}", frames=count, activations=activations)


def fake_quantize(model: nn.Module, spec: QuantSpec | None, weights: bool = True,
                  activations: Callable[[str], bool] = lambda key: True) -> nn.Module:
    """A copy of `model` computing in fp32 what the int8 network computes: weights rounded to their
    int8 grid, every quantization point of `spec` rounded to its uint8 grid. ``weights=False`` keeps
    the weights fp32; ``activations(key)`` picks the quantization points rounded (all by default;
    ``spec`` None: none). Parts alone are for taking the quantization's error apart."""
    model = copy.deepcopy(model).eval()
    for _, module, where, key in _points(model):
        if weights and where == "in":
            values, scales = quantize_weight(module.weight)
            shape = (-1,) + (1,) * (module.weight.dim() - 1)
            module.weight.data = values.float() * scales.reshape(shape)
        if spec is None or not activations(key):
            continue
        if key not in spec.activations:
            raise TsmDeployError(f"quantization spec has no parameters for {key}: calibrated on another model?")
        act = spec.activations[key]
        if where == "in":
            module.register_forward_pre_hook(lambda m, args, act=act: (act.fake(args[0]), *args[1:]))
        else:
            module.register_forward_hook(
                lambda m, args, out, act=act: (act.fake(out[0]), *out[1:]) if isinstance(out, tuple) else act.fake(out))
    return model


def state_grids(model: nn.Module, spec: QuantSpec) -> list[ActivationQuant]:
    """The grid of each state buffer of the stream `model`, in its buffer order: a shifted block caches a
    slice of its input, the previous block's quantized output."""
    blocks = getattr(model, "features", None)
    if not isinstance(blocks, nn.ModuleList):
        raise TsmDeployError("int8: only stream models with a block list (features) are quantized")
    grids = []
    for i, block in enumerate(blocks):
        if hasattr(block, "fold_div"):  # a shifted block: its state is a slice of its input
            key = f"features.{i - 1}:out"
            if key not in spec.activations:
                raise TsmDeployError(f"quantization spec has no parameters for {key}: calibrated on another model?")
            grids.append(spec.activations[key])
    return grids
