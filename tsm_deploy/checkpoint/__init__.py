"""Checkpoints -> (ModelConfig, state_dict), with one clear error for each way a file can be wrong.

Layouts understood (see :mod:`.layouts`): tsm-deploy's own (config + weights), the original online
demo's bare state dict, the original training code's ``{"state_dict": {"module.…"}}`` (optimizer
state and all), the original's and MMAction2's offline checkpoints, mmengine's training checkpoints
(``meta``, ``state_dict``, ``message_hub``, ``optimizer``, ``param_schedulers``). Files are read by
:mod:`.reader` without running code from them (``weights_only=True``, else placeholders for what is
not weights); the entries not needed to compile are logged. The embedded default model lives in
:mod:`.default`.
"""

from __future__ import annotations

import functools
import io
import logging
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..atomic import atomic_write_bytes
from ..errors import TsmDeployError
from ..models import ModelConfig, build_model
from .reader import read_checkpoint_file, sha256_bytes

log = logging.getLogger(__name__)

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


def mismatch_summary(state: Mapping[str, Any], expected: Mapping[str, tuple[int, ...]], shown: int = 3) -> str | None:
    """One line naming what does not match (missing, unexpected, shapes, non-float weights), ``None``
    when all fits."""
    missing = [k for k in expected if k not in state]
    unexpected = [_shown(k) for k in state if k not in expected]
    dtypes = [
        f"{k} is {state[k].dtype}"
        for k in expected
        if k in state and not k.endswith("num_batches_tracked") and not state[k].is_floating_point()
    ]
    shapes = [
        f"{k} has shape {tuple(state[k].shape)}, expected {tuple(expected[k])}"
        for k in expected
        if k in state and tuple(getattr(state[k], "shape", ())) != tuple(expected[k])
    ]
    parts = []
    for what, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes),
                        ("non-floating-point weights", dtypes)):
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
    bad = sum(1 for k in expected if k not in state or tuple(getattr(state[k], "shape", ())) != expected[k])
    bad += sum(1 for k in state if k not in expected)
    summary = mismatch_summary(state, expected)
    return (bad or int(summary is not None)), summary


def check_fits(state: Mapping[str, Any], config: ModelConfig) -> None:
    _, problem = misfit(state, config)
    if problem:
        raise TsmDeployError(f"checkpoint does not match {config.arch} (n_class={config.n_class}, "
                             f"width_mult={config.width_mult:g}): {problem}")


def load_checkpoint(path: str | Path, overrides: Mapping[str, Any] | None = None) -> LoadedCheckpoint:
    """Read a checkpoint safely and work out the model it belongs to.

    ``overrides`` sets what weights cannot tell (``input_size``, ``fold_div``, ``placement``...).
    """
    from .layouts import interpret

    path = Path(path)
    obj, sha = read_checkpoint_file(path)
    # the file's name and its folder's: the original code names the run folder
    # (``TSM_..._segment8_e50/ckpt.best.pth.tar``), mmengine the work dir after the config
    found = interpret(obj, str(Path(path.parent.name) / path.name), overrides or {})
    check_fits(found.state_dict, found.config)
    skipped = unused_entries(obj)
    if skipped:
        log.info("%s: weights read from 'state_dict'; skipped %s (not needed to compile)", path, ", ".join(skipped))
    log.info("loaded %s checkpoint %s: %s", found.layout, path, found.config)
    return LoadedCheckpoint(config=found.config, state_dict=found.state_dict, source=str(path), sha256=sha,
                            layout=found.layout, labels=found.labels, task=found.task)


# top-level entries some layout reads (see :mod:`.layouts` and :mod:`.offline`); the rest is training state
USED_ENTRIES = ("tsm_deploy_format", "config", "state_dict", "labels", "task", "meta", "arch")


def unused_entries(obj: Any) -> list[str]:
    """The top-level entries of a ``{"state_dict": ...}`` checkpoint that no layout reads (mmengine's
    ``message_hub``, ``optimizer``, ``param_schedulers``; the original code's ``optimizer``, ``epoch``...)."""
    if not isinstance(obj, Mapping) or "state_dict" not in obj:
        return []
    return [k if isinstance(k, str) and k.isprintable() else repr(k)[:40] for k in obj if k not in USED_ENTRIES]


def resolve_checkpoint(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> LoadedCheckpoint:
    """A checkpoint file if given, else the default model (with ``overrides`` applied to its config)."""
    from .default import default_checkpoint, default_config

    if path is None:
        return default_checkpoint(replace(default_config(), **(overrides or {})))
    return load_checkpoint(path, overrides)


def reference_checkpoint(
    compiled_model: Mapping[str, Any], path: str | Path | None, overrides: Mapping[str, Any] | None = None
) -> LoadedCheckpoint:
    """The model to compare a compiled artifact against, given the manifest's ``model`` section.

    Without a file: the default model rebuilt at the artifact's exact configuration, as it was
    compiled. With a file: that checkpoint, with the input size, fold and segments the artifact was
    compiled with unless ``overrides`` say otherwise.
    """
    from .default import default_checkpoint

    compiled = {k: v for k, v in compiled_model.items() if k in {f.name for f in fields(ModelConfig)}}
    if path is None:
        try:
            config = ModelConfig.from_dict({**compiled, **(overrides or {})})
        except (TypeError, ValueError) as exc:
            raise TsmDeployError(f"the artifact's model config cannot be rebuilt by this version ({exc})") from None
        return default_checkpoint(config)
    defaults = {k: compiled[k] for k in ("input_size", "fold_div", "placement", "n_segment") if k in compiled}
    return load_checkpoint(path, {**defaults, **(overrides or {})})


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


from .default import DEFAULT_SEED, default_checkpoint, default_config  # noqa: E402  (needs LoadedCheckpoint)

__all__ = [
    "DEFAULT_SEED",
    "FORMAT_VERSION",
    "LoadedCheckpoint",
    "check_fits",
    "default_checkpoint",
    "default_config",
    "load_checkpoint",
    "mismatch_summary",
    "reference_checkpoint",
    "resolve_checkpoint",
    "save_checkpoint",
    "serialise_checkpoint",
    "sha256_bytes",
    "unused_entries",
]
