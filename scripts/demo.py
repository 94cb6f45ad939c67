#!/usr/bin/env python
"""The demo `make demo` runs: the embedded default model (online TSM-MobileNetV2 trained on the
synthetic temporal-order task) on a freshly written video, end to end.

1. write a sample video of the task (several actions in a row, H.264 or MPEG-4 through PyAV);
2. compile the default model for this machine with its committed tuning records;
3. run the video through the compiled artifact (thin runtime, frames sampled at the trained rate,
   history smoothing) and print the label timeline; score it against the video's known script;
4. prove parity against PyTorch over a 32-frame stream;
5. time the artifact against ONNX Runtime and PyTorch side by side;
6. write a PNG strip of frames with the predicted labels.

It never trains. Exit 1 if parity fails; the timeline's score against the script is printed beside
the project's 90 % bar. Each action of the sample video fills one training clip (8 frames, 1 s at
8 fps) unless --frames-per-action says otherwise: the training report's scripted streams show how the
model does on slower actions (it is weak at 3 s per action).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tsm_deploy.errors import TsmDeployError  # noqa: E402

log = logging.getLogger("demo")

ACTIONS = ("moving left", "moving right", "growing", "shrinking", "rotating clockwise", "rotating anticlockwise",
           "appearing", "disappearing", "moving up", "moving down", "nothing happens", "moving right")
MIN_SEGMENT_SCORE = 0.9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=ROOT / "out", help="folder for the video, artifact, reports")
    parser.add_argument("--target", default="x86")
    parser.add_argument("--seed", type=int, default=2026, help="seed of the sample video")
    parser.add_argument("--frames-per-action", type=int, default=None,
                        help="default: the model's clip length (an action fills one training clip: 1 s at 8 fps)")
    parser.add_argument("--bench-frames", type=int, default=200)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    try:
        ok = run(args)
    except TsmDeployError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return exc.exit_code
    print(f"demo finished in {time.perf_counter() - start:.0f} s")
    return 0 if ok else 1


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def run(args: argparse.Namespace) -> bool:
    from tsm_deploy.checkpoint import default_checkpoint
    from tsm_deploy.compiler.artifact import compile_artifact, describe
    from tsm_deploy.data import synthetic
    from tsm_deploy.data.video_io import write_video
    from tsm_deploy.evaluate.bench import benchmark, write_report
    from tsm_deploy.evaluate.strip_plot import write_strip_plot
    from tsm_deploy.evaluate.verify import verify_artifact
    from tsm_deploy.evaluate.verify import write_report as write_verify_report
    from tsm_deploy.runtime import StreamingModel
    from tsm_deploy.runtime.recognise import recognise_video
    from tsm_deploy.runtime.timeline import score_segments
    from tsm_deploy.target.targets import load_target

    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = default_checkpoint()
    task = checkpoint.task or {}
    size = int(task.get("frame_size", [112, 112])[0])
    fps = float(task.get("frame_rate", synthetic.FRAME_RATE))
    if args.frames_per_action is None:
        args.frames_per_action = int(task.get("frames_per_clip", synthetic.DEFAULT_FRAMES))

    step(f"1. a sample video: {len(ACTIONS)} actions, {args.frames_per_action} frames each at {fps:g} fps")
    frames, script = synthetic.make_scripted_video(args.seed, ACTIONS, args.frames_per_action, size)
    # H.264 wants even sizes: each pixel doubled, which the runtime's half-pixel bilinear resize back to
    # the trained size undoes exactly (it averages the two copies)
    frames = frames.repeat(2, axis=1).repeat(2, axis=2)
    video = out / "demo.mp4"
    codec = write_video(frames, video, fps)
    print(f"wrote {video} ({codec}, {len(frames)} frames {2 * size}x{2 * size}): " + ", ".join(s["action"] for s in script))

    step(f"2. compile {checkpoint.source} for {args.target}")
    target = load_target(args.target)
    artifact = out / f"demo-{args.target}"
    result = compile_artifact(checkpoint, target, artifact)
    print(describe(result))

    model = StreamingModel(artifact, history=None)  # the history chosen when the model was trained
    history = model.history
    step(f"3. recognise the video with the compiled artifact (thin runtime, logits averaged over {history} frames)")
    recognition = recognise_video(model, video, min_duration=0.5)
    print(recognition.timeline.table())
    ignore = min(history, args.frames_per_action // 2)  # the history is still full of the previous action
    rows = score_segments(recognition.timeline, script, fps=fps, ignore_first=ignore)
    right = sum(r.correct for r in rows) / len(rows)
    print(f"timeline right for {sum(r.correct for r in rows)}/{len(rows)} script segments ({right:.0%}; "
          f"first {ignore} frames of each action not counted: the {history}-frame history still holds the previous one)")
    (out / "demo-timeline.json").write_text(recognition.timeline.to_json())
    write_strip_plot(out / "demo-strip.png", recognition.timeline, recognition.frames, n=12, script=script,
                     script_fps=fps, title="tsm-deploy demo: default model on the sample video")
    print(f"wrote {out / 'demo-timeline.json'} and {out / 'demo-strip.png'}")

    step("4. parity against PyTorch (32 streamed frames, buffers fed back)")
    report = verify_artifact(artifact, checkpoint, frames=32)
    write_verify_report(report, out / "demo-verify.json")
    print(report.table().splitlines()[-1])

    step(f"5. latency side by side ({args.bench_frames} frames each, interleaved)")
    bench = benchmark(artifact, checkpoint, frames=args.bench_frames, warmup=20, shift_overhead=False)
    write_report(bench, out / "demo-bench.json")
    print(bench.table())

    bar = "meets" if right >= MIN_SEGMENT_SCORE else "is below"
    print(f"\n{'OK' if report.passed else 'FAILED'}: parity {'passed' if report.passed else 'FAILED'}; the timeline "
          f"is right for {right:.0%} of the script's segments, which {bar} the {MIN_SEGMENT_SCORE:.0%} bar")
    return report.passed


if __name__ == "__main__":
    sys.exit(main())
