"""Frame preprocessing as a torch module, so it compiles into the artifact with the network.

The runtime's numpy :func:`tsm_deploy.runtime.preprocess.prepare_frame` resizes the whole frame and
then throws most of it away in the centre crop. For a frame size fixed at compile time, the
half-pixel bilinear resize restricted to the crop window is a constant table: per output row (and
column) two source indices and two weights. :class:`FramePreprocess` gathers the source rows, blends
them, gathers the source columns, blends them (ONNX Gather/Mul/Add, static shapes), and folds
``scale``, ``mean`` and ``std`` into one multiply-add. Only the pixels the crop keeps are computed.

Input: uint8 ``(H, W, 3)`` RGB -> float32 ``(1, 3, crop, crop)``; a clip ``(T, H, W, 3)`` ->
``(1, T, 3, crop, crop)``. It matches ``prepare_frame`` to float32 rounding (~1e-6).
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import TsmDeployError
from .wrapper import NetworkWrapper


@dataclass(frozen=True)
class AxisTaps:
    """Half-pixel bilinear taps of one axis, for the output positions the crop keeps."""

    low: np.ndarray  # int64 source index of the first tap
    high: np.ndarray  # int64 source index of the second tap
    weight: np.ndarray  # float32 weight of ``high`` (``low`` gets ``1 - weight``)

    @property
    def identity(self) -> bool:
        """True when the taps read a contiguous run of sources with weight 0 (no resize on this axis)."""
        return bool(np.all(self.weight == 0) and np.all(np.diff(self.low) == 1))


@dataclass(frozen=True)
class CropGeometry:
    height: int  # source frame
    width: int
    resized_height: int  # after resizing the short side to ``resize_short``
    resized_width: int
    top: int  # crop window in the resized image
    left: int
    crop: int


def parse_frame_size(text: str) -> tuple[int, int]:
    """``"640x480"`` (width x height, as cameras say it) -> ``(height, width)``."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or min(int(match.group(1)), int(match.group(2))) < 1:
        raise TsmDeployError(f"frame size {text!r}: expected WIDTHxHEIGHT with positive integers, e.g. 640x480")
    return int(match.group(2)), int(match.group(1))


