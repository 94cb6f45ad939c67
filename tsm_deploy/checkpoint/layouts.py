"""Which layout a checkpoint object is in, and the model configuration it implies.

* ``tsm-deploy``: ``{"tsm_deploy_format": 1, "config": {...}, "state_dict": {...}[, "labels", "task"]}``;
* ``state-dict``: the original online demo's bare state dict (``mobilenetv2_jester_online.pth.tar``);
* ``tsm-training``: the original training code's ``{"state_dict": ..., "epoch": ..., "arch": ...}``
  with keys prefixed ``module.`` (DataParallel) or not, for the online MobileNetV2;
* ``tsm-original``: the original's offline TSN checkpoints (``base_model.*``, ``new_fc.*``) and
  ``mmaction2``: MMAction2's TSM (``backbone.*``, ``cls_head.fc_cls.*``), read by :mod:`.offline`,
  which infers architecture, segments, placement and pooling from keys, shapes, meta and file name.

Class count and width are read off the tensor shapes where the layout does not store them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Mapping

import torch

from ..errors import TsmDeployError
from ..models import ONLINE_MOBILENET_V2, ModelConfig
from .core import FORMAT_VERSION, closest_width, expected_shapes
from .offline import convert_offline_checkpoint, offline_layout

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Interpreted:
    config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    layout: str
    labels: tuple[str, ...] | None = None
    task: dict[str, Any] | None = None


def strip_prefix(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    if state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def _tensor_dict(state: Any, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(state, Mapping) or not state:
        raise TsmDeployError(f"{what} is not a non-empty state dict")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise TsmDeployError(f"{what} holds {len(bad)} entries that are not named tensors (e.g. {str(bad[0])[:60]!r})")
    return dict(state)


def interpret(obj: Any, filename: str, overrides: Mapping[str, Any]) -> Interpreted:
    if not isinstance(obj, Mapping):
        raise TsmDeployError(f"checkpoint holds a {type(obj).__name__}, not a state dict")
    if "tsm_deploy_format" in obj:
        return _own(obj, overrides)
    if offline_layout(obj) is not None:
        return _offline(obj, filename, overrides)
    if "state_dict" in obj:
        state = strip_prefix(_tensor_dict(obj["state_dict"], "the checkpoint's 'state_dict'"), "module.")
        return _online_mobilenet(state, "tsm-training", overrides)
    return _online_mobilenet(strip_prefix(_tensor_dict(obj, "the checkpoint"), "module."), "state-dict", overrides)


def _own(obj: Mapping[str, Any], overrides: Mapping[str, Any]) -> Interpreted:
    if obj["tsm_deploy_format"] != FORMAT_VERSION:
        raise TsmDeployError(f"tsm-deploy checkpoint format {obj['tsm_deploy_format']!r} is not supported")
    state = _tensor_dict(obj.get("state_dict"), "the checkpoint's 'state_dict'")
    try:
        config = ModelConfig.from_dict({**dict(obj.get("config") or {}), **overrides})
    except (TypeError, ValueError) as exc:
        raise TsmDeployError(f"the checkpoint has a bad config: {' '.join(str(exc).split())}") from None
    labels = obj.get("labels")
    if labels is not None and not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
        raise TsmDeployError("the checkpoint's labels are not a list of strings")
    task = obj.get("task")
    if task is not None and not isinstance(task, Mapping):
        raise TsmDeployError("the checkpoint's task is not a dictionary")
    return Interpreted(config, state, "tsm-deploy", tuple(labels) if labels else None, dict(task) if task else None)


def _offline(obj: Mapping[str, Any], filename: str, overrides: Mapping[str, Any]) -> Interpreted:
    """An original or MMAction2 offline checkpoint: what the file says, the user's options fill the rest
    (and win for what the weights do not fix: input size, segments, fold)."""
    converted = convert_offline_checkpoint(obj, filename)
    for note in converted.notes:
        log.info("%s", note)
    defaults = ModelConfig()
    options = converted.build_options(
        input_size=overrides.get("input_size", defaults.input_size),
        n_segment=overrides.get("n_segment", defaults.n_segment),
        fold_div=overrides.get("fold_div", defaults.fold_div),
    )
    for key in ("n_segment", "fold_div"):
        if key in overrides:
            options[key] = overrides[key]
    try:
        config = ModelConfig.from_dict({k: options[k] for k in options if k in ModelConfig.__dataclass_fields__})
    except (TypeError, ValueError) as exc:
        raise TsmDeployError(f"bad model option: {' '.join(str(exc).split())}") from None
    return Interpreted(config, converted.state_dict, converted.layout, converted.labels)


def _online_mobilenet(state: dict[str, torch.Tensor], layout: str, overrides: Mapping[str, Any]) -> Interpreted:
    """A bare state dict does not say its class count or width; read them off the tensor shapes."""
    if "classifier.weight" not in state or state["classifier.weight"].ndim != 2:
        raise TsmDeployError(
            f"checkpoint does not look like an online TSM-MobileNetV2 (no classifier.weight; first key: {next(iter(state), None)})"
        )
    try:
        base = replace(ModelConfig(), **overrides)
    except TypeError as exc:
        raise TsmDeployError(f"bad model option: {exc}") from None
    config = replace(base, arch=ONLINE_MOBILENET_V2, n_class=int(state["classifier.weight"].shape[0]))
    width = closest_width(state, lambda w: expected_shapes(replace(config, width_mult=w)))
    return Interpreted(replace(config, width_mult=width), state, layout)  # load_checkpoint checks the fit
