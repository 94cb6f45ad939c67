"""``tsm-deploy``: a thin click layer over the library. Each command parses, prints what it will do,
calls one library function and maps errors to exit codes: 0 ok, 1 a check failed, 2 bad input."""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import click

from .errors import TsmDeployError

log = logging.getLogger("tsm_deploy")

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def handles_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the library's errors into one line on stderr and an exit code, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except TsmDeployError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


def _echo_args(command: str, **args: Any) -> None:
    """The resolved arguments, logged (shown with -v) so a failing command's stderr stays one line."""
    log.info("%s: %s", command, " ".join(f"{k}={v}" for k, v in args.items() if v is not None))


def _progress(message: str) -> None:
    click.echo(f"  .. {message}", err=True)


def checkpoint_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--checkpoint and what a checkpoint's weights cannot tell."""
    command = click.option("--fold-div", type=int, default=None, help="Shift 1/N of the channels (default 8).")(command)
    command = click.option(
        "--input-size", type=int, default=None, help="Frame size the model runs at (default 224; multiple of 32)."
    )(command)
    command = click.option(
        "--checkpoint",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="PyTorch checkpoint (.pth/.pth.tar). Default: the embedded seeded-random model.",
    )(command)
    return command


def _check_model_arguments(input_size: int | None, fold_div: int | None) -> None:
    if input_size is not None and (input_size <= 0 or input_size % 32):
        raise TsmDeployError(f"--input-size must be a positive multiple of 32, got {input_size}")
    if fold_div is not None and fold_div < 2:
        raise TsmDeployError(f"--fold-div must be >= 2, got {fold_div}")


def _reference_checkpoint(manifest: Any, checkpoint: Path | None, input_size: int | None, fold_div: int | None):
    """What verify/bench compare the artifact with: --checkpoint, else the default model as compiled."""
    from .checkpoint import reference_checkpoint

    _check_model_arguments(input_size, fold_div)
    overrides = {k: v for k, v in {"input_size": input_size, "fold_div": fold_div}.items() if v is not None}
    loaded = reference_checkpoint(manifest.model, checkpoint, overrides)
    if checkpoint is None:
        click.echo(f"note: no --checkpoint given: using the {loaded.source}", err=True)
    return loaded


def _load_checkpoint(checkpoint: Path | None, input_size: int | None, fold_div: int | None):
    from .checkpoint import resolve_checkpoint

    _check_model_arguments(input_size, fold_div)
    overrides = {k: v for k, v in {"input_size": input_size, "fold_div": fold_div}.items() if v is not None}
    loaded = resolve_checkpoint(checkpoint, overrides)
    if checkpoint is None:
        click.echo(f"note: no --checkpoint given: using the {loaded.source}", err=True)
    return loaded


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log what each stage does.")
@click.version_option(package_name="tsm-deploy")
def main(verbose: bool) -> None:
    """Compile Temporal Shift Module video models for x86, Raspberry Pi and Jetson with Apache TVM."""
    _setup_logging(verbose)


@main.command()
@checkpoint_options
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False), required=True, help="ONNX file to write.")
@handles_errors
def export(checkpoint: Path | None, input_size: int | None, fold_div: int | None, output: Path) -> None:
    """Export the streaming model to ONNX (checked, cross-checked in ONNX Runtime)."""
    from .export import export_onnx

    _echo_args("export", checkpoint=checkpoint, output=output)
    loaded = _load_checkpoint(checkpoint, input_size, fold_div)
    result = export_onnx(loaded.model(), output)
    click.echo(
        f"wrote {output}: inputs {', '.join(result.input_shapes)}; ONNX Runtime max abs error {result.ort_max_abs_error:.2e}"
    )


