#!/usr/bin/env python
"""Held-out accuracy of compiled artifacts of the default model on its own task, beside PyTorch fp32:
what int8 costs in answers, measured on the artifact itself (streamed frame by frame, the state fed
back, a fresh state per clip).

    .venv/bin/python scripts/task_accuracy.py ARTIFACT [ARTIFACT ...] [--clips 660] [--json PATH]

Each clip of the held-out set (the seed the training report evaluates on) goes through the runtime
frame by frame; the metrics are the training report's (`tsm_deploy.train.evaluate.summarize`): top-1
by average consensus over the clip's frames, order-pair accuracy, per-frame top-1. Also reported: how
often each artifact's clip answer equals PyTorch fp32's, and the share of the demo video's script
segments its label timeline gets right (`scripts/demo.py`'s video and scoring; the demo's bar: 90 %).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))  # demo.py's video

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


def demo_score(artifact: Path, video: Path, script: list, fps: float, frames_per_action: int) -> float:
    """The share of the demo script's segments the artifact's label timeline gets right (as scripts/demo.py)."""
    from tsm_deploy.runtime import StreamingModel
    from tsm_deploy.runtime.recognise import recognise_video
    from tsm_deploy.runtime.timeline import score_segments

    model = StreamingModel(artifact, history=None)
    recognition = recognise_video(model, video, min_duration=0.5)
    rows = score_segments(recognition.timeline, script, fps=fps, ignore_first=min(model.history, frames_per_action // 2))
    return sum(r.correct for r in rows) / len(rows)


def demo_video(folder: Path, task: dict) -> tuple[Path, list, float, int]:
    """The demo's sample video (its seed, actions and frame doubling), written into ``folder``."""
    from demo import ACTIONS

    from tsm_deploy.data.video_io import write_video

    size, fps, per_action = int(task["frame_size"][0]), float(task["frame_rate"]), int(task["frames_per_clip"])
    frames, script = synthetic.make_scripted_video(2026, ACTIONS, per_action, size)
    video = folder / "demo.mp4"
    write_video(frames.repeat(2, axis=1).repeat(2, axis=2), video, fps)
    return video, script, fps, per_action


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
    tmp = tempfile.TemporaryDirectory(prefix="tsm-accuracy-")
    video, script, fps, per_action = demo_video(Path(tmp.name), checkpoint.task)
    for artifact in args.artifacts:
        manifest = read_manifest(artifact)
        got = artifact_logits(artifact, seed, n_clips, n_frames, size)
        name = f"{artifact.name} ({manifest.precision}, {manifest.target.name})"
        results[name] = {**summarize(got, labels),
                         "clip_answer_agreement_with_pytorch_fp32": float(np.mean(got.mean(1).argmax(1) == reference)),
                         "frame_answer_agreement_with_pytorch_fp32": float(np.mean(got.argmax(2) == want.argmax(2))),
                         "demo_timeline_right": demo_score(artifact, video, script, fps, per_action)}
    tmp.cleanup()
    print(f"{'runner':<44} {'top-1':>7} {'pairs':>7} {'= fp32 clip':>11} {'= fp32 frame':>12} {'demo':>6}")
    for name, r in results.items():
        shown = [f"{r[k]:.1%}" if k in r else "" for k in ("clip_answer_agreement_with_pytorch_fp32",
                                                           "frame_answer_agreement_with_pytorch_fp32", "demo_timeline_right")]
        print(f"{name:<44} {r['top1']:>7.1%} {r['pair_accuracy']:>7.1%} {shown[0]:>11} {shown[1]:>12} {shown[2]:>6}")
    if args.json:
        summary = {"held_out": {"seed": seed, "clips": n_clips, "frames_per_clip": n_frames}, "machine": machine_info(),
                   "results": {k: {m: v for m, v in r.items() if m not in ("confusion", "per_class")}
                               for k, r in results.items()}}
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
