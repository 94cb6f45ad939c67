"""``tsm-deploy verify``: parity of an artifact against PyTorch, here, emulated or on a device."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import TsmDeployError
from .common import (
    EXIT_CHECK_FAILED,
    ProgressBar,
    checkpoint_options,
    echo_args,
    handles_errors,
    json_option,
    load_checkpoint_for,
    model_overrides,
    progress,
)


@click.command(name="verify")
@click.argument("artifact", type=click.Path(path_type=Path))
@checkpoint_options
@click.option("--frames", type=int, default=32, show_default=True, help="Frames to stream (clip artifacts: clips).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random frames.")
@click.option("--tolerance", type=float, default=1e-4, show_default=True, help="Max abs error allowed (logits, buffers).")
@json_option()
@click.option("--emulate", is_flag=True, help="Run an aarch64 artifact on an emulated Cortex-A72 (QEMU).")
@click.option("--qemu-cpu", default=None, help="CPU QEMU emulates with --emulate (default cortex-a72).")
@click.option("--rpc", "rpc_address", default=None, metavar="HOST:PORT", help="Run on a device's TVM RPC server.")
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
    emulate: bool,
    qemu_cpu: str | None,
    rpc_address: str | None,
) -> None:
    """Run the same inputs through PyTorch and the artifact; exit 1 if they disagree.

    Where the artifact runs: this machine (default), an emulated Raspberry Pi 4 (--emulate), or a
    device's TVM RPC server (--rpc)."""
    from ..evaluate.verify import verify_artifact, write_report
    from ..runtime.manifest import read_manifest

    echo_args("verify", artifact=artifact, checkpoint=checkpoint, frames=frames, json=json_path, rpc=rpc_address)
    if emulate and rpc_address:
        raise TsmDeployError("--emulate and --rpc exclude each other")
    manifest = read_manifest(artifact)
    loaded = load_checkpoint_for(checkpoint, model_overrides(input_size, fold_div, segments), manifest)
    runner = None
    if emulate:
        from ..emulate import EmulatedRunner

        runner = EmulatedRunner(artifact, qemu_cpu=qemu_cpu, progress=progress)
    elif rpc_address:
        from ..remote import RpcRunner

        progress(f"uploading the module to {rpc_address}")
        runner = RpcRunner(artifact, rpc_address)
    with ProgressBar("comparing") as bar:
        report = verify_artifact(artifact, loaded, frames=frames, seed=seed, tolerance=tolerance, runner=runner,
                                 progress=bar.update)
    click.echo(report.table())
    if json_path:
        write_report(report, json_path)
        click.echo(f"wrote {json_path}")
    if not report.passed:
        sys.exit(EXIT_CHECK_FAILED)
