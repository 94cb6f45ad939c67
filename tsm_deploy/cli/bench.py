"""``tsm-deploy bench``: latency side by side (TVM, ONNX Runtime, PyTorch), or on a device over RPC."""

from __future__ import annotations

from pathlib import Path

import click

from .common import (
    ProgressBar,
    checkpoint_options,
    echo_args,
    handles_errors,
    json_option,
    load_checkpoint_for,
    model_overrides,
    progress,
)


@click.command(name="bench")
@click.argument("artifact", type=click.Path(path_type=Path))
@checkpoint_options
@click.option("--frames", type=int, default=None, help="Timed frames (clips) per runner (default 200; --emulate: 3).")
@click.option("--warmup", type=int, default=20, show_default=True, help="Untimed frames per runner first.")
@click.option("--threads", type=int, default=None, help="Threads for every runner (default: all cores).")
@json_option()
@click.option("--plot", "plot_path", type=click.Path(path_type=Path, dir_okay=False), default=None, help="Write a PNG bar chart here.")
@click.option("--no-shift-overhead", is_flag=True, help="Skip compiling and timing the network without shifts.")
@click.option("--rpc", "rpc_address", default=None, metavar="HOST:PORT", help="Time the artifact on a device's TVM RPC server.")
@click.option("--emulate", is_flag=True,
              help="aarch64 artifacts: count instructions per frame on an emulated Cortex-A72, with ONNX Runtime beside.")
@handles_errors
def command(
    artifact: Path,
    checkpoint: Path | None,
    input_size: int | None,
    fold_div: int | None,
    segments: int | None,
    frames: int | None,
    warmup: int,
    threads: int | None,
    json_path: Path | None,
    plot_path: Path | None,
    no_shift_overhead: bool,
    rpc_address: str | None,
    emulate: bool,
) -> None:
    """Per-frame (per-clip) latency of the artifact, ONNX Runtime and PyTorch side by side, and the
    shift's overhead."""
    from ..evaluate.bench import benchmark, benchmark_remote, write_report
    from ..runtime.manifest import read_manifest

    echo_args("bench", artifact=artifact, checkpoint=checkpoint, frames=frames, warmup=warmup, json=json_path, plot=plot_path)
    manifest = read_manifest(artifact)
    frames = frames if frames is not None else (3 if emulate else 200)
    if emulate:
        from ..evaluate.bench.emulated import benchmark_emulated, write_emulated_report

        loaded = load_checkpoint_for(checkpoint, model_overrides(input_size, fold_div, segments), manifest)
        report = benchmark_emulated(artifact, loaded, frames=frames, progress=progress)
        click.echo(report.table())
        write_emulated_report(report, json_path)
        if json_path:
            click.echo(f"wrote {json_path}")
        return
    if rpc_address:
        progress(f"uploading the module to {rpc_address} and timing {frames} frames there")
        stats = benchmark_remote(artifact, rpc_address, frames=frames, warmup=warmup)
        click.echo(stats.table())
        if json_path:
            write_report(stats, json_path)
            click.echo(f"wrote {json_path}")
        return
    loaded = load_checkpoint_for(checkpoint, model_overrides(input_size, fold_div, segments), manifest)
    with ProgressBar("timing") as bar:
        report = benchmark(
            artifact, loaded, frames=frames, warmup=warmup, threads=threads, shift_overhead=not no_shift_overhead,
            progress=bar.update, stage=progress,
        )
    click.echo(report.table())
    write_report(report, json_path, plot_path)
    for path in (json_path, plot_path):
        if path:
            click.echo(f"wrote {path}")
