#!/usr/bin/env python3
"""Produce the committed benchmark figures: compile the default model for a target (with its committed
tuning records), time it against ONNX Runtime and PyTorch in one process, and write
``<output>/<target>.json`` and ``<output>/<target>.png``; print the table.

    .venv/bin/python scripts/bench.py --target x86-avx512 [--output benchmarks/] [--frames 300]

Run it on an otherwise idle machine: the JSON records the load average before and after, and a
note when the machine was busy. The target must run on this machine (a CPU target of this arch).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from tsm_deploy.checkpoint import default_checkpoint, resolve_checkpoint
from tsm_deploy.compiler.artifact import compile_artifact
from tsm_deploy.evaluate.bench import DEFAULT_WARMUP, benchmark, write_report
from tsm_deploy.models import ModelConfig
from tsm_deploy.errors import TsmDeployError
from tsm_deploy.target.targets import load_target

MIN_FRAMES = 200
log = logging.getLogger("bench")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True, help="target name (targets/NAME.json)")
    parser.add_argument("--output", type=Path, default=Path("benchmarks"), help="folder for <target>.json/.png")
    parser.add_argument("--frames", type=int, default=MIN_FRAMES, help=f"timed frames per runner (>= {MIN_FRAMES})")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP)
    parser.add_argument("--threads", type=int, default=None, help="default: all cores")
    parser.add_argument("--checkpoint", type=Path, default=None, help="model to time (default: the default model)")
    parser.add_argument("--seeded", default=None, metavar="SIZE,WIDTH,CLASSES",
                        help="time a seeded random online model of this input size, width and class count "
                             "instead (e.g. 224,1.0,27: the earlier full-size default)")
    parser.add_argument("--name", default=None, help="file stem of the report (default: the target name)")
    parser.add_argument("--keep-artifact", type=Path, default=None, help="compile into this folder and keep it")
    parser.add_argument("--frame-size", default=None, metavar="WxH",
                        help="also measure end to end: uint8 camera frames of this size in (TVM: preprocessing compiled "
                             "in; ONNX Runtime and PyTorch: numpy preprocessing), in the same process after the "
                             "network-only run; writes <target>-e2e-WxH.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    if args.frames < MIN_FRAMES:
        parser.error(f"--frames must be >= {MIN_FRAMES} for committed figures")
    try:
        target = load_target(args.target)
        checkpoint = resolve_checkpoint(args.checkpoint) if args.checkpoint else default_checkpoint()
        if args.seeded:
            size, width, classes = args.seeded.split(",")
            config = ModelConfig(input_size=int(size), width_mult=float(width), n_class=int(classes))
            checkpoint = default_checkpoint(config, seed=0)
        with tempfile.TemporaryDirectory(prefix="tsm-bench-") as tmp:
            artifact = args.keep_artifact or Path(tmp) / args.target
            log.info("compiling %s for %s", checkpoint.source, target.name)
            result = compile_artifact(checkpoint, target, artifact, progress=lambda m: log.info("%s", m))
            log.info("%s", result.coverage.line())

            def progress(done: int, total: int) -> None:
                if done == total or done % max(1, total // 10) < 10:
                    log.info("timed %d/%d frames", done, total)

            report = benchmark(
                artifact,
                checkpoint,
                frames=args.frames,
                warmup=args.warmup,
                threads=args.threads,
                progress=progress,
                stage=lambda message: log.info("%s", message),
            )
            e2e = None
            if args.frame_size:
                from tsm_deploy.models.preprocess import parse_frame_size

                size = parse_frame_size(args.frame_size)
                raw = Path(tmp) / f"{args.target}-e2e"
                log.info("compiling with the preprocessing for %s frames", args.frame_size)
                compile_artifact(checkpoint, target, raw, frame_size=size, progress=lambda m: log.info("%s", m))
                e2e = benchmark(raw, checkpoint, frames=args.frames, warmup=args.warmup, threads=args.threads,
                                shift_overhead=False, progress=progress, stage=lambda message: log.info("%s", message))
    except TsmDeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    args.output.mkdir(parents=True, exist_ok=True)
    name = args.name or args.target
    json_path, png_path = args.output / f"{name}.json", args.output / f"{name}.png"
    write_report(report, json_path, png_path)
    print(report.table())
    print(f"wrote {json_path} and {png_path}")
    if e2e is not None:
        stem = f"{name}-e2e-{args.frame_size}"
        write_report(e2e, args.output / f"{stem}.json", args.output / f"{stem}.png")
        print(e2e.table())
        ratio = e2e.runners["tvm"].median_ms / report.runners["tvm"].median_ms
        print(f"TVM end to end / network only: {ratio:.2f}x; vs ONNX Runtime end to end: "
              f"{e2e.runners['tvm'].median_ms / e2e.runners['onnxruntime'].median_ms:.2f}x")
        print(f"wrote {args.output / stem}.json and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
