"""The temporal shift of TSM (Lin, Gan, Han, ICCV 2019), as the original code defines it.

Layout follows mit-han-lab/temporal-shift-module: activations are ``(N*T, C, H, W)`` with the
``T`` frames of a clip adjacent; ``fold = C // fold_div`` channels move each way.

* bi-directional (offline): channels ``[0, fold)`` come from the *next* frame, channels
  ``[fold, 2*fold)`` from the *previous* frame, zero padding at the clip ends;
* uni-directional (online): channels ``[0, fold)`` come from the *previous* frame. Streaming, the
  previous frame's first fold is carried in an explicit buffer (zeros before the first frame).

Everything is written with slicing, zero padding and concatenation, never slice assignment:
assignment traces to ONNX as ScatterND / traced constants and breaks TensorRT and TVM importers
(upstream TSM issues #77, #103, #181). Slices + Concat import into Relax as strided_slice/concatenate.
"""

from __future__ import annotations

from enum import Enum

import torch
from torch import nn


class ShiftDirection(str, Enum):
    BIDIRECTIONAL = "bidirectional"
    UNIDIRECTIONAL = "unidirectional"


class ShiftPlacement(str, Enum):
    """Where the shift sits in a residual block (paper Sec. 3.3; original code's ``place``)."""

    RESIDUAL = "residual"  # inside the residual branch ("blockres"): the identity path is unshifted
    INPLACE = "inplace"  # before the whole block ("block"): identity path sees shifted features too


def fold_size(channels: int, fold_div: int) -> int:
    if fold_div < 2:
        raise ValueError(f"fold_div must be >= 2, got {fold_div}")
    return channels // fold_div


def _shift_from_previous(x: torch.Tensor) -> torch.Tensor:
    """``(N, T, c, H, W)`` -> frame t gets frame t-1; frame 0 gets zeros."""
    return torch.cat((torch.zeros_like(x[:, :1]), x[:, :-1]), dim=1)


def _shift_from_next(x: torch.Tensor) -> torch.Tensor:
    """``(N, T, c, H, W)`` -> frame t gets frame t+1; the last frame gets zeros."""
    return torch.cat((x[:, 1:], torch.zeros_like(x[:, :1])), dim=1)


def temporal_shift(
    x: torch.Tensor,
    n_segment: int,
    fold_div: int = 8,
    direction: ShiftDirection | str = ShiftDirection.BIDIRECTIONAL,
) -> torch.Tensor:
    """Shift a clip batch ``(N*T, C, H, W)`` along time (``T = n_segment``)."""
    direction = ShiftDirection(direction)
    nt, c, h, w = x.shape
    if not torch.jit.is_tracing() and nt % n_segment:  # shapes are constants when tracing
        raise ValueError(f"batch of {nt} frames is not a multiple of n_segment={n_segment}")
    fold = fold_size(c, fold_div)
    clips = x.reshape(nt // n_segment, n_segment, c, h, w)
    if direction is ShiftDirection.BIDIRECTIONAL:
        parts = (
            _shift_from_next(clips[:, :, :fold]),
            _shift_from_previous(clips[:, :, fold : 2 * fold]),
            clips[:, :, 2 * fold :],
        )
    else:
        parts = (_shift_from_previous(clips[:, :, :fold]), clips[:, :, fold:])
    return torch.cat(parts, dim=2).reshape(nt, c, h, w)


def online_shift(x: torch.Tensor, buffer: torch.Tensor, fold_div: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """One streamed frame ``(N, C, H, W)``: replace the first fold by the cached previous frame's.

    Returns ``(shifted, next_buffer)``; ``next_buffer`` is this frame's first fold, to be fed back.
    """
    fold = fold_size(x.shape[1], fold_div)
    return torch.cat((buffer, x[:, fold:]), dim=1), x[:, :fold]


class TemporalShift(nn.Module):
    """Shift the input of ``net`` along time. Attribute names match the original (``.net``),
    so state dict keys of original checkpoints (``...conv1.net.weight``) load unchanged."""

    def __init__(
        self,
        net: nn.Module,
        n_segment: int,
        fold_div: int = 8,
        direction: ShiftDirection | str = ShiftDirection.BIDIRECTIONAL,
    ) -> None:
        super().__init__()
        self.net = net
        self.n_segment = n_segment
        self.fold_div = fold_div
        self.direction = ShiftDirection(direction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(temporal_shift(x, self.n_segment, self.fold_div, self.direction))

    def extra_repr(self) -> str:
        return f"n_segment={self.n_segment}, fold_div={self.fold_div}, direction={self.direction.value}"


class Unshifted(nn.Module):
    """A shift slot with the shift left out: same ``.net`` attribute (so the same parameter names as
    the shifted network), plain pass-through. Builds the TSN baseline that shares TSM's weights."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def wrap_shift(net: nn.Module, shift: bool, n_segment: int, fold_div: int) -> nn.Module:
    """``net`` behind a bi-directional temporal shift (or behind nothing, keeping the ``.net`` key)."""
    return TemporalShift(net, n_segment, fold_div) if shift else Unshifted(net)
