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

from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Mapping

from ..errors import TsmDeployError
from ..models import ModelConfig
from .core import (
    FORMAT_VERSION,
    LoadedCheckpoint,
    check_fits,
    mismatch_summary,
    misfit,
    save_checkpoint,
    serialise_checkpoint,
    unused_entries,
)
from .default import DEFAULT_SEED, default_checkpoint, default_config
from .load import load_checkpoint
from .reader import sha256_bytes


def resolve_checkpoint(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> LoadedCheckpoint:
    """A checkpoint file if given, else the default model (with ``overrides`` applied to its config)."""
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
    compiled = {k: v for k, v in compiled_model.items() if k in {f.name for f in fields(ModelConfig)}}
    if path is None:
        try:
            config = ModelConfig.from_dict({**compiled, **(overrides or {})})
        except (TypeError, ValueError) as exc:
            raise TsmDeployError(f"the artifact's model config cannot be rebuilt by this version ({exc})") from None
        return default_checkpoint(config)
    defaults = {k: compiled[k] for k in ("input_size", "fold_div", "placement", "n_segment") if k in compiled}
    return load_checkpoint(path, {**defaults, **(overrides or {})})


__all__ = [
    "DEFAULT_SEED",
    "FORMAT_VERSION",
    "LoadedCheckpoint",
    "check_fits",
    "default_checkpoint",
    "default_config",
    "load_checkpoint",
    "mismatch_summary",
    "misfit",
    "reference_checkpoint",
    "resolve_checkpoint",
    "save_checkpoint",
    "serialise_checkpoint",
    "sha256_bytes",
    "unused_entries",
]
