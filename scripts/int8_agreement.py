#!/usr/bin/env python
"""How far int8 moves a stream model's answers from fp32, and which part of the quantization moves
them: PyTorch fp32 against the fake-quantized model that the int8 artifact computes
(:func:`tsm_deploy.quantize.fake_quantize`), over seeded frames streamed with the state fed back.

    .venv/bin/python scripts/int8_agreement.py [--frames 100] [--json PATH]

The model is the original online demo's TSM-MobileNetV2 (224, width 1.0, 27 classes) with seeded
random weights (as ``scripts/user_checkpoints.py`` writes it) and its BatchNorm statistics
re-estimated on task frames (cumulative average over a stream: a network whose layers keep unit-scale
activations, as a trained one does). Its calibration and test frames are the default model's task
(synthetic temporal-order clips) at 256 px, centre-cropped to 224 by the model's preprocessing, on
seeds apart from each other.

Rows: the full int8 quantization; weights alone (per-channel int8, activations fp32); activations
alone; activations at convolution inputs only; the full quantization calibrated with other
percentiles. Each row: top-1 agreement with fp32 over the frames, and the largest logit error
relative to the largest |fp32 logit|. The fp32 margins (top-1 minus top-2 logit) say how much a
random network's answer can move: with margins far below the logits' spread, per-channel int8 weights
alone change many answers, which no activation calibration can win back.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tsm_deploy.data import synthetic  # noqa: E402
from tsm_deploy.evaluate.bench.machine import machine_info  # noqa: E402
from tsm_deploy.models import ModelConfig, build_model  # noqa: E402
from tsm_deploy.models.registry import preprocessing  # noqa: E402
from tsm_deploy.quantize.calibrate import calibrate, fake_quantize  # noqa: E402
from tsm_deploy.runtime.preprocess import prepare_frame  # noqa: E402

CONFIG = dict(arch="tsm_mobilenet_v2_online", n_class=27, input_size=224)
SEEDS = {"batchnorm": 11, "calibration": 7, "test": 1000}  # the default model's held-out seed is 1000


def task_frames(config: ModelConfig, seed: int, count: int) -> list[np.ndarray]:
    clips, _ = synthetic.make_batch(seed, 0, -(-count // 8), 8, config.input_size * 256 // 224)
    preprocess = preprocessing(config)
    return [prepare_frame(image, preprocess) for clip in clips for image in clip][:count]


def stream(model: nn.Module, frames: list[np.ndarray]) -> np.ndarray:
    out, buffers = [], model.zero_buffers()
    with torch.no_grad():
        for frame in frames:
            logits, *buffers = model(torch.as_tensor(frame), *buffers)
            out.append(logits[0].numpy())
    return np.stack(out)


def estimate_batchnorm(model: nn.Module, frames: list[np.ndarray]) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the stream
            m.train()
    stream(model, frames)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=100, help="test frames streamed (default 100)")
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args()

    torch.manual_seed(0)
    config = ModelConfig.from_dict(CONFIG)
    model = estimate_batchnorm(build_model(config), task_frames(config, SEEDS["batchnorm"], 64))
    calibration = task_frames(config, SEEDS["calibration"], 128)
    test = task_frames(config, SEEDS["test"], args.frames)
    reference = stream(model, test)
    ordered = np.sort(reference, axis=1)
    spec = calibrate(model, calibration)
    variants = {
        "int8 (percentile 99.99: what compile builds)": fake_quantize(model, spec),
        "weights only (per-channel int8)": fake_quantize(model, None),
        "activations only": fake_quantize(model, spec, weights=False),
        "activations at convolution inputs only": fake_quantize(model, spec, weights=False,
                                                                activations=lambda key: not key.endswith(":out")),
    }
    for percentile in (100.0, 99.999, 99.9):
        variants[f"int8, percentile {percentile:g}"] = fake_quantize(model, calibrate(model, calibration, percentile))
    rows = []
    for name, variant in variants.items():
        logits = stream(variant, test)
        rows.append({"variant": name, "top1_agreement": float((logits.argmax(1) == reference.argmax(1)).mean()),
                     "max_rel_error": float(np.abs(logits - reference).max() / np.abs(reference).max())})
    report = {
        "model": {**CONFIG, "weights": "seeded random (torch seed 0), BatchNorm re-estimated on 64 task frames"},
        "frames": args.frames, "seeds": SEEDS,
        "fp32_margin_median": float(np.median(ordered[:, -1] - ordered[:, -2])),
        "fp32_logit_std": float(reference.std()),
        "rows": rows, "machine": machine_info(),
    }
    print(f"fp32: median top-1 margin {report['fp32_margin_median']:.4f}, logits' std {report['fp32_logit_std']:.4f}")
    print(f"{'variant':48s} {'top-1 agreement':>16s} {'max rel error':>14s}")
    for row in rows:
        print(f"{row['variant']:48s} {row['top1_agreement']:16.0%} {row['max_rel_error']:14.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
