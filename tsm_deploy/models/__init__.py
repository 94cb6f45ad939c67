"""Model zoo: the spec registry (architecture -> builder, I/O kind, checkpoint layouts) and the
configuration that travels with a model in checkpoints and manifests. See :mod:`.registry`."""

from __future__ import annotations

from torch import nn

from .mobilenet_v2 import OnlineTSMMobileNetV2
from .registry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    IO_KINDS,
    ONLINE_MOBILENET_V2,
    DeployableModel,
    ModelConfig,
    ModelSpec,
    architectures,
    build_model,
    model_spec,
    preprocessing,
    register,
)
from .shift import ShiftDirection
from .tsn import MOBILENET_V2_ARCH, RESNET_ARCHS, build_offline

register(
    ModelSpec(
        arch=ONLINE_MOBILENET_V2,
        description="online (uni-directional) TSM-MobileNetV2, streamed frame by frame (original online demo)",
        io_kind="stream",
        direction=ShiftDirection.UNIDIRECTIONAL,
        build=lambda c: OnlineTSMMobileNetV2(
            n_class=c.n_class, input_size=c.input_size, width_mult=c.width_mult, fold_div=c.fold_div,
            placement=c.placement, shift=c.shift,
        ),
        checkpoint_layouts=("tsm-deploy", "state-dict", "tsm-training"),
    )
)

for _arch in (*RESNET_ARCHS, MOBILENET_V2_ARCH):
    register(
        ModelSpec(
            arch=_arch,
            description=f"offline (bi-directional) TSM, {_arch[4:]} backbone, TSN wrapper over a clip of T segments",
            io_kind="clip",
            direction=ShiftDirection.BIDIRECTIONAL,
            build=lambda c: build_offline(
                c.arch, c.n_class, c.n_segment, c.input_size, c.width_mult, c.fold_div, c.placement,
                c.temporal_pool, c.shift, head=c.head,
            ),
            checkpoint_layouts=("tsm-deploy", "tsm-original", "mmaction2"),
        )
    )


def input_names(model: nn.Module) -> list[str]:
    return list(model.input_shapes())


def output_names(model: nn.Module) -> list[str]:
    return model.output_names()


def input_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return model.input_shapes()


def io_kind(model: nn.Module) -> str:
    return model.io_kind


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IO_KINDS",
    "ONLINE_MOBILENET_V2",
    "DeployableModel",
    "ModelConfig",
    "ModelSpec",
    "OnlineTSMMobileNetV2",
    "architectures",
    "build_model",
    "input_names",
    "input_shapes",
    "io_kind",
    "model_spec",
    "output_names",
    "preprocessing",
    "register",
]
