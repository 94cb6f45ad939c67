"""On the device: ``python3 -m tsm_deploy.runtime ARTIFACT [...]``.

Three modes, standard library + numpy + TVM runtime only:

* default: stream ``--frames`` seeded camera-sized frames (or ``--video`` frames when PyAV is
  installed), print the top-1 per frame and the per-frame latency;
* ``--inputs frames.npy --outputs out.npz``: run prepared frames ``(N, 1, 3, S, S)`` in order from
  zero buffers and save every frame's logits and buffers (what ``tsm-deploy verify --emulate`` and
  remote checks compare against PyTorch on the host);
* ``--check``: load the artifact (sha256, format version) and exit.

Exit codes: 0 ok, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import numpy as np

from ..errors import TsmDeployError
from .stream import DEFAULT_HISTORY, StreamingModel

log = logging.getLogger("tsm_deploy.runtime")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python3 -m tsm_deploy.runtime", description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", help="artifact directory (manifest.json + module)")
    parser.add_argument("--frames", type=int, default=32, help="frames to stream (default 32)")
    parser.add_argument("--history", type=int, default=DEFAULT_HISTORY, help="average logits over N frames")
    parser.add_argument("--video", help="stream a video file (needs PyAV)")
    parser.add_argument("--inputs", help="prepared frames .npy (N, 1, 3, S, S) to run in order")
    parser.add_argument("--outputs", help="where to save logits and buffers (.npz) for --inputs")
    parser.add_argument("--check", action="store_true", help="only load and check the artifact")
    parser.add_argument("--threads", type=int, default=None, help="TVM CPU threads (default: the artifact's cores)")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


def run_inputs(model: StreamingModel, inputs: str, outputs: str) -> None:
    frames = np.load(inputs)
    model.reset()
    arrays: dict[str, np.ndarray] = {}
    for i, frame in enumerate(frames):
        arrays[f"logits_{i}"] = model.run_prepared(np.ascontiguousarray(frame, dtype=np.float32))
        for j, buffer in enumerate(model.buffers()):
            arrays[f"buffer_{i}_{j}"] = buffer
        log.info("frame %d/%d", i + 1, len(frames))
    np.savez(outputs, count=np.array(len(frames)), **arrays)


def _frames(args: argparse.Namespace):
    if args.video:
        try:
            import av
        except ImportError:
            raise TsmDeployError("--video needs PyAV (pip install av)") from None
        with av.open(args.video) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i >= args.frames:
                    return
                yield frame.to_ndarray(format="rgb24")
        return
    rng = np.random.default_rng(0)
    for _ in range(args.frames):
        yield rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)


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


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        model = StreamingModel(args.artifact, history=args.history, threads=args.threads)
        if args.check:
            print(f"ok: {args.artifact} ({model.manifest.target['name']}, {model.manifest.model['arch']})")
        elif args.inputs:
            if not args.outputs:
                raise TsmDeployError("--inputs needs --outputs")
            run_inputs(model, args.inputs, args.outputs)
        else:
            stream(model, args)
    except TsmDeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