@main.command(name="compile")
@checkpoint_options
@click.option("--target", "-t", "target_name", required=True, help="Target name (see `tsm-deploy targets`) or .json file.")
@click.option("--output", "-o", type=click.Path(path_type=Path, file_okay=False), required=True, help="Artifact directory.")
@click.option(
    "--tuning-db",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="MetaSchedule database directory (default: tuning_logs/<target>/<model>/ when present).",
)
@click.option("--no-tuning", is_flag=True, help="Ignore tuning records; default schedules only.")
@click.option("--labels", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None, help="Text file, one class name per line.")
@click.option("--cuda-arch", default=None, help="CUDA architecture (e.g. sm_86) for the cuda target.")
@handles_errors
def compile_command(
    checkpoint: Path | None,
    input_size: int | None,
    fold_div: int | None,
    target_name: str,
    output: Path,
    tuning_db: Path | None,
    no_tuning: bool,
    labels: Path | None,
    cuda_arch: str | None,
) -> None:
    """Compile a checkpoint into an artifact (module + manifest.json) for a target."""
    from .compile import compile_artifact, describe
    from .targets import load_target

    _echo_args("compile", checkpoint=checkpoint, target=target_name, output=output, tuning_db=tuning_db)
    target = load_target(target_name, cuda_arch=cuda_arch)
    loaded = _load_checkpoint(checkpoint, input_size, fold_div)
    label_list = [line.strip() for line in labels.read_text().splitlines() if line.strip()] if labels else None
    database: Any = None if no_tuning else (tuning_db if tuning_db is not None else "auto")
    result = compile_artifact(loaded, target, output, database=database, labels=label_list, progress=_progress)
    cov = result.coverage
    if cov.database:
        click.echo(f"tuning records: {cov.tuned} of {cov.tasks} tasks covered ({cov.database})")
    else:
        click.echo(f"tuning records: none for {target.name}; {cov.tasks} tasks use default schedules")
    click.echo(f"wrote {describe(result)}")


@main.command()
@checkpoint_options
@click.option("--target", "-t", "target_name", required=True, help="Target name (see `tsm-deploy targets`) or .json file.")
@click.option("--trials", type=click.IntRange(min=1), required=True, help="Trials per task (in all: a resumed run adds up to this).")
@click.option("--rpc-tracker", default=None, metavar="HOST:PORT", help="Measure on the devices registered at this RPC tracker.")
@click.option("--rpc-key", default=None, help="Device key at the tracker (default: the target's rpc_key).")
@click.option("--max-tasks", type=click.IntRange(min=1), default=None, help="Tune only the N most expensive tasks.")
@click.option(
    "--database",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Database directory (default: tuning_logs/<target>/<model>/, which compile reads).",
)
@click.option("--no-prepack", is_flag=True, help="Do not rewrite weight layouts (default: on for CPU targets).")
@click.option("--cuda-arch", default=None, help="CUDA architecture (e.g. sm_86) for the cuda target.")
@handles_errors
def tune(
    checkpoint: Path | None,
    input_size: int | None,
    fold_div: int | None,
    target_name: str,
    trials: int,
    rpc_tracker: str | None,
    rpc_key: str | None,
    max_tasks: int | None,
    database: Path | None,
    no_prepack: bool,
    cuda_arch: str | None,
) -> None:
    """Tune a model's kernels for a target with MetaSchedule (resumable; records go to tuning_logs/)."""
    from .targets import load_target
    from .tune import RpcConfig, parse_tracker, tune_model

    _echo_args("tune", checkpoint=checkpoint, target=target_name, trials=trials, rpc_tracker=rpc_tracker,
               rpc_key=rpc_key, max_tasks=max_tasks, database=database)
    target = load_target(target_name, cuda_arch=cuda_arch)
    rpc = None
    if rpc_tracker is not None:
        host, port = parse_tracker(rpc_tracker)
        key = rpc_key or target.rpc_key
        if not key:
            raise TsmDeployError(f"target {target.name} has no rpc_key: pass --rpc-key")
        rpc = RpcConfig(host, port, key)
    elif rpc_key is not None:
        raise TsmDeployError("--rpc-key needs --rpc-tracker HOST:PORT")
    loaded = _load_checkpoint(checkpoint, input_size, fold_div)

    def progress(task: str, done: int, wanted: int, best_us: float | None) -> None:
        best = f"{best_us:.1f} us" if best_us is not None else "no valid trial yet"
        click.echo(f"  .. {task}: {min(done, wanted)}/{wanted} trials, best {best}", err=True)

    summary = tune_model(
        loaded, target, trials, database_dir=database, rpc=rpc, prepack=False if no_prepack else None,
        max_tasks=max_tasks, progress=progress,
    )
    if summary.untuned_tasks:
        click.echo(f"not tuned yet: {len(summary.untuned_tasks)} tasks (run again to continue)", err=True)
    click.echo(f"tuned {summary.line()}")


