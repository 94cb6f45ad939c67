"""What a loaded checkpoint is and how its weights are checked against a model: the types and checks
every layout and the default model share."""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..errors import TsmDeployError
from ..models import ModelConfig, build_model
from ..support.atomic import atomic_write_bytes

FORMAT_VERSION = 1


@dataclass(frozen=True)
class LoadedCheckpoint:
    config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    source: str  # path, or a description of where the weights came from
    sha256: str  # of the file (or of the serialised default weights)
    layout: str  # which layout was recognised
    labels: tuple[str, ...] | None = None  # class names, when the checkpoint carries them
    task: dict[str, Any] | None = None  # what it was trained for (frame rate, clip length...), when known

    def model(self) -> nn.Module:
        model = build_model(self.config)
        model.load_state_dict(self.state_dict, strict=True)
        return model.eval()


def _shown(key: Any) -> str:
    return key if isinstance(key, str) and key.isprintable() else repr(key)


# width multipliers tried when the weights do not say theirs (the original trains at 1.0; shapes decide)
WIDTH_CANDIDATES = (1.0, 0.5, 0.75, 1.4, 0.35, 1.3)


@dataclass(frozen=True)
class Mismatch:
    """How a state dict differs from what a model expects, key by key."""

    missing: list[str]
    unexpected: list[str]
    shapes: list[tuple[str, tuple[int, ...], tuple[int, ...]]]  # (key, checkpoint's shape, model's shape)
    dtypes: list[tuple[str, Any]]  # (key, its non-floating-point dtype)


def mismatches(state: Mapping[str, Any], expected: Mapping[str, tuple[int, ...]]) -> Mismatch:
    """The one comparison of weights against a model's expected shapes that every report is made from."""
    return Mismatch(
        missing=[k for k in expected if k not in state],
        unexpected=[_shown(k) for k in state if k not in expected],
        shapes=[(k, tuple(getattr(state[k], "shape", ())), tuple(expected[k])) for k in expected
                if k in state and tuple(getattr(state[k], "shape", ())) != tuple(expected[k])],
        dtypes=[(k, state[k].dtype) for k in expected
                if k in state and not k.endswith("num_batches_tracked") and hasattr(state[k], "is_floating_point")
                and not state[k].is_floating_point()],
    )


def closest_width(state: Mapping[str, Any], shapes_at: Callable[[float], Mapping[str, tuple[int, ...]]]) -> float:
    """The width multiplier (of :data:`WIDTH_CANDIDATES`) whose model the weights fit: the first at which
    every key is there with its shape, else the one with the fewest tensors of another shape (BatchNorm's
    counters aside), then the fewest keys missing or unexpected; its mismatch report says what is wrong."""
    scored = []
    for index, width in enumerate(WIDTH_CANDIDATES):
        found = mismatches(state, shapes_at(width))
        shapes = sum(1 for k, _, _ in found.shapes if "num_batches" not in k)
        if shapes == 0 and not found.missing and not found.unexpected:
            return width
        scored.append((shapes, len(found.missing) + len(found.unexpected), index, width))
    return min(scored)[3]


def mismatch_summary(state: Mapping[str, Any], expected: Mapping[str, tuple[int, ...]], shown: int = 3) -> str | None:
    """One line naming what does not match (missing, unexpected, shapes, non-float weights), ``None``
    when all fits."""
    return _summary(mismatches(state, expected), shown)


def _summary(found: Mismatch, shown: int = 3) -> str | None:
    shapes = [f"{k} has shape {got}, expected {want}" for k, got, want in found.shapes]
    dtypes = [f"{k} is {dtype}" for k, dtype in found.dtypes]
    parts = []
    for what, items in (("missing keys", found.missing), ("unexpected keys", found.unexpected),
                        ("shape mismatches", shapes), ("non-floating-point weights", dtypes)):
        if items:
            more = f" ...and {len(items) - shown} more" if len(items) > shown else ""
            parts.append(f"{len(items)} {what} ({', '.join(items[:shown])}{more})")
    return "; ".join(parts) or None


@functools.lru_cache(maxsize=32)
def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Parameter and buffer shapes of ``config``'s model (built once per config)."""
    try:
        return {k: tuple(v.shape) for k, v in build_model(config).state_dict().items()}
    except ValueError as exc:
        raise TsmDeployError(f"cannot build the model: {' '.join(str(exc).split())}") from None


def misfit(state: Mapping[str, Any], config: ModelConfig) -> tuple[int, str | None]:
    """(number of keys that do not fit, one-line summary or None) of ``state`` against ``config``."""
    expected = expected_shapes(config)
    found = mismatches(state, expected)
    bad = len(found.missing) + len(found.unexpected) + len(found.shapes)
    summary = _summary(found)
    return (bad or int(summary is not None)), summary


def check_fits(state: Mapping[str, Any], config: ModelConfig) -> None:
    _, problem = misfit(state, config)
    if problem:
        raise TsmDeployError(f"checkpoint does not match {config.arch} (n_class={config.n_class}, "
                             f"width_mult={config.width_mult:g}): {problem}")


# top-level entries some layout reads (see :mod:`.layouts` and :mod:`.offline`); the rest is training state
USED_ENTRIES = ("tsm_deploy_format", "config", "state_dict", "labels", "task", "meta", "arch")


def unused_entries(obj: Any) -> list[str]:
    """The top-level entries of a ``{"state_dict": ...}`` checkpoint that no layout reads (mmengine's
    ``message_hub``, ``optimizer``, ``param_schedulers``; the original code's ``optimizer``, ``epoch``...)."""
    if not isinstance(obj, Mapping) or "state_dict" not in obj:
        return []
    return [k if isinstance(k, str) and k.isprintable() else repr(k)[:40] for k in obj if k not in USED_ENTRIES]


def serialise_checkpoint(checkpoint: LoadedCheckpoint) -> bytes:
    buffer = io.BytesIO()
    payload: dict[str, Any] = {
        "tsm_deploy_format": FORMAT_VERSION,
        "config": checkpoint.config.to_dict(),
        "state_dict": checkpoint.state_dict,
    }
    if checkpoint.labels:
        payload["labels"] = list(checkpoint.labels)
    if checkpoint.task:
        payload["task"] = dict(checkpoint.task)
    torch.save(payload, buffer)
    return buffer.getvalue()


def save_checkpoint(checkpoint: LoadedCheckpoint, path: str | Path) -> None:
    """Write a tsm-deploy checkpoint (config + weights [+ labels, task]) atomically."""
    atomic_write_bytes(Path(path), serialise_checkpoint(checkpoint))
