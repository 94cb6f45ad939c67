"""``tsm-deploy bench``: latency side by side (TVM, ONNX Runtime, PyTorch), instruction counts on an
emulated ARM CPU, or latency on a device over RPC."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from ..errors import TsmDeployError
from .common import (
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

@click.command(name="bench")
@click.argument("artifact", type=click.Path(path_type=Path))
@checkpoint_options
@click.option("--frames", type=int, default=None, help="Timed frames (clips) per runner (default 200; --emulate: 3 counted).")
@click.option("--warmup", type=int, default=None, help="Untimed frames per runner first (default 20).")
@click.option("--threads", type=int, default=None, help="Threads for every runner on this host (default: all cores).")
@json_option()
@click.option("--plot", "plot_path", type=click.Path(path_type=Path, dir_okay=False), default=None, help="Write a PNG bar chart here.")
@click.option("--peers", default=None, help="--emulate: peer runtimes to count, comma-separated (default onnxruntime,ncnn,executorch; also torch).")
@click.option("--no-shift-overhead", is_flag=True, help="Skip the baselines: the network without shifts (and with --emulate the untuned module).")
@place_options
@handles_errors
def command(
    artifact: Path,
    checkpoint: Path | None,
    input_size: int | None,
    fold_div: int | None,
    segments: int | None,
    frames: int | None,
    warmup: int | None,
    threads: int | None,
    json_path: Path | None,
    plot_path: Path | None,
    no_shift_overhead: bool,
    peers: str | None,
    **place: Any,
) -> None:
    """Per-frame (per-clip) latency of the artifact, ONNX Runtime and PyTorch side by side, and the
    shift's overhead; with --emulate, instructions per frame (clip) on the emulated CPU (TVM, ONNX Runtime,
    ncnn and ExecuTorch with XNNPACK for stream models)."""
    from ..evaluate.bench import DEFAULT_FRAMES, DEFAULT_WARMUP, benchmark, benchmark_remote, write_report
    from ..evaluate.bench.emulated import DEFAULT_EMULATED_FRAMES
    from ..evaluate.place import EMULATED, HOST, RPC
    from ..runtime.manifest import read_manifest

    echo_args("bench", artifact=artifact, checkpoint=checkpoint, frames=frames, warmup=warmup, json=json_path,
              plot=plot_path, **{k: place[k] for k in PLACE_KEYS})
    manifest = read_manifest(artifact)
    where = resolve_place_for(manifest.target, place)
    unused = {"--threads": threads is not None, "--plot": plot_path is not None,
              "--no-shift-overhead": no_shift_overhead and where.kind == RPC, "--warmup": warmup is not None and where.kind == EMULATED}
    if peers is not None and where.kind != EMULATED:
        raise TsmDeployError("--peers: only with --emulate (on this host bench times ONNX Runtime and PyTorch)")
    if where.kind != HOST and any(unused.values()):
        shown = ", ".join(name for name, given in unused.items() if given)
        raise TsmDeployError(f"{shown}: not available when the artifact runs on {where.describe()}")
    if frames is None:
        frames = DEFAULT_EMULATED_FRAMES if where.kind == EMULATED else DEFAULT_FRAMES
    warmup = warmup if warmup is not None else DEFAULT_WARMUP
    if where.kind == EMULATED:
        from ..emulation.peers import PEERS
        from ..evaluate.bench.emulated import DEFAULT_PEERS, benchmark_emulated, write_emulated_report

        chosen = tuple(p.strip() for p in peers.split(",") if p.strip()) if peers is not None else DEFAULT_PEERS
        unknown = [p for p in chosen if p not in PEERS]
        if unknown:
            raise TsmDeployError(f"--peers: unknown peer runtime {', '.join(unknown)}; known: {', '.join(PEERS)}")
        loaded = load_checkpoint_for(checkpoint, model_overrides(input_size, fold_div, segments), manifest)
        report = benchmark_emulated(artifact, loaded, frames=frames, peers=chosen, baselines=not no_shift_overhead,
                                    progress=progress, qemu_cpu=where.qemu_cpu)
        click.echo(report.table())
        write_emulated_report(report, json_path)
        if json_path:
            click.echo(f"wrote {json_path}")
        return
    if where.kind == RPC:
        progress(f"uploading the module to {where.describe()} and timing {frames} frames there")
        stats = benchmark_remote(artifact, where.address, frames=frames, warmup=warmup, key=where.key)
        click.echo(stats.table())
        if json_path:
            write_report(stats, json_path)
            click.echo(f"wrote {json_path}")
        return
    loaded = load_checkpoint_for(checkpoint, model_overrides(input_size, fold_div, segments), manifest)
    with ProgressBar("timing") as bar:
        if manifest.precision == "int8":  # beside its fp32 twin and ONNX Runtime's own int8
            from ..evaluate.bench import DEFAULT_ROUND_SIZE
            from ..evaluate.bench.int8 import benchmark_int8

            report: Any = benchmark_int8(artifact, loaded, frames=frames, warmup=warmup,
                                         threads=threads or os.cpu_count() or 1, round_size=DEFAULT_ROUND_SIZE,
                                         progress=bar.update, stage=progress)
        else:
            report = benchmark(
                artifact, loaded, frames=frames, warmup=warmup, threads=threads, shift_overhead=not no_shift_overhead,
                progress=bar.update, stage=progress,
            )
    click.echo(report.table())
    write_report(report, json_path, plot_path)
    for path in (json_path, plot_path):
        if path:
            click.echo(f"wrote {path}")
