"""``tsm-deploy verify``: parity of an artifact against PyTorch, here, emulated or on a device."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .common import (
    EXIT_CHECK_FAILED,
    PLACE_KEYS,
    ProgressBar,
    checkpoint_options,
    echo_args,
    handles_errors,
    json_option,
    load_checkpoint_for,
    model_overrides,
    place_options,
    progress,
    resolve_place_for,
)


@click.command(name="verify")
@click.argument("artifact", type=click.Path(path_type=Path))
@checkpoint_options
@click.option("--frames", type=int, default=32, show_default=True, help="Frames to stream (clip artifacts: clips).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random frames.")
@click.option("--tolerance", type=float, default=1e-4, show_default=True, help="Max abs error allowed (logits, buffers).")
@json_option()
@place_options
@handles_errors
def command(
    artifact: Path,
    checkpoint: Path | None,
    input_size: int | None,
    fold_div: int | None,
    segments: int | None,
    frames: int,
    seed: int,
    tolerance: float,
    json_path: Path | None,
    **place: Any,
) -> None:
    """Run the same inputs through PyTorch and the artifact; exit 1 if they disagree.

    Where the artifact runs: this machine (default), an emulated ARM CPU (--emulate), or a device
    over TVM RPC (--rpc, --rpc-tracker)."""
    from ..evaluate.place import EMULATED, RPC
    from ..evaluate.verify import verify_artifact, write_report
    from ..runtime.manifest import read_manifest

    echo_args("verify", artifact=artifact, checkpoint=checkpoint, frames=frames, json=json_path,
              **{k: place[k] for k in PLACE_KEYS})
    manifest = read_manifest(artifact)
    where = resolve_place_for(manifest.target, place)
    loaded = load_checkpoint_for(checkpoint, model_overrides(input_size, fold_div, segments), manifest)
    runner = None
    if where.kind == EMULATED:
        from ..evaluate.runners.emulated import EmulatedRunner

        runner = EmulatedRunner(artifact, qemu_cpu=where.qemu_cpu, progress=progress)
    elif where.kind == RPC:
        from ..evaluate.runners.rpc import RpcRunner

        progress(f"uploading the module to {where.describe()}")
        runner = RpcRunner(artifact, where.address, where.key)
    with ProgressBar("comparing") as bar:
        report = verify_artifact(artifact, loaded, frames=frames, seed=seed, tolerance=tolerance, runner=runner,
                                 progress=bar.update)
    click.echo(report.table())
    if json_path:
        write_report(report, json_path)
        click.echo(f"wrote {json_path}")
    if not report.passed:
        sys.exit(EXIT_CHECK_FAILED)
