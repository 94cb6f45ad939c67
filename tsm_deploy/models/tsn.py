"""Offline (bi-directional) TSM models: the original ``ops/models.py`` TSN wrapper around a backbone.

Input: one tensor ``clip`` of shape ``(N, T, 3, S, S)`` (**NTCHW**: ``T = n_segment`` frames per clip,
RGB, ImageNet-normalised). The frames run through the backbone as one batch ``(N*T, 3, S, S)`` with
each clip's frames adjacent (the layout the shift expects), each frame gets logits, and the clip's
logits are their average over time (``T/2`` frames after temporal pooling). Output ``(N, n_class)``.

Heads, as the original builds them:

* ``new_fc`` (trained with dropout > 0, the default): the backbone's last layer became a Dropout
  (identity at inference, so here ``nn.Identity``) and ``new_fc`` classifies; keys ``new_fc.*``;
* ``fc`` (trained with dropout 0): the backbone's own ``fc`` / ``classifier`` classifies; keys
  ``base_model.fc.*`` / ``base_model.classifier.*``.

State dict keys are the original's minus DataParallel's ``module.`` (``base_model.*``, ``new_fc.*``).
``shift=False`` builds the same network with the shifts left out and *the same parameter names*
(``.net.`` included), so one state dict loads into both: the TSN baseline that measures the shift.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import TsmDeployError
from .mobilenet_v2_tsn import MobileNetV2Backbone
from .resnet import ResNet
from .shift import ShiftPlacement, TemporalShift

RESNET_ARCHS = {"tsm_resnet18": 18, "tsm_resnet34": 34, "tsm_resnet50": 50, "tsm_resnet101": 101}
MOBILENET_V2_ARCH = "tsm_mobilenet_v2"
OFFLINE_ARCHS = (*RESNET_ARCHS, MOBILENET_V2_ARCH)
HEADS = ("new_fc", "fc")
# the original's names for the placements (``--shift_place``) -> this project's
PLACEMENT_ALIASES = {"blockres": ShiftPlacement.RESIDUAL, "block": ShiftPlacement.INPLACE}
_NEW_FC_STD = 0.001  # the original's head initialisation


def shift_placement(placement: ShiftPlacement | str) -> ShiftPlacement:
    """``residual``/``blockres`` or ``inplace``/``block`` -> :class:`ShiftPlacement`."""
    if isinstance(placement, str) and placement in PLACEMENT_ALIASES:
        return PLACEMENT_ALIASES[placement]
    try:
        return ShiftPlacement(placement)
    except ValueError:
        raise TsmDeployError(
            f"unknown shift placement {placement!r}; known: residual (blockres), inplace (block)"
        ) from None


class TSN(nn.Module):
    """``forward(clip (N, T, 3, S, S)) -> logits (N, n_class)``; see the module docstring.

    A ``clip`` model of the registry: input ``clip`` ``(1, T, 3, S, S)``, output ``logits``, no state."""

    io_kind = "clip"

    def __init__(
        self,
        base_model: ResNet | MobileNetV2Backbone,
        arch: str,
        n_class: int,
        n_segment: int,
        input_size: int,
        head: str = "new_fc",
        *,
        fold_div: int = 8,
        placement: ShiftPlacement = ShiftPlacement.RESIDUAL,
        width_mult: float = 1.0,
        shift: bool = True,
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise TsmDeployError(f"unknown head layout {head!r}; known: {', '.join(HEADS)}")
        self.arch = arch
        self.n_class = n_class
        self.n_segment = n_segment
        self.input_size = input_size
        self.head = head
        self.fold_div = fold_div  # recorded for manifests; the shifts hold their own copy
        self.placement = placement
        self.width_mult = width_mult
        self.shift = shift
        self.temporal_pool = bool(getattr(base_model, "temporal_pool", False))
        self.base_model = base_model
        last_layer = "fc" if isinstance(base_model, ResNet) else "classifier"
        if head == "new_fc":
            setattr(base_model, last_layer, nn.Identity())  # the original's Dropout, off at inference
            self.new_fc: nn.Linear | None = nn.Linear(base_model.feature_dim, n_class)
            classifier = self.new_fc
        else:
            self.new_fc = None
            classifier = getattr(base_model, last_layer)
        if not classifier.weight.is_meta:  # meta: a shape-only build, nothing to draw
            nn.init.normal_(classifier.weight, 0.0, _NEW_FC_STD)
            nn.init.zeros_(classifier.bias)

    @property
    def input_shape(self) -> tuple[int, int, int, int, int]:
        """One clip, NTCHW."""
        return (1, self.n_segment, 3, self.input_size, self.input_size)

    @property
    def n_shifts(self) -> int:
        """How many temporal shifts the graph holds (0 for the ``shift=False`` baseline)."""
        return sum(isinstance(m, TemporalShift) for m in self.modules())

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"clip": self.input_shape}

    def output_names(self) -> list[str]:
        return ["logits"]

    def state_pairs(self) -> list[tuple[str, str]]:
        return []  # a clip model carries nothing from one call to the next

    @property
    def output_segments(self) -> int:
        """Frames per clip left at the head: temporal pooling halves them."""
        return self.n_segment // 2 if self.temporal_pool else self.n_segment

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        # Shapes come from Python ints, never from ``clip.shape``: the legacy exporter turns a graph
        # input's shape into Shape/Slice/Concat ops (a dynamic reshape that TVM's check refuses).
        if not torch.jit.is_tracing():
            expected = (self.n_segment, 3, self.input_size, self.input_size)
            if clip.dim() != 5 or tuple(clip.shape[1:]) != expected:
                raise ValueError(f"expected a clip (N, {', '.join(map(str, expected))}), got {tuple(clip.shape)}")
        frames = clip.reshape(-1, 3, self.input_size, self.input_size)  # (N*T, 3, S, S), a clip's frames adjacent
        logits = self.base_model(frames)
        if self.new_fc is not None:
            logits = self.new_fc(logits)
        return logits.reshape(-1, self.output_segments, self.n_class).mean(dim=1)  # average consensus


def build_offline(
    arch: str,
    n_class: int,
    n_segment: int = 8,
    input_size: int = 224,
    width_mult: float = 1.0,
    fold_div: int = 8,
    placement: ShiftPlacement | str = ShiftPlacement.RESIDUAL,
    temporal_pool: bool = False,
    shift: bool = True,
    head: str = "new_fc",
) -> TSN:
    """A fresh (randomly initialised) offline TSM model in eval mode; bad arguments raise TsmDeployError."""
    placement = shift_placement(placement)
    if n_class < 1 or n_segment < 1:
        raise TsmDeployError(f"n_class and n_segment must be positive, got {n_class} and {n_segment}")
    if input_size < 32 or input_size % 32:
        raise TsmDeployError(f"input_size must be a positive multiple of 32, got {input_size}")
    if fold_div < 2:
        raise TsmDeployError(f"fold_div must be >= 2, got {fold_div}")
    if temporal_pool and n_segment % 2:
        raise TsmDeployError(f"temporal pooling halves the segments: n_segment must be even, got {n_segment}")
    if arch in RESNET_ARCHS:
        if width_mult != 1.0:
            raise TsmDeployError(f"{arch} has no width multiplier, got width_mult={width_mult}")
        backbone: ResNet | MobileNetV2Backbone = ResNet(
            RESNET_ARCHS[arch], n_class, n_segment, fold_div, placement, temporal_pool, shift
        )
    elif arch == MOBILENET_V2_ARCH:
        if placement is not ShiftPlacement.RESIDUAL:
            raise TsmDeployError(f"{arch}: only the residual (blockres) shift exists in the original, not {placement.value}")
        if temporal_pool:
            raise TsmDeployError(f"{arch}: temporal pooling exists only for ResNets in the original")
        backbone = MobileNetV2Backbone(n_class, input_size, width_mult, n_segment, fold_div, shift)
    else:
        raise TsmDeployError(f"unknown offline architecture {arch!r}; known: {', '.join(OFFLINE_ARCHS)}")
    model = TSN(
        backbone, arch, n_class, n_segment, input_size, head,
        fold_div=fold_div, placement=placement, width_mult=width_mult, shift=shift,
    )
    return model.eval()