def crop_geometry(height: int, width: int, preprocess: dict[str, Any]) -> CropGeometry:
    """The resize and crop ``prepare_frame`` applies to an ``height x width`` frame (same rounding)."""
    if height < 1 or width < 1:
        raise TsmDeployError(f"frame size {width}x{height}: both sides must be positive")
    crop, short = int(preprocess["crop"]), int(preprocess["resize_short"])
    scale = short / min(height, width)
    new_h, new_w = max(crop, round(height * scale)), max(crop, round(width * scale))
    return CropGeometry(height, width, new_h, new_w, (new_h - crop) // 2, (new_w - crop) // 2, crop)


def axis_taps(n_in: int, n_out: int, start: int, count: int) -> AxisTaps:
    """Taps of output positions ``start .. start+count-1`` of a half-pixel bilinear resize n_in -> n_out.

    Computed in float32 exactly as the numpy runtime does, so both sides pick the same sources.
    """
    if n_in == n_out:  # prepare_frame skips the resize when the size already matches
        low = np.arange(start, start + count, dtype=np.int64)
        return AxisTaps(low, low.copy(), np.zeros(count, dtype=np.float32))
    pos = np.clip((np.arange(n_out, dtype=np.float32) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    pos = pos[start : start + count]
    low = np.floor(pos).astype(np.int64)
    high = np.minimum(low + 1, n_in - 1)
    return AxisTaps(low, high, (pos - low).astype(np.float32))


class _AxisResize(nn.Module):
    """Resample one axis of a channels-last tensor: gather two taps, blend (or slice when identity)."""

    def __init__(self, taps: AxisTaps, dim: int, rank: int) -> None:
        super().__init__()
        self.dim = dim
        self.slice = (int(taps.low[0]), int(taps.low[-1]) + 1) if taps.identity else None
        shape = [1] * rank
        shape[dim] = len(taps.low)
        self.register_buffer("low", torch.from_numpy(taps.low), persistent=False)
        self.register_buffer("high", torch.from_numpy(taps.high), persistent=False)
        weight = torch.from_numpy(taps.weight).reshape(shape)
        # (1 - w) as numpy computes it, so the blend rounds the same way
        self.register_buffer("w_low", torch.from_numpy(np.float32(1) - taps.weight).reshape(shape), persistent=False)
        self.register_buffer("w_high", weight, persistent=False)

    def forward(self, x: torch.Tensor, cast: bool) -> torch.Tensor:
        if self.slice is not None:
            x = x.narrow(self.dim, self.slice[0], self.slice[1] - self.slice[0])
            return x.to(torch.float32) if cast else x
        a = torch.index_select(x, self.dim, self.low)
        b = torch.index_select(x, self.dim, self.high)
        if cast:  # gather the uint8 source first: only the kept rows/columns are converted
            a, b = a.to(torch.float32), b.to(torch.float32)
        return a * self.w_low + b * self.w_high


class FramePreprocess(nn.Module):
    """uint8 RGB ``(H, W, 3)`` -> ``(1, 3, crop, crop)`` float32, or ``(T, H, W, 3)`` -> ``(1, T, 3, crop, crop)``.

    ``height``/``width``: the camera frame size, fixed at compile time. ``preprocess``: the dict of
    :func:`tsm_deploy.models.preprocessing` (``resize_short``, ``crop``, ``scale``, ``mean``, ``std``).
    """

    def __init__(self, height: int, width: int, preprocess: dict[str, Any]) -> None:
        super().__init__()
        layout = preprocess.get("layout", "NCHW")
        if layout != "NCHW" or preprocess.get("color", "RGB") != "RGB":
            raise TsmDeployError(f"preprocessing with layout {layout!r}, color {preprocess.get('color')!r}: only NCHW RGB")
        self.geometry = crop_geometry(height, width, preprocess)
        g = self.geometry
        rows = axis_taps(g.height, g.resized_height, g.top, g.crop)
        cols = axis_taps(g.width, g.resized_width, g.left, g.crop)
        # Resample the axis whose gather shrinks the work most first: rows first touches crop*W
        # pixels, columns first H*crop.
        self.rows_first = g.width <= g.height
        self.rows3, self.cols3 = _AxisResize(rows, 0, 3), _AxisResize(cols, 1, 3)
        self.rows4, self.cols4 = _AxisResize(rows, 1, 4), _AxisResize(cols, 2, 4)
        mean = np.asarray(preprocess["mean"], dtype=np.float64)
        std = np.asarray(preprocess["std"], dtype=np.float64)
        if mean.shape != (3,) or std.shape != (3,) or np.any(std == 0):
            raise TsmDeployError("preprocessing mean and std must be 3 numbers each, std non-zero")
        # (x * scale - mean) / std == x * (scale / std) + (-mean / std)
        self.register_buffer("gain", torch.tensor(float(preprocess["scale"]) / std, dtype=torch.float32), persistent=False)
        self.register_buffer("bias", torch.tensor(-mean / std, dtype=torch.float32), persistent=False)

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return (self.geometry.height, self.geometry.width, 3)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        clip = frames.dim() == 4
        with warnings.catch_warnings():  # the shapes are static: checking them while tracing is fine
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            shape = tuple(int(d) for d in frames.shape)
        if shape[-3:] != self.frame_shape or len(shape) not in (3, 4) or frames.dtype != torch.uint8:
            raise TsmDeployError(
                f"frame of shape {shape} ({frames.dtype}): this preprocessing was built for "
                f"uint8 {self.frame_shape} (or a clip T x {self.frame_shape})"
            )
        rows, cols = (self.rows4, self.cols4) if clip else (self.rows3, self.cols3)
        first, second = (rows, cols) if self.rows_first else (cols, rows)
        x = second(first(frames, cast=True), cast=False)
        x = x * self.gain + self.bias  # channels-last: gain/bias broadcast over the last axis
        return x.permute(0, 3, 1, 2)[None] if clip else x.permute(2, 0, 1)[None]


class WithPreprocess(NetworkWrapper):
    """``forward(frame_uint8, *other_inputs)`` = ``network(preprocess(frame_uint8), *other_inputs)``.

    The network's first input (a ``(1, 3, S, S)`` frame, or a ``(1, T, 3, S, S)`` clip) becomes a uint8
    ``(H, W, 3)`` frame (or ``(T, H, W, 3)`` clip) of the same name; the other inputs (shift buffers)
    and all outputs are the network's, unchanged. It keeps the pipeline's model interface
    (``input_shapes``, ``input_dtypes``; ``io_kind``, ``n_shifts``, ``output_names``, ``state_pairs``
    and anything else are the network's).
    """

    def __init__(self, preprocess: FramePreprocess, network: nn.Module) -> None:
        super().__init__(network)
        self.preprocess = preprocess
        self.frames: int | None = None  # T for a clip network
        if hasattr(network, "input_shapes"):
            name, shape = next(iter(network.input_shapes().items()))
            crop = preprocess.geometry.crop
            if tuple(shape) == (1, 3, crop, crop):
                pass
            elif len(shape) == 5 and tuple(shape[:1]) + tuple(shape[2:]) == (1, 3, crop, crop):
                self.frames = int(shape[1])
            else:
                raise TsmDeployError(
                    f"the network's input {name!r} is {tuple(shape)}: the preprocessing makes "
                    f"(1, 3, {crop}, {crop}) frames (or (1, T, 3, {crop}, {crop}) clips)"
                )

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = dict(self.network.input_shapes())
        first = next(iter(shapes))
        frame = self.preprocess.frame_shape
        shapes[first] = frame if self.frames is None else (self.frames, *frame)
        return shapes

    def input_dtypes(self) -> dict[str, str]:
        declared = dict(self.network.input_dtypes()) if hasattr(self.network, "input_dtypes") else {}
        names = list(self.network.input_shapes())
        return {name: "uint8" if i == 0 else declared.get(name, "float32") for i, name in enumerate(names)}

    def forward(self, frame: torch.Tensor, *inputs: torch.Tensor) -> Any:
        return self.network(self.preprocess(frame), *inputs)


def preprocess_to_onnx(module: FramePreprocess, frames: int | None = None, opset: int = 17) -> bytes:
    """The preprocessing alone as ONNX bytes (legacy exporter): input ``frame`` uint8, output ``input``.

    ``frames``: export the clip form ``(frames, H, W, 3)`` instead of one frame.
    """
    shape = module.frame_shape if frames is None else (frames, *module.frame_shape)
    example = torch.zeros(shape, dtype=torch.uint8)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is chosen on purpose
        torch.onnx.export(
            module.eval(), (example,), buffer, input_names=["frame"], output_names=["input"],
            opset_version=opset, dynamo=False,
        )
    return buffer.getvalue()


__all__ = [
    "AxisTaps",
    "CropGeometry",
    "FramePreprocess",
    "WithPreprocess",
    "axis_taps",
    "crop_geometry",
    "parse_frame_size",
    "preprocess_to_onnx",
]
