#!/usr/bin/env python
"""Reuse one target's tuning records for another target of the same ISA, and measure what they are
worth there: the default model compiled for the new target with and without the records, counted on
the new target's emulated CPU (exact instruction counts, one guest thread; not a latency).

    .venv/bin/python scripts/reuse_records.py rasp4 jetson-nano-cpu --qemu-cpu cortex-a57

Copies ``tuning_logs/<src>/<model>/`` to ``tuning_logs/<dst>/<model>/`` and writes its ``tuning.json``
with ``reused_from`` and the measured counts. Keep it only if the counts say the records help.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tsm_deploy.checkpoint import default_checkpoint  # noqa: E402
from tsm_deploy.compiler.artifact import compile_artifact  # noqa: E402
from tsm_deploy.emulation.meter import count_artifact  # noqa: E402
from tsm_deploy.errors import TsmDeployError  # noqa: E402
from tsm_deploy.target.targets import load_target  # noqa: E402
from tsm_deploy.target.library import DATABASE_FILES, database_dir, read_metadata, write_metadata  # noqa: E402

log = logging.getLogger("reuse_records")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="target whose records to reuse (e.g. rasp4)")
    parser.add_argument("dest", help="target to reuse them for (e.g. jetson-nano-cpu)")
    parser.add_argument("--qemu-cpu", required=True, help="the destination's CPU for QEMU (e.g. cortex-a57)")
    parser.add_argument("--frames", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        checkpoint = default_checkpoint()
        src_target, dst_target = load_target(args.source), load_target(args.dest)
        src = database_dir(src_target.tuning_logs, checkpoint.config)
        dst = database_dir(dst_target.tuning_logs, checkpoint.config)
        if src is None or not (src / DATABASE_FILES[1]).is_file():
            raise TsmDeployError(f"no records for the default model under {src}")
        counts = {}
        with tempfile.TemporaryDirectory(prefix="tsm-reuse-") as tmp:
            for name, database in (("untuned", None), ("reused", src)):
                out = Path(tmp) / name
                result = compile_artifact(checkpoint, dst_target, out, database=database)
                log.info("%s: %d/%d tasks with records", name, result.coverage.tuned, result.coverage.tasks)
                counts[name] = count_artifact(out, frames=args.frames, qemu_cpu=args.qemu_cpu).per_frame_instructions
    except TsmDeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    ratio = counts["reused"] / counts["untuned"]
    print(f"{args.dest} on an emulated {args.qemu_cpu}: {counts['reused'] / 1e6:.2f} M instructions per frame with "
          f"{args.source}'s records vs {counts['untuned'] / 1e6:.2f} M untuned ({ratio:.3f}x)")
    if ratio >= 1.0:
        print("the records do not help there: not copied")
        return 1
    dst.mkdir(parents=True, exist_ok=True)
    for name in DATABASE_FILES:
        shutil.copyfile(src / name, dst / name)
    meta = read_metadata(src)
    meta.update(
        target=dst_target.name,
        tvm_target=dst_target.tvm_target,
        reused_from=src_target.name,
        reuse_counts={"qemu_cpu": args.qemu_cpu, "instructions_per_frame": counts["reused"],
                      "untuned_instructions_per_frame": counts["untuned"], "ratio": ratio},
        reuse_note=(f"records of tuning_logs/{src_target.tuning_logs}, reused: same ISA (AArch64 + NEON); counted by "
                    "scripts/reuse_records.py on the emulated destination CPU (QEMU TCG, one thread). An instruction "
                    "count models the ISA, not the pipeline, so it cannot tune for this core specifically; RPC "
                    "tuning on the board supersedes these records."),
    )
    write_metadata(dst, meta)
    print(f"wrote {dst}")
    print(json.dumps(meta["reuse_counts"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
