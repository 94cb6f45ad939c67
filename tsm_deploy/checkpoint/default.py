"""The embedded default model: what every command uses when no ``--checkpoint`` is given."""

from __future__ import annotations

import io

import torch
from torch import nn

from ..models import ModelConfig, build_model
from . import LoadedCheckpoint, sha256_bytes

DEFAULT_SEED = 0
BN_VARIANCE_FLOOR = 1e-2
DEFAULT_CONFIG = ModelConfig()  # online TSM-MobileNetV2, 27 classes (Jester-sized), 224x224


def default_config() -> ModelConfig:
    return DEFAULT_CONFIG


def default_checkpoint(config: ModelConfig = DEFAULT_CONFIG, seed: int = DEFAULT_SEED) -> LoadedCheckpoint:
    """Seeded random weights at ``config``: not a trained model.

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
    classifier = _classifier(model)
    if classifier is not None:
        nn.init.xavier_uniform_(classifier.weight, generator=generator)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average over the calibration pass
            module.reset_running_stats()
            module.weight.data.uniform_(0.5, 1.5, generator=generator)
            module.bias.data.normal_(0.0, 0.1, generator=generator)
    model.train()
    with torch.no_grad():
        _calibrate(model, config, generator)
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
        sha256=sha256_bytes(buffer.getvalue()),
        layout="default",
    )


def _classifier(model: nn.Module) -> nn.Linear | None:
    """The final linear layer (``classifier``, ``new_fc`` or ``fc``), whichever the model has."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def _calibrate(model: nn.Module, config: ModelConfig, generator: torch.Generator) -> None:
    """One training-mode pass over seeded noise so BatchNorm statistics are those of real activations."""
    size = config.input_size
    if model.io_kind == "stream":
        model.forward_clip(torch.randn(8, 3, size, size, generator=generator))
    else:
        model(torch.randn(*model.input_shapes()[next(iter(model.input_shapes()))], generator=generator))
