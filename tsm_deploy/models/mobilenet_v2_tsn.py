"""The original offline TSM-MobileNetV2 backbone (``archs/mobilenet_v2.py`` + ``ops/models.py``).

Parameter names are the original's (``features.N.conv.M.*``, ``classifier.*``). With shift, the
original wraps ``conv[0]`` (the pointwise expansion) of every InvertedResidual that has a residual
connection and an expansion layer (``len(conv) == 8``) in a bi-directional TemporalShift: keys
``features.N.conv.0.net.weight``. The building blocks are those of the online model.
"""

from __future__ import annotations

import torch
from torch import nn

from .mobilenet_v2 import (
    INVERTED_RESIDUAL_SETTING,
    InvertedResidual,
    OnlineTSMMobileNetV2,
    conv_1x1_bn,
    conv_bn,
    make_divisible,
)
from .shift import wrap_shift

# Length of ``InvertedResidual.conv`` with an expansion layer: (conv, bn, relu6) x 2 + (conv, bn).
_EXPANDED_BLOCK_LEN = 8


class MobileNetV2Backbone(nn.Module):
    """MobileNetV2 over a batch of frames ``(N*T, 3, S, S)`` whose clips are ``n_segment`` frames long."""

    def __init__(
        self,
        n_class: int = 1000,
        input_size: int = 224,
        width_mult: float = 1.0,
        n_segment: int = 8,
        fold_div: int = 8,
        shift: bool = True,
    ) -> None:
        super().__init__()
        if input_size % 32:
            raise ValueError(f"input_size must be a multiple of 32, got {input_size}")
        input_channel = 32  # the original keeps the stem at 32 channels for every width
        self.last_channel = make_divisible(1280 * width_mult) if width_mult > 1.0 else 1280
        features: list[nn.Module] = [conv_bn(3, input_channel, 2)]
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            output_channel = make_divisible(c * width_mult) if t > 1 else c
            for i in range(n):
                block = InvertedResidual(input_channel, output_channel, s if i == 0 else 1, t)
                # the original's rule, evaluated per block (not a fixed index list: widths change inp == oup)
                if len(block.conv) == _EXPANDED_BLOCK_LEN and block.use_res_connect:
                    block.conv[0] = wrap_shift(block.conv[0], shift, n_segment, fold_div)
                features.append(block)
                input_channel = output_channel
        features.append(conv_1x1_bn(input_channel, self.last_channel))
        self.features = nn.Sequential(*features)
        self.feature_dim = self.last_channel
        self.classifier = nn.Linear(self.last_channel, n_class)
        if not self.classifier.weight.is_meta:  # meta: a shape-only build, nothing to draw
            # same initialisation as the original (shared with the online model)
            OnlineTSMMobileNetV2._initialize_weights(self)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(x.mean(3).mean(2))