@main.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@checkpoint_options
@click.option("--frames", type=int, default=32, show_default=True, help="Frames to stream.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random frames.")
@click.option("--tolerance", type=float, default=1e-4, show_default=True, help="Max abs error allowed (logits, buffers).")
@click.option("--json", "json_path", type=click.Path(path_type=Path, dir_okay=False), default=None, help="Write the report here.")
@click.option("--emulate", is_flag=True, help="Run an aarch64 artifact on an emulated Cortex-A72 (QEMU).")
@click.option("--qemu-cpu", default=None, help="CPU QEMU emulates with --emulate (default cortex-a72).")
@click.option("--rpc", "rpc_address", default=None, metavar="HOST:PORT", help="Run on a device's TVM RPC server.")
@handles_errors
def verify(
    artifact: Path,
    checkpoint: Path | None,
    input_size: int | None,
    fold_div: int | None,
    frames: int,
    seed: int,
    tolerance: float,
    json_path: Path | None,
    emulate: bool,
    qemu_cpu: str | None,
    rpc_address: str | None,
) -> None:
    """Stream frames through PyTorch and the artifact; exit 1 if they disagree.

    Where the artifact runs: this machine (default), an emulated Raspberry Pi 4 (--emulate), or a
    device's TVM RPC server (--rpc)."""
    from .runtime.manifest import read_manifest
    from .verify import verify_artifact, write_report

    _echo_args("verify", artifact=artifact, checkpoint=checkpoint, frames=frames, json=json_path, rpc=rpc_address)
    if emulate and rpc_address:
        raise TsmDeployError("--emulate and --rpc exclude each other")
    manifest = read_manifest(artifact)
    loaded = _reference_checkpoint(manifest, checkpoint, input_size, fold_div)
    runner = None
    if emulate:
        from .emulate import EmulatedRunner

        runner = EmulatedRunner(artifact, qemu_cpu=qemu_cpu, progress=_progress)
    elif rpc_address:
        from .remote import RpcRunner

        _progress(f"uploading the module to {rpc_address}")
        runner = RpcRunner(artifact, rpc_address)
    with click.progressbar(length=frames, label="  comparing frames", file=sys.stderr) as bar:
        report = verify_artifact(
            artifact,
            loaded,
            frames=frames,
            seed=seed,
            tolerance=tolerance,
            runner=runner,
            progress=lambda done, _: bar.update(done - bar.pos),
        )
    click.echo(report.table())
    if json_path:
        write_report(report, json_path)
        click.echo(f"wrote {json_path}")
    if not report.passed:
        sys.exit(EXIT_CHECK_FAILED)


@main.command(name="targets")
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@handles_errors
def targets_command(names: tuple[str, ...], as_json: bool) -> None:
    """List deployment targets (or check the given names / target .json files) and what this machine
    has for each: cross compiler, emulator, GPU, committed tuning records for the default model."""
    from .target_status import format_target_status, target_status
    from .targets import available_targets, load_target

    quiet = logging.getLogger("tsm_deploy.targets")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "no GPU detected" is what the listing reports, not a warning
    try:
        statuses = [target_status(load_target(name)) for name in (names or available_targets())]
    finally:
        quiet.setLevel(level)
    if as_json:
        click.echo(json.dumps(statuses, indent=2))
    else:
        click.echo("\n".join(format_target_status(s) for s in statuses))


