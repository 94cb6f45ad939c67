"""The model spec registry: per architecture, how to build it, what its I/O looks like, how many
temporal shifts its exported graph must keep, and which checkpoint layouts can hold its weights.

Everything downstream (export, the shift check, compile, tune, verify, bench, the manifest and the
runtime) asks the spec or the built model, never the position of an input.

I/O kinds:

* ``stream``: one frame per call; inputs ``frame, shift_buffer_0..``, outputs ``logits,
  next_shift_buffer_0..``; output ``next_shift_buffer_i`` feeds input ``shift_buffer_i`` next step.
* ``clip``: ``T`` frames at once, input ``clip`` ``(1, T, 3, S, S)`` (NTCHW), output ``logits``.

Every built model implements :class:`DeployableModel`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Literal, Protocol, runtime_checkable

from torch import nn

from .shift import ShiftDirection

IoKind = Literal["stream", "clip"]
IO_KINDS: tuple[str, ...] = ("stream", "clip")

ONLINE_MOBILENET_V2 = "tsm_mobilenet_v2_online"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelConfig:
    """Everything besides weights needed to rebuild a model (stored in checkpoints and manifests)."""

    arch: str = ONLINE_MOBILENET_V2
    n_class: int = 27
    input_size: int = 224
    width_mult: float = 1.0
    fold_div: int = 8
    placement: str = "residual"  # "residual" (original "blockres") or "inplace" ("block")
    shift: bool = True  # False: the same network without temporal shift (TSN; shift-overhead baseline)
    n_segment: int = 8  # clip models: frames per clip (T); stream models run one frame per call
    temporal_pool: bool = False  # clip models: the original's temporal max pooling after the first stage
    head: str = "new_fc"  # clip models: "new_fc" (trained with dropout) or "fc" (the backbone's own layer)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """Strict: unknown fields and wrongly typed values are refused (``ValueError``)."""
        if not isinstance(data, dict):
            raise ValueError(f"model config must be a mapping, got {type(data).__name__}")
        known = {f.name: f for f in fields(cls)}
        unknown = set(data) - set(known)
        if unknown:
            raise ValueError(f"unknown model config fields: {sorted(map(str, unknown))}")
        for name, value in data.items():
            expected = {"arch": str, "placement": str, "head": str, "shift": bool, "temporal_pool": bool,
                        "width_mult": (int, float)}.get(name, int)
            if isinstance(value, bool) and expected is not bool or not isinstance(value, expected):
                raise ValueError(f"model config field {name} has a bad value {value!r}")
        config = cls(**data)
        if config.arch not in _SPECS:
            raise ValueError(f"unknown architecture {config.arch!r}; known: {', '.join(architectures())}")
        if config.n_class < 1 or config.input_size < 1 or config.fold_div < 2 or config.n_segment < 1:
            raise ValueError(f"model config out of range: {config}")
        if not 0 < config.width_mult <= 4:
            raise ValueError(f"width_mult out of range: {config.width_mult}")
        return config


@runtime_checkable
class DeployableModel(Protocol):
    """What the pipeline needs of a built model (an ``nn.Module`` in eval mode)."""

    io_kind: str
    n_shifts: int  # temporal shifts in the graph: the exported graph must keep at least these

    def input_shapes(self) -> dict[str, tuple[int, ...]]: ...  # ordered as forward() takes them

    def output_names(self) -> list[str]: ...

    def state_pairs(self) -> list[tuple[str, str]]: ...  # (output, input) fed back each step; [] for clips


@dataclass(frozen=True)
class ModelSpec:
    arch: str
    description: str
    io_kind: str
    direction: ShiftDirection
    build: Callable[[ModelConfig], nn.Module]
    checkpoint_layouts: tuple[str, ...]  # layout names of tsm_deploy.checkpoint that can hold it


_SPECS: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    if spec.io_kind not in IO_KINDS:
        raise ValueError(f"unknown I/O kind {spec.io_kind!r}")
    _SPECS[spec.arch] = spec
    return spec


def architectures() -> list[str]:
    return sorted(_SPECS)


def model_spec(arch: str) -> ModelSpec:
    try:
        return _SPECS[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(architectures())}") from None


def build_model(config: ModelConfig) -> nn.Module:
    """A fresh (randomly initialised) model in eval mode."""
    return model_spec(config.arch).build(config).eval()


def preprocessing(config: ModelConfig) -> dict[str, Any]:
    """How a uint8 HxWx3 RGB frame becomes the model input, as the original code does it (its demo,
    and its test-time ``GroupScale(256) + GroupCenterCrop(224)``; MMAction2's TSM configs do the same):
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
