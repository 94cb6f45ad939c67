"""Model zoo: architecture name -> ``nn.Module`` builder, and the configuration that travels with it.

A :class:`ModelConfig` is everything (besides weights) needed to rebuild a model: it is stored in
tsm-deploy checkpoints and in artifact manifests, so ``verify`` can rebuild the reference model.
Streaming models share one I/O convention: inputs ``frame, shift_buffer_0..``, outputs
``logits, next_shift_buffer_0..``, where output ``next_shift_buffer_i`` feeds input ``shift_buffer_i``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Callable

from torch import nn

from .mobilenet_v2 import IMAGENET_MEAN, IMAGENET_STD, OnlineTSMMobileNetV2

ONLINE_MOBILENET_V2 = "tsm_mobilenet_v2_online"


@dataclass(frozen=True)
class ModelConfig:
    arch: str = ONLINE_MOBILENET_V2
    n_class: int = 27
    input_size: int = 224
    width_mult: float = 1.0
    fold_div: int = 8
    placement: str = "residual"
    shift: bool = True  # False: the same network without temporal shift (baseline for shift overhead)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config fields: {sorted(unknown)}")
        return cls(**data)


_BUILDERS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    ONLINE_MOBILENET_V2: lambda c: OnlineTSMMobileNetV2(
        n_class=c.n_class, input_size=c.input_size, width_mult=c.width_mult, fold_div=c.fold_div, placement=c.placement,
        shift=c.shift,
    ),
}


def architectures() -> list[str]:
    return sorted(_BUILDERS)


def build_model(config: ModelConfig) -> nn.Module:
    """A fresh (randomly initialised) model in eval mode."""
    try:
        builder = _BUILDERS[config.arch]
    except KeyError:
        raise ValueError(f"unknown architecture {config.arch!r}; known: {', '.join(architectures())}") from None
    return builder(config).eval()


def input_names(model: OnlineTSMMobileNetV2) -> list[str]:
    return ["frame"] + [f"shift_buffer_{i}" for i in range(len(model.buffer_specs))]


def output_names(model: OnlineTSMMobileNetV2) -> list[str]:
    return ["logits"] + [f"next_shift_buffer_{i}" for i in range(len(model.buffer_specs))]


def input_shapes(model: OnlineTSMMobileNetV2) -> dict[str, tuple[int, ...]]:
    shapes = [model.frame_shape] + [spec.shape for spec in model.buffer_specs]
    return dict(zip(input_names(model), shapes))


def preprocessing(config: ModelConfig) -> dict[str, Any]:
    """How a uint8 HxWx3 RGB frame becomes the model input, as the original demo does it:
    scale the short side to input_size*256/224, centre-crop input_size, /255, ImageNet normalise."""
    return {
        "color": "RGB",
        "resize_short": config.input_size * 256 // 224,
        "crop": config.input_size,
        "scale": 1.0 / 255.0,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "layout": "NCHW",
    }


__all__ = [
    "ModelConfig",
    "ONLINE_MOBILENET_V2",
    "OnlineTSMMobileNetV2",
    "architectures",
    "build_model",
    "input_names",
    "input_shapes",
    "output_names",
    "preprocessing",
]
