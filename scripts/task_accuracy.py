#!/usr/bin/env python
"""Held-out accuracy of compiled artifacts of the default model on its own task, beside PyTorch fp32:
what int8 costs in answers, measured on the artifact itself (streamed frame by frame, the state fed
back, a fresh state per clip).

    .venv/bin/python scripts/task_accuracy.py ARTIFACT [ARTIFACT ...] [--clips 660] [--json PATH]

Each clip of the held-out set (the seed the training report evaluates on) goes through the runtime
frame by frame; the metrics are the training report's (`tsm_deploy.train.evaluate.summarize`): top-1
by average consensus over the clip's frames, order-pair accuracy, per-frame top-1. Also reported: how
often each artifact's clip answer equals PyTorch fp32's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tsm_deploy.checkpoint.default import trained_checkpoint  # noqa: E402
from tsm_deploy.data import synthetic  # noqa: E402
from tsm_deploy.evaluate.bench.machine import machine_info  # noqa: E402
from tsm_deploy.evaluate.runners.local import ArtifactRunner  # noqa: E402
from tsm_deploy.runtime.manifest import read_manifest  # noqa: E402
from tsm_deploy.train.evaluate import clip_logits, summarize  # noqa: E402
from tsm_deploy.train.loop import frame_size, preprocess_clips  # noqa: E402

BATCH = 22


def artifact_logits(artifact: Path, seed: int, n_clips: int, n_frames: int, input_size: int) -> np.ndarray:
    """Per-frame logits ``(n_clips, n_frames, C)`` of the artifact, each clip streamed from a zero state."""
    runner = ArtifactRunner(artifact, "artifact")
    out = []
    for start in range(0, n_clips, BATCH):
        count = min(BATCH, n_clips - start)
        clips, _ = synthetic.make_batch(seed, start, count, n_frames, frame_size(input_size))
        frames = preprocess_clips(clips, input_size).numpy().reshape(count, n_frames, 1, 3, input_size, input_size)
        for clip in frames:
            out.append(np.stack([step.logits.reshape(-1) for step in runner.run(clip)]))
    return np.stack(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifacts", nargs="+", type=Path)
    parser.add_argument("--clips", type=int, default=None, help="held-out clips (default: the training report's)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    checkpoint = trained_checkpoint()
    if checkpoint is None:
        parser.error("the trained default model is not in this checkout")
    report = json.loads((ROOT / "tsm_deploy" / "default_model" / "training_report.json").read_text())
    held_out = report["models"]["online TSM"]["held_out"]
    seed, n_clips = int(held_out["seed"]), args.clips or int(held_out["clips"])
    n_frames, size = int(checkpoint.task["frames_per_clip"]), checkpoint.config.input_size
    want, labels = clip_logits(checkpoint.model(), seed, n_clips, n_frames, size)
    results = {"pytorch fp32": summarize(want, labels)}
    reference = want.mean(1).argmax(1)
    for artifact in args.artifacts:
        manifest = read_manifest(artifact)
        got = artifact_logits(artifact, seed, n_clips, n_frames, size)
        name = f"{artifact.name} ({manifest.precision}, {manifest.target.name})"
        results[name] = {**summarize(got, labels),
                         "clip_answer_agreement_with_pytorch_fp32": float(np.mean(got.mean(1).argmax(1) == reference)),
                         "frame_answer_agreement_with_pytorch_fp32": float(np.mean(got.argmax(2) == want.argmax(2)))}
    print(f"{'runner':<44} {'top-1':>7} {'pairs':>7} {'= fp32 clip':>11} {'= fp32 frame':>12}")
    for name, r in results.items():
        clip = r.get("clip_answer_agreement_with_pytorch_fp32")
        frame = r.get("frame_answer_agreement_with_pytorch_fp32")
        print(f"{name:<44} {r['top1']:>7.1%} {r['pair_accuracy']:>7.1%} "
              f"{'' if clip is None else f'{clip:.1%}':>11} {'' if frame is None else f'{frame:.1%}':>12}")
    if args.json:
        summary = {"held_out": {"seed": seed, "clips": n_clips, "frames_per_clip": n_frames}, "machine": machine_info(),
                   "results": {k: {m: v for m, v in r.items() if m not in ("confusion", "per_class")}
                               for k, r in results.items()}}
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
