"""Online TSM-MobileNetV2, structured like the original ``online_demo/mobilenet_v2_tsm.py``.

Parameter names (``features.N.conv.M.*``, ``classifier.*``), the ten shifted blocks and the
buffer shapes are those of the original online demo, so its checkpoints (e.g.
``mobilenetv2_jester_online.pth.tar``) load unchanged. Differences: ``fold_div`` and the shift
placement are arguments, and ``forward_clip`` runs the same weights on a whole clip with the
uni-directional offline shift, which is what streaming must reproduce frame by frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .shift import ShiftDirection, ShiftPlacement, fold_size, online_shift, temporal_shift

# Indices (0-based, counting inverted residual blocks) that carry a shift in the original demo:
# every stride-1 block with a residual connection and expansion > 1.
SHIFT_BLOCK_INDICES = (2, 4, 5, 7, 8, 9, 11, 12, 14, 15)

# t (expansion), c (channels), n (repeats), s (first stride)
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def make_divisible(x: float, divisible_by: int = 8) -> int:
    return int(math.ceil(x / divisible_by) * divisible_by)


def conv_bn(inp: int, oup: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup), nn.ReLU6(inplace=True))


def conv_1x1_bn(inp: int, oup: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inp, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup), nn.ReLU6(inplace=True))


def _inverted_residual_layers(inp: int, oup: int, stride: int, expand_ratio: int) -> nn.Sequential:
    hidden = int(inp * expand_ratio)
    layers: list[nn.Module] = []
    if expand_ratio != 1:  # pointwise expansion
        layers += [nn.Conv2d(inp, hidden, 1, 1, 0, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
    layers += [  # depthwise, then pointwise-linear projection
        nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
        nn.BatchNorm2d(hidden),
        nn.ReLU6(inplace=True),
        nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
        nn.BatchNorm2d(oup),
    ]
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = _inverted_residual_layers(inp, oup, stride, expand_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class InvertedResidualWithShift(nn.Module):
    """A residual block whose input is temporally shifted (uni-directionally).

    ``forward`` streams one frame with an explicit buffer; ``forward_clip`` shifts a whole clip.
    """

    def __init__(self, inp: int, oup: int, expand_ratio: int, fold_div: int, placement: ShiftPlacement) -> None:
        super().__init__()
        if inp != oup or expand_ratio <= 1:
            raise ValueError("a shifted block needs a residual connection (inp == oup, stride 1, expansion > 1)")
        self.fold_div = fold_div
        self.placement = placement
        self.conv = _inverted_residual_layers(inp, oup, 1, expand_ratio)

    def _combine(self, x: torch.Tensor, shifted: torch.Tensor) -> torch.Tensor:
        identity = x if self.placement is ShiftPlacement.RESIDUAL else shifted
        return identity + self.conv(shifted)

    def forward(self, x: torch.Tensor, shift_buffer: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shifted, next_buffer = online_shift(x, shift_buffer, self.fold_div)
        return self._combine(x, shifted), next_buffer

    def forward_clip(self, x: torch.Tensor, n_segment: int) -> torch.Tensor:
        shifted = temporal_shift(x, n_segment, self.fold_div, ShiftDirection.UNIDIRECTIONAL)
        return self._combine(x, shifted)


@dataclass(frozen=True)
class BufferSpec:
    channels: int
    height: int
    width: int

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (1, self.channels, self.height, self.width)


class OnlineTSMMobileNetV2(nn.Module):
    """``forward(frame, *buffers) -> (logits, *next_buffers)`` for one frame ``(1, 3, S, S)``.

    A ``stream`` model of the registry: output ``next_shift_buffer_i`` feeds ``shift_buffer_i``."""

    io_kind = "stream"

    def __init__(
        self,
        n_class: int = 1000,
        input_size: int = 224,
        width_mult: float = 1.0,
        fold_div: int = 8,
        placement: ShiftPlacement | str = ShiftPlacement.RESIDUAL,
        shift: bool = True,
    ) -> None:
        """``shift=False`` builds the same network (same parameter names) with the ten shifts removed,
        and so without buffers: the baseline that measures what the shift costs."""
        super().__init__()
        if input_size % 32:
            raise ValueError(f"input_size must be a multiple of 32, got {input_size}")
        placement = ShiftPlacement(placement)
        self.n_class = n_class
        self.input_size = input_size
        self.width_mult = width_mult
        self.fold_div = fold_div
        self.placement = placement

        input_channel = 32  # the original keeps the stem at 32 channels for every width
        self.last_channel = make_divisible(1280 * width_mult) if width_mult > 1.0 else 1280
        features: list[nn.Module] = [conv_bn(3, input_channel, 2)]
        buffers: list[BufferSpec] = []
        size = input_size // 2
        block_index = 0
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            output_channel = make_divisible(c * width_mult) if t > 1 else c
            for i in range(n):
                stride = s if i == 0 else 1
                if shift and block_index in SHIFT_BLOCK_INDICES:
                    features.append(InvertedResidualWithShift(input_channel, output_channel, t, fold_div, placement))
                    buffers.append(BufferSpec(fold_size(input_channel, fold_div), size, size))
                else:
                    features.append(InvertedResidual(input_channel, output_channel, stride, t))
                size //= stride
                input_channel = output_channel
                block_index += 1
        features.append(conv_1x1_bn(input_channel, self.last_channel))
        self.features = nn.ModuleList(features)
        self.classifier = nn.Linear(self.last_channel, n_class)
        self.buffer_specs: tuple[BufferSpec, ...] = tuple(buffers)
        self._initialize_weights()

    @property
    def frame_shape(self) -> tuple[int, int, int, int]:
        return (1, 3, self.input_size, self.input_size)

    @property
    def n_shifts(self) -> int:
        return len(self.buffer_specs)

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {"frame": self.frame_shape}
        shapes.update({f"shift_buffer_{i}": spec.shape for i, spec in enumerate(self.buffer_specs)})
        return shapes

    def output_names(self) -> list[str]:
        return ["logits"] + [f"next_shift_buffer_{i}" for i in range(len(self.buffer_specs))]

    def state_pairs(self) -> list[tuple[str, str]]:
        return [(f"next_shift_buffer_{i}", f"shift_buffer_{i}") for i in range(len(self.buffer_specs))]

    def zero_buffers(self) -> list[torch.Tensor]:
        return [torch.zeros(spec.shape) for spec in self.buffer_specs]

    def forward(self, frame: torch.Tensor, *shift_buffers: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if len(shift_buffers) != len(self.buffer_specs):
            raise ValueError(f"expected {len(self.buffer_specs)} shift buffers, got {len(shift_buffers)}")
        x = frame
        next_buffers = []
        buffer_iter = iter(shift_buffers)
        for block in self.features:
            if isinstance(block, InvertedResidualWithShift):
                x, next_buffer = block(x, next(buffer_iter))
                next_buffers.append(next_buffer)
            else:
                x = block(x)
        return (self._head(x), *next_buffers)

    def forward_clip(self, clip: torch.Tensor, n_segment: int | None = None) -> torch.Tensor:
        """Offline uni-directional formulation: ``(N*T, 3, S, S)`` -> per-frame logits ``(N*T, n_class)``."""
        n_segment = n_segment or clip.shape[0]
        x = clip
        for block in self.features:
            x = block.forward_clip(x, n_segment) if isinstance(block, InvertedResidualWithShift) else block(x)
        return self._head(x)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(x.mean(3).mean(2))

    def _initialize_weights(self) -> None:
        # Same initialisation as the original, so seeded random models behave like fresh ones there.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / n))
                if m.bias is not None:
                    m.bias.data.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.weight.data.normal_(0, 0.01)
                m.bias.data.zero_()
