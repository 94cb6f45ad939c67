"""On the device: ``python3 -m tsm_deploy.runtime ARTIFACT [...]``.

Three modes, standard library + numpy + TVM runtime only:

* default: stream ``--frames`` seeded camera-sized frames, print the top-1 per frame and the
  per-frame latency; ``--video FILE`` (needs PyAV): print the label timeline of the video;
* ``--inputs inputs.npy --outputs out.npz``: run prepared inputs in order (stream: frames
  ``(N, 1, 3, S, S)`` from zero buffers; clip: clips ``(N, 1, T, 3, S, S)``) and save every step's
  logits and state (what ``tsm-deploy verify --emulate`` compares against PyTorch on the host);
* ``--check``: load the artifact (sha256, format version) and exit.

Exit codes: 0 ok, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import numpy as np

from . import load_model
from .clip import ClipModel
from .errors import TsmDeployError
from .preprocess import camera_frames
from .stream import DEFAULT_HISTORY, StreamingModel

log = logging.getLogger("tsm_deploy.runtime")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python3 -m tsm_deploy.runtime", description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", help="artifact directory (manifest.json + module)")
    parser.add_argument("--frames", type=int, default=32, help="frames to stream (default 32)")
    parser.add_argument("--history", type=int, default=None,
                        help=f"average logits over N frames (default: the model's recommended history, else {DEFAULT_HISTORY})")
    parser.add_argument("--video", help="stream a video file (needs PyAV)")
    parser.add_argument("--inputs", help="prepared frames .npy (N, 1, 3, S, S) to run in order")
    parser.add_argument("--outputs", help="where to save logits and buffers (.npz) for --inputs")
    parser.add_argument("--check", action="store_true", help="only load and check the artifact")
    parser.add_argument("--threads", type=int, default=None, help="TVM CPU threads (default: the artifact's cores)")
    parser.add_argument("--allow-non-finite", action="store_true",
                        help="run prepared frames holding NaN or infinity instead of refusing them")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def run_inputs(model: StreamingModel | ClipModel, inputs: str, outputs: str) -> None:
    """Every step's logits (``logits_i``) and, for a stream, state (``buffer_i_j``) into one .npz."""
    steps = np.load(inputs)
    arrays: dict[str, np.ndarray] = {}
    if isinstance(model, StreamingModel):
        model.reset()
    for i, step in enumerate(steps):
        if isinstance(model, ClipModel):
            arrays[f"logits_{i}"] = model.predict(np.ascontiguousarray(step)).logits
        else:
            arrays[f"logits_{i}"] = model.run_prepared(np.ascontiguousarray(step))
            for j, buffer in enumerate(model.buffers()):
                arrays[f"buffer_{i}_{j}"] = buffer
        log.info("step %d/%d", i + 1, len(steps))
    np.savez(outputs, count=np.array(len(steps)), **arrays)


def _frames(args: argparse.Namespace):
    for i in range(args.frames):  # one at a time: a long stream on the device holds one frame, not all
        yield camera_frames(1, seed=i)[0]


def stream(model: StreamingModel, args: argparse.Namespace) -> None:
    times = []
    for i, frame in enumerate(_frames(args)):
        start = time.perf_counter()
        result = model.step(frame)
        times.append((time.perf_counter() - start) * 1000)
        label = f" {result.label}" if result.label else ""
        print(f"{i:>4} top1={result.top1}{label} {times[-1]:.1f} ms")
    if times:
        print(f"median {np.median(times):.1f} ms/frame ({1000 / np.median(times):.1f} fps) over {len(times)} frames")


def clips(model: ClipModel, args: argparse.Namespace) -> None:
    """Frames in windows of T (one per segment), one prediction per window."""
    window: list[np.ndarray] = []
    for frame in _frames(args):
        window.append(frame)
        if len(window) == model.segments:
            start = time.perf_counter()
            result = model.predict(window)
            label = f" {result.label}" if result.label else ""
            print(f"clip top1={result.top1}{label} {(time.perf_counter() - start) * 1000:.1f} ms")
            window = []


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        model = load_model(args.artifact, history=args.history, threads=args.threads, allow_non_finite=args.allow_non_finite)
        if args.check:
            print(f"ok: {args.artifact} ({model.manifest.target.name}, {model.manifest.model.arch})")
        elif args.video:
            from .recognise import recognise_video

            print(recognise_video(model, args.video).timeline.table())
        elif args.inputs:
            if not args.outputs:
                raise TsmDeployError("--inputs needs --outputs")
            run_inputs(model, args.inputs, args.outputs)
        else:
            stream(model, args) if isinstance(model, StreamingModel) else clips(model, args)
    except TsmDeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
