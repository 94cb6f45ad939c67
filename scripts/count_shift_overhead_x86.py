#!/usr/bin/env python
"""The temporal shift's cost on x86 as an exact count: guest instructions per frame of the default
model's x86 artifact with and without its shifts (same weights, same records), each streamed through
the runtime (``StreamingModel.run_prepared``, one TVM thread) under ``qemu-x86_64 -cpu max`` with the
project's meter plugin. Emulated instruction counts, not latency: a count is repeatable to a few
hundred instructions where this shared VM's timings swing by more than the shift costs.

    .venv/bin/python scripts/count_shift_overhead_x86.py [--target x86-avx2] [--json benchmarks/x86-avx2-shift-count.json]

Needs Debian's qemu-user (the dynamic qemu-x86_64 loads plugins) and gcc (the plugin is built once).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tsm_deploy.support.atomic import atomic_write_text  # noqa: E402
from tsm_deploy.checkpoint import default_checkpoint  # noqa: E402
from tsm_deploy.compiler.artifact import compile_artifact  # noqa: E402
from tsm_deploy.emulation.meter import MARKER_SYSCALL, build_meter_plugin  # noqa: E402
from tsm_deploy.errors import TsmDeployError  # noqa: E402
from tsm_deploy.evaluate.bench import _noshift_checkpoint  # noqa: E402
from tsm_deploy.target.library import TARGET_RECORDS, libraries_for  # noqa: E402
from tsm_deploy.target.targets import load_target  # noqa: E402

QEMU = "qemu-x86_64"


def count_frames(artifact: Path, frames: int, plugin: Path) -> list[int]:
    """Instructions per frame of ``artifact`` streamed by the host's Python under qemu-x86_64."""
    with tempfile.TemporaryDirectory(prefix="tsm-count-") as tmp:
        counts = Path(tmp) / "counts.txt"
        command = [QEMU, "-cpu", "max", "-plugin", f"{plugin},out={counts},marker={MARKER_SYSCALL},mode=inline",
                   sys.executable, "-m", "tsm_deploy.emulation.guest_measure", "--counts", str(counts),
                   "--helper", "/dev/null", "artifact", str(artifact), "--frames", str(frames)]
        run = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                             env={"PATH": "/usr/bin:/bin", "TVM_NUM_THREADS": "1", "PYTHONHASHSEED": "0"})
    if run.returncode != 0:
        raise TsmDeployError(f"{artifact} under {QEMU}: {(run.stderr.strip().splitlines() or ['no output'])[-1]}")
    return json.loads(run.stdout.strip().splitlines()[-1])["per_frame"]


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="x86-avx2")
    parser.add_argument("--frames", type=int, default=4, help="frames per artifact (the first is not steady)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    checkpoint = default_checkpoint()
    target = load_target(args.target)
    database = [lib.path for lib in libraries_for(target, TARGET_RECORDS)]
    plugin = build_meter_plugin()
    result: dict = {"label": "emulated instructions (qemu-x86_64 -cpu max, TCG), not latency",
                    "unit": "guest instructions per frame (median of the frames after the first)",
                    "target": args.target, "database": [str(p) for p in database], "frames": args.frames, "runners": {}}
    with tempfile.TemporaryDirectory(prefix="tsm-count-art-") as tmp:
        for name, model in (("tvm", checkpoint), ("tvm_noshift", _noshift_checkpoint(checkpoint))):
            artifact = Path(tmp) / name
            compile_artifact(model, target, artifact, database=database)
            per_frame = count_frames(artifact, args.frames, plugin)
            result["runners"][name] = {"per_frame": per_frame, "instructions_per_frame": statistics.median(per_frame[1:])}
    shift, base = (result["runners"][n]["instructions_per_frame"] for n in ("tvm", "tvm_noshift"))
    result["shift_overhead"] = {"instructions": shift - base, "fraction": shift / base - 1}
    print(f"{'runner':<12} {'instructions / frame':>21}   (emulated x86 counts, {args.target}, 1 thread)")
    for name, r in result["runners"].items():
        print(f"{name:<12} {r['instructions_per_frame']:>21,.0f}")
    print(f"shift overhead: {shift - base:+,.0f} instructions ({shift / base - 1:+.2%})")
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except TsmDeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
