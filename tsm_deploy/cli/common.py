"""What every command shares: error handling (one line, exit codes), logging, progress lines, and the
options with one name and one meaning everywhere (``--checkpoint``, ``--tuning-db``, ``--json PATH``)."""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import click

from ..errors import TsmDeployError

log = logging.getLogger("tsm_deploy")

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def setup_logging(verbose: bool) -> None:
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
            click.echo(f"error: {' '.join(str(exc).split())}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


def echo_args(command: str, **args: Any) -> None:
    """The resolved arguments, logged (shown with -v) so a failing command's stderr stays one line."""
    log.info("%s: %s", command, " ".join(f"{k}={v}" for k, v in args.items() if v is not None))


def progress(message: str) -> None:
    click.echo(f"  .. {message}", err=True)


def checkpoint_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--checkpoint and what a checkpoint's weights cannot tell."""
    command = click.option("--segments", type=int, default=None,
                           help="Clip models: frames per clip T (default: from the checkpoint, else 8).")(command)
    command = click.option("--fold-div", type=int, default=None, help="Shift 1/N of the channels (default 8).")(command)
    command = click.option(
        "--input-size", type=int, default=None, help="Frame size the model runs at (default 224; multiple of 32)."
    )(command)
    command = click.option(
        "--checkpoint",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="PyTorch checkpoint (.pth/.pth.tar). Default: the embedded default model.",
    )(command)
    return command


def target_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--target and what completes it: the CUDA architecture, a camera frame size to compile for."""
    command = click.option("--frame-size", default=None, metavar="WxH",
                           help="Compile the preprocessing in for camera frames of this size (uint8 RGB in, e.g. 640x480).")(command)
    command = click.option("--cuda-arch", default=None, help="CUDA architecture (e.g. sm_86) for the cuda target.")(command)
    command = click.option("--target", "-t", "target_name", required=True,
                           help="Target name (see `tsm-deploy targets`) or .json file.")(command)
    return command


def load_target_for(target_name: str, cuda_arch: str | None, frame_size: str | None):
    """-> (DeployTarget, (height, width) or None)."""
    from ..models.preprocess import parse_frame_size
    from ..target.targets import load_target

    return load_target(target_name, cuda_arch=cuda_arch), parse_frame_size(frame_size) if frame_size else None


def place_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Where the model runs (verify, bench, tune alike): this host, emulated, or over RPC."""
    command = click.option("--rpc-key", default=None, help="Device key at the --rpc-tracker (default: the target's rpc_key).")(command)
    command = click.option("--rpc-tracker", default=None, metavar="HOST:PORT",
                           help="Run on a device an RPC tracker hands out under --rpc-key.")(command)
    command = click.option("--rpc", "rpc_address", default=None, metavar="HOST:PORT", help="Run on a device's TVM RPC server.")(command)
    command = click.option("--qemu-cpu", default=None,
                           help="Core QEMU emulates with --emulate (default: the target's mcpu, e.g. cortex-a72 for rasp4).")(command)
    command = click.option("--emulate", is_flag=True, help="Run on an emulated ARM CPU (QEMU; aarch64 CPU targets).")(command)
    return command


def resolve_place_for(target: dict[str, Any], options: dict[str, Any], tracker_only: bool = False):
    """The :class:`~tsm_deploy.evaluate.place.Place` that :func:`place_options` name, validated once."""
    from ..evaluate.place import resolve_place

    return resolve_place(target, emulate=options["emulate"], qemu_cpu=options["qemu_cpu"], rpc=options["rpc_address"],
                         rpc_tracker=options["rpc_tracker"], rpc_key=options["rpc_key"], tracker_only=tracker_only)


PLACE_KEYS = ("emulate", "qemu_cpu", "rpc_address", "rpc_tracker", "rpc_key")


def json_option(help_text: str = "Write the report as JSON here.") -> Callable[..., Any]:
    return click.option("--json", "json_path", type=click.Path(path_type=Path, dir_okay=False), default=None, help=help_text)


def tuning_db_option(help_text: str) -> Callable[..., Any]:
    return click.option("--tuning-db", type=click.Path(path_type=Path, file_okay=False), default=None, help=help_text)


def model_overrides(input_size: int | None, fold_div: int | None, segments: int | None = None) -> dict[str, Any]:
    if input_size is not None and (input_size <= 0 or input_size % 32):
        raise TsmDeployError(f"--input-size must be a positive multiple of 32, got {input_size}")
    if fold_div is not None and fold_div < 2:
        raise TsmDeployError(f"--fold-div must be >= 2, got {fold_div}")
    if segments is not None and segments < 1:
        raise TsmDeployError(f"--segments must be >= 1, got {segments}")
    values = {"input_size": input_size, "fold_div": fold_div, "n_segment": segments}
    return {k: v for k, v in values.items() if v is not None}


def load_checkpoint_for(checkpoint: Path | None, overrides: dict[str, Any], manifest: Any = None):
    """--checkpoint, else the default model; with ``manifest``: the reference of that artifact
    (the default model as compiled, or the file with the artifact's input size and fold)."""
    from ..checkpoint import reference_checkpoint, resolve_checkpoint

    if manifest is not None:
        loaded = reference_checkpoint(manifest.model, checkpoint, overrides)
    else:
        loaded = resolve_checkpoint(checkpoint, overrides)
    if checkpoint is None:
        click.echo(f"note: no --checkpoint given: using the {loaded.source}", err=True)
    return loaded


class ProgressBar:
    """A click progress bar created on the first update (its length is known only then)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar: Any = None

    def update(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=f"  {self.label}", file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done - self.bar.pos)

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


def echo_coverage(coverage: Any, target: Any, checkpoint: Path | None, frame_size: tuple[int, int] | None,
                  precision: str = "fp32") -> None:
    """What the records covered, by work; what is missing and the ``tune`` command that fills exactly that."""
    click.echo(coverage.line())
    if not coverage.missing_macs or target.tuning_logs is None:
        return
    shown = ", ".join(f"{name} ({100 * macs / coverage.macs:.1f} %)" if coverage.macs else name
                      for name, macs in coverage.missing_macs[:3])
    more = f" and {len(coverage.missing_macs) - 3} more" if len(coverage.missing_macs) > 3 else ""
    click.echo(f"no record for {len(coverage.missing_macs)} kernels: {shown}{more}")
    command = f"tsm-deploy tune --target {target.name}"
    if checkpoint is not None:
        command += f" --checkpoint {checkpoint}"
    if frame_size is not None:
        command += f" --frame-size {frame_size[1]}x{frame_size[0]}"
    if precision != "fp32":
        command += f" --precision {precision}"
    if target.is_cross:
        command += " --emulate" if target.arch == "aarch64" and target.device == "cpu" else " --rpc-tracker HOST:PORT"
    click.echo(f"to tune exactly those: {command}")


def precision_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--precision and --calibration (compile, tune, bench: the same network, the same kernels)."""
    command = click.option(
        "--calibration", type=click.Path(path_type=Path), default=None, metavar="VIDEO|FOLDER",
        help="int8: frames to calibrate on, a video (or image) file or a folder of them (default: the model's "
             "own task for the default model, else seeded frames).")(command)
    return click.option(
        "--precision", type=click.Choice(["fp32", "int8"]), default="fp32", show_default=True,
        help="int8: post-training quantization (stream models): per-channel int8 weights, calibrated uint8 "
             "activations, integer convolutions.")(command)


def quantization_for(checkpoint: Any, precision: str, calibration: Path | None) -> Any:
    """The int8 calibration ``--precision`` / ``--calibration`` ask for (a QuantSpec), or None for fp32."""
    if calibration is not None and precision != "int8":
        raise TsmDeployError("--calibration is for --precision int8")
    if precision != "int8":
        return None
    from ..quantize import calibrate_checkpoint

    progress("calibrating int8")
    quant = calibrate_checkpoint(checkpoint, calibration)
    click.echo(f"int8: calibrated {len(quant.activations)} tensors on {quant.source} ({quant.method})", err=True)
    return quant
