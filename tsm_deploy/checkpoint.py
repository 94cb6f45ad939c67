"""Checkpoints -> (ModelConfig, state_dict), with one clear error for each way a file can be wrong.

Layouts understood:

* tsm-deploy's own: ``{"tsm_deploy_format": 1, "config": {...}, "state_dict": {...}}``;
* the original online demo (``mobilenetv2_jester_online.pth.tar``): a bare state dict;
* the original training code: ``{"state_dict": ..., "epoch": ..., "arch": ...}``, keys prefixed
  with ``module.`` (DataParallel).

Offline TSN-wrapped checkpoints (``base_model.*``/``new_fc.*``) are recognised and refused with a
clear message until the offline models land. Files are loaded with ``weights_only=True``: a .pth
from the internet must not run code.
"""

from __future__ import annotations

import hashlib
import io
import logging
import pickle
import re
import zipfile
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .atomic import atomic_write_bytes
from .errors import TsmDeployError, one_line
from .models import ONLINE_MOBILENET_V2, ModelConfig, build_model

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_SEED = 0
BN_VARIANCE_FLOOR = 1e-2
DEFAULT_CONFIG = ModelConfig()  # online TSM-MobileNetV2, 27 classes (Jester-sized), 224x224
# width multipliers tried when a bare state dict does not say which one it was trained with
_WIDTH_CANDIDATES = (1.0, 0.5, 0.75, 1.4, 0.35, 1.3)


@dataclass(frozen=True)
class LoadedCheckpoint:
    config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    source: str  # path, or a description of where the weights came from
    sha256: str  # of the file (or of the serialised default weights)
    layout: str  # which layout was recognised

    def model(self) -> nn.Module:
        model = build_model(self.config)
        model.load_state_dict(self.state_dict, strict=True)
        return model.eval()


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_checkpoint(path: Path) -> tuple[Any, str]:
    if not path.exists():
        raise TsmDeployError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise TsmDeployError(f"checkpoint is not a file: {path}")
    data = path.read_bytes()
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        blocked = re.search(r"GLOBAL (\S+)", str(exc))
        if blocked:
            raise TsmDeployError(
                f"refusing to load {path}: it references {blocked.group(1)}, not only tensors and plain containers "
                "(loading it could run code)"
            ) from None
        raise TsmDeployError(f"cannot read checkpoint {path}: not a PyTorch checkpoint or truncated") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        first = one_line(exc)
        raise TsmDeployError(f"cannot read checkpoint {path}: not a PyTorch checkpoint or truncated ({first})") from None
    return obj, _sha256_bytes(data)


def _strip_prefix(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def _unwrap(obj: Any) -> tuple[dict[str, Any], dict[str, Any] | None, str]:
    """-> (state_dict, stored config or None, layout name)."""
    if not isinstance(obj, Mapping):
        raise TsmDeployError(f"checkpoint holds a {type(obj).__name__}, not a state dict")
    if "tsm_deploy_format" in obj:
        if obj["tsm_deploy_format"] != FORMAT_VERSION:
            raise TsmDeployError(f"tsm-deploy checkpoint format {obj['tsm_deploy_format']} is not supported")
        return dict(obj["state_dict"]), dict(obj["config"]), "tsm-deploy"
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        return _strip_prefix(obj["state_dict"], "module."), None, "tsm-training"
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return _strip_prefix(obj, "module."), None, "state-dict"
    raise TsmDeployError("checkpoint is neither a state dict nor a {'state_dict': ...} dictionary")


def _shape_signature(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in build_model(config).state_dict().items()}


def _check_fits(state: Mapping[str, torch.Tensor], config: ModelConfig) -> None:
    expected = _shape_signature(config)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        detail = f"missing {len(missing)} keys (e.g. {missing[0]})" if missing else ""
        if unexpected:
            detail += ("; " if detail else "") + f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})"
        raise TsmDeployError(f"checkpoint does not match architecture {config.arch}: {detail}")
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise TsmDeployError(
                f"checkpoint does not match {config.arch} (n_class={config.n_class}, width_mult={config.width_mult}): "
                f"{key} has shape {tuple(state[key].shape)}, expected {shape}"
            )


def _infer_config(state: Mapping[str, torch.Tensor], base: ModelConfig) -> ModelConfig:
    """A bare state dict does not say its class count or width; read them off the tensor shapes."""
    if any(k.startswith("base_model.") for k in state):
        raise TsmDeployError(
            "this is an offline TSN-wrapped TSM checkpoint (base_model.*); only online MobileNetV2 checkpoints "
            "are supported so far"
        )
    if "classifier.weight" not in state:
        raise TsmDeployError(
            f"checkpoint does not look like an online TSM-MobileNetV2 (no classifier.weight; first key: {next(iter(state), None)})"
        )
    config = replace(base, arch=ONLINE_MOBILENET_V2, n_class=int(state["classifier.weight"].shape[0]))
    for width in _WIDTH_CANDIDATES:
        candidate = replace(config, width_mult=width)
        try:
            _check_fits(state, candidate)
            return candidate
        except TsmDeployError:
            continue
    _check_fits(state, config)  # raises the most telling error, at width 1.0
    return config