@main.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@checkpoint_options
@click.option("--frames", type=int, default=200, show_default=True, help="Timed frames per runner.")
@click.option("--warmup", type=int, default=20, show_default=True, help="Untimed frames per runner first.")
@click.option("--threads", type=int, default=None, help="Threads for every runner (default: all cores).")
@click.option("--json", "json_path", type=click.Path(path_type=Path, dir_okay=False), default=None, help="Write the report here.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path, dir_okay=False), default=None, help="Write a PNG bar chart here.")
@click.option("--no-shift-overhead", is_flag=True, help="Skip compiling and timing the network without shifts.")
@click.option("--rpc", "rpc_address", default=None, metavar="HOST:PORT", help="Time the artifact on a device's TVM RPC server.")
@handles_errors
def bench(
    artifact: Path,
    checkpoint: Path | None,
    input_size: int | None,
    fold_div: int | None,
    frames: int,
    warmup: int,
    threads: int | None,
    json_path: Path | None,
    plot_path: Path | None,
    no_shift_overhead: bool,
    rpc_address: str | None,
) -> None:
    """Per-frame latency of the artifact, ONNX Runtime and PyTorch side by side, and the shift's overhead."""
    from .bench import benchmark, write_report
    from .runtime.manifest import read_manifest

    _echo_args("bench", artifact=artifact, checkpoint=checkpoint, frames=frames, warmup=warmup, json=json_path, plot=plot_path)
    manifest = read_manifest(artifact)
    if rpc_address:
        from .bench import benchmark_remote

        _progress(f"uploading the module to {rpc_address} and timing {frames} frames there")
        stats = benchmark_remote(artifact, rpc_address, frames=frames, warmup=warmup)
        click.echo(stats.table())
        if json_path:
            write_report(stats, json_path)
            click.echo(f"wrote {json_path}")
        return
    loaded = _reference_checkpoint(manifest, checkpoint, input_size, fold_div)
    bar: Any = None

    def on_progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = click.progressbar(length=total, label="  timing frames", file=sys.stderr)
            bar.__enter__()
        bar.update(done - bar.pos)

    try:
        report = benchmark(
            artifact,
            loaded,
            frames=frames,
            warmup=warmup,
            threads=threads,
            shift_overhead=not no_shift_overhead,
            progress=on_progress,
            stage=_progress,
        )
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    click.echo(report.table())
    write_report(report, json_path, plot_path)
    for path in (json_path, plot_path):
        if path:
            click.echo(f"wrote {path}")


@main.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False), default=None, help="Default: ARTIFACT.tar.gz")
@handles_errors
def bundle(artifact: Path, output: Path | None) -> None:
    """Pack an artifact with the thin runtime (and, for aarch64, TVM's runtime) into one tarball for the device."""
    from .bundle import make_bundle
    from .runtime.manifest import read_manifest

    read_manifest(artifact)  # refuse a tampered artifact before packing it
    path = make_bundle(artifact, output, progress=_progress)
    click.echo(f"wrote {path}; on the device: tar xzf {path.name}, then see README.txt inside")


@main.command()
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--frames", type=int, default=16, show_default=True)
@click.option("--history", type=int, default=12, show_default=True, help="Average logits over this many frames.")
@click.option("--video", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None, help="Video file (PyAV).")
@click.option("--threads", type=int, default=None, help="TVM CPU threads (default: the artifact's core count).")
@handles_errors
def run(artifact: Path, frames: int, history: int, video: Path | None, threads: int | None) -> None:
    """Stream frames (a video file, or seeded noise) through an artifact and print the top-1 per frame."""
    import numpy as np

    from .runtime import StreamingModel

    model = StreamingModel(artifact, history=history, threads=threads)
    source = _video_frames(video, frames) if video else (
        np.random.default_rng(i).integers(0, 256, (240, 320, 3), dtype=np.uint8) for i in range(frames)
    )
    for i, frame in enumerate(source):
        result = model.step(frame)
        click.echo(f"{i:>4} top1={result.top1}" + (f" {result.label}" if result.label else ""))


def _video_frames(path: Path, limit: int):
    try:
        import av
    except ImportError:
        raise TsmDeployError("reading video needs PyAV (pip install av)") from None
    try:
        with av.open(str(path)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i >= limit:
                    break
                yield frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as exc:
        raise TsmDeployError(f"cannot read video {path}: {exc}") from None


if __name__ == "__main__":
    main()
