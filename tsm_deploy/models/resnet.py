"""ResNet-18/34/50/101 with torchvision's parameter names, and TSM inserted as the original does.

Written here (no torchvision dependency: there is no CPU torchvision wheel for the pinned torch) so
that the state dict keys are torchvision's (``conv1``, ``bn1``, ``layerX.Y.conv1/bn1/.../downsample.0/.1``,
``fc``) and an original TSM checkpoint's ``base_model.*`` loads unchanged.

How the original ``ops/temporal_shift.py`` inserts the shift (mit-han-lab/temporal-shift-module):

* ``blockres`` (placement ``residual``): each block's ``conv1`` is wrapped, so only the residual
  branch sees shifted features (keys ``layerX.Y.conv1.net.weight``). When layer3 has >= 23 blocks
  (ResNet-101) only every other block is shifted (``n_round = 2``);
* ``block`` (placement ``inplace``): the whole block is wrapped, identity path included (keys
  ``layerX.Y.net.conv1.weight``);
* temporal pooling: ``layer2`` is wrapped in a max pool over time (kernel 3, stride 2, padding 1)
  that halves the segments seen by layers 2-4 (keys ``layer2.net.*``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .shift import ShiftPlacement, wrap_shift

# depth -> (block type name, blocks per stage)
RESNET_STAGES: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}


def temporal_max_pool(x: torch.Tensor, n_segment: int) -> torch.Tensor:
    """``(N*T, C, H, W)`` -> ``(N*T/2, C, H, W)``: max over frames ``2t-1, 2t, 2t+1`` (the original's
    ``max_pool3d`` with kernel (3,1,1), stride (2,1,1), padding (1,0,0) over time)."""
    nt, c, h, w = x.shape
    clips = x.reshape(nt // n_segment, n_segment, c, h, w).transpose(1, 2)  # N, C, T, H, W
    pooled = F.max_pool3d(clips, kernel_size=(3, 1, 1), stride=(2, 1, 1), padding=(1, 0, 0))
    return pooled.transpose(1, 2).reshape(nt // 2, c, h, w)


class TemporalPool(nn.Module):
    """Pool time before ``net`` (the original wraps ``layer2``: keys ``layer2.net.*``)."""

    def __init__(self, net: nn.Module, n_segment: int) -> None:
        super().__init__()
        self.net = net
        self.n_segment = n_segment

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(temporal_max_pool(x, self.n_segment))

    def extra_repr(self) -> str:
        return f"n_segment={self.n_segment}"


def conv3x3(inplanes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)


def conv1x1(inplanes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inplanes, planes, 1, stride, 0, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's (ResNet v1.5): the stride sits on the 3x3 ``conv2``."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """A ResNet over a batch of frames ``(N*T, 3, S, S)`` whose clips are ``n_segment`` frames long.

    ``shift=False`` keeps the same modules and parameter names with the shifts left out.
    """

    def __init__(
        self,
        depth: int,
        n_class: int = 1000,
        n_segment: int = 8,
        fold_div: int = 8,
        placement: ShiftPlacement | str = ShiftPlacement.RESIDUAL,
        temporal_pool: bool = False,
        shift: bool = True,
    ) -> None:
        super().__init__()
        if depth not in RESNET_STAGES:
            raise ValueError(f"unsupported ResNet depth {depth}; known: {sorted(RESNET_STAGES)}")
        if temporal_pool and n_segment % 2:
            raise ValueError(f"temporal pooling needs an even n_segment, got {n_segment}")
        kind, counts = RESNET_STAGES[depth]
        block: type[BasicBlock] | type[Bottleneck] = BasicBlock if kind == "basic" else Bottleneck
        self.depth = depth
        self.placement = ShiftPlacement(placement)
        self.n_segment = n_segment
        self.fold_div = fold_div
        self.temporal_pool = temporal_pool
        # the original shifts every other block of very deep nets (layer3 of ResNet-101 has 23)
        self.n_round = 2 if counts[2] >= 23 else 1
        later = n_segment // 2 if temporal_pool else n_segment
        segments = (n_segment, later, later, later)

        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        stages = []
        for index, (planes, count, stride) in enumerate(zip((64, 128, 256, 512), counts, (1, 2, 2, 2))):
            stage = self._make_stage(block, planes, count, stride)
            stages.append(self._insert_shifts(stage, shift, segments[index], fold_div))
        self.layer1 = stages[0]
        self.layer2 = TemporalPool(stages[1], n_segment) if temporal_pool else stages[1]
        self.layer3 = stages[2]
        self.layer4 = stages[3]
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = 512 * block.expansion
        self.fc = nn.Linear(self.feature_dim, n_class)
        self._initialize_weights()

    def _make_stage(self, block: type[BasicBlock] | type[Bottleneck], planes: int, count: int, stride: int) -> list[nn.Module]:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride), nn.BatchNorm2d(planes * block.expansion)
            )
        blocks: list[nn.Module] = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        blocks += [block(self.inplanes, planes) for _ in range(1, count)]
        return blocks

    def _insert_shifts(self, blocks: list[nn.Module], shift: bool, n_segment: int, fold_div: int) -> nn.Sequential:
        if self.placement is ShiftPlacement.INPLACE:  # "block": every block, whole block
            return nn.Sequential(*(wrap_shift(b, shift, n_segment, fold_div) for b in blocks))
        for i, b in enumerate(blocks):  # "blockres": conv1 of every n_round-th block
            if i % self.n_round == 0:
                b.conv1 = wrap_shift(b.conv1, shift, n_segment, fold_div)
        return nn.Sequential(*blocks)

    def _initialize_weights(self) -> None:
        # torchvision's initialisation, so seeded random models behave like fresh ones there
        if self.fc.weight.is_meta:
            return  # a shape-only build: random draws on the meta device cost seconds of imports
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))