def load_checkpoint(path: str | Path, overrides: Mapping[str, Any] | None = None) -> LoadedCheckpoint:
    """Read a checkpoint safely and work out the model it belongs to.

    ``overrides`` sets what weights cannot tell (``input_size``, ``fold_div``, ``placement``).
    """
    path = Path(path)
    obj, sha = _read_checkpoint(path)
    state, stored, layout = _unwrap(obj)
    base = replace(DEFAULT_CONFIG, **(overrides or {}))
    if stored is not None:
        try:
            config = ModelConfig.from_dict({**stored, **(overrides or {})})
        except (TypeError, ValueError) as exc:
            raise TsmDeployError(f"checkpoint {path} has a bad config: {exc}") from None
        _check_fits(state, config)
    else:
        config = _infer_config(state, base)
    log.info("loaded %s checkpoint %s: %s", layout, path, config)
    return LoadedCheckpoint(config=config, state_dict=state, source=str(path), sha256=sha, layout=layout)


def default_checkpoint(config: ModelConfig = DEFAULT_CONFIG, seed: int = DEFAULT_SEED) -> LoadedCheckpoint:
    """The embedded default model: seeded random weights, not a trained model.

    BatchNorm statistics are calibrated on seeded noise and the classifier uses Xavier init, so that
    activations and logits are O(1) like a trained network's; with the original init, logits are ~1e-4
    and a 1e-4 parity tolerance would say nothing. Calibration on noise leaves ~10 % of channels with
    variance < 5e-4, whose folded BN scale (~50x) amplifies fp32 rounding until even ONNX Runtime
    differs from PyTorch by 5e-5; the variance floor keeps the default model as well conditioned as a
    trained one, so parity measures the compiler and not the random weights.
    """
    torch.manual_seed(seed)
    model = build_model(config)
    generator = torch.Generator().manual_seed(seed + 1)
    nn.init.xavier_uniform_(model.classifier.weight, generator=generator)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average over the calibration pass
            module.reset_running_stats()
            module.weight.data.uniform_(0.5, 1.5, generator=generator)
            module.bias.data.normal_(0.0, 0.1, generator=generator)
    model.train()
    with torch.no_grad():
        model.forward_clip(torch.randn(8, 3, config.input_size, config.input_size, generator=generator))
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_var.clamp_(min=BN_VARIANCE_FLOOR)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return LoadedCheckpoint(
        config=config,
        state_dict=state,
        source=f"default model (seeded random weights, seed {seed}; not trained)",
        sha256=_sha256_bytes(buffer.getvalue()),
        layout="default",
    )


def resolve_checkpoint(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> LoadedCheckpoint:
    """A checkpoint file if given, else the default model (with ``overrides`` applied to its config)."""
    if path is None:
        return default_checkpoint(replace(DEFAULT_CONFIG, **(overrides or {})))
    return load_checkpoint(path, overrides)


def reference_checkpoint(
    compiled_model: Mapping[str, Any], path: str | Path | None, overrides: Mapping[str, Any] | None = None
) -> LoadedCheckpoint:
    """The model to compare a compiled artifact against, given the manifest's ``model`` section.

    Without a file: the default model rebuilt at the artifact's exact configuration (width, classes,
    size), as it was compiled. With a file: that checkpoint, with the input size and fold the
    artifact was compiled with unless ``overrides`` say otherwise.
    """
    compiled = {k: v for k, v in compiled_model.items() if k in {f.name for f in fields(ModelConfig)}}
    if path is None:
        try:
            config = ModelConfig.from_dict({**compiled, **(overrides or {})})
        except (TypeError, ValueError) as exc:
            raise TsmDeployError(f"the artifact's model config cannot be rebuilt by this version ({exc})") from None
        return default_checkpoint(config)
    defaults = {k: compiled[k] for k in ("input_size", "fold_div", "placement") if k in compiled}
    return load_checkpoint(path, {**defaults, **(overrides or {})})


def save_checkpoint(checkpoint: LoadedCheckpoint, path: str | Path) -> None:
    """Write a tsm-deploy checkpoint (config + weights) atomically."""
    buffer = io.BytesIO()
    torch.save(
        {"tsm_deploy_format": FORMAT_VERSION, "config": checkpoint.config.to_dict(), "state_dict": checkpoint.state_dict},
        buffer,
    )
    atomic_write_bytes(Path(path), buffer.getvalue())
