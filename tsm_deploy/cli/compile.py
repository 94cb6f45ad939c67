"""``tsm-deploy compile``: checkpoint -> artifact for a target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..errors import TsmDeployError
from .common import (
    checkpoint_options,
    echo_args,
    handles_errors,
    load_checkpoint_for,
    model_overrides,
    precision_options,
    progress,
    quantization_for,
    load_target_for,
    target_options,
    tuning_db_option,
    echo_coverage,
)


@click.command(name="compile")
@checkpoint_options
@target_options
@click.option("--output", "-o", type=click.Path(path_type=Path, file_okay=False), required=True, help="Artifact directory.")
@tuning_db_option("MetaSchedule database directory (default: the target's record library tuning_logs/<target>/, then its fallbacks).")
@click.option("--no-tuning", is_flag=True, help="Ignore tuning records; default schedules only.")
@click.option("--labels", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None, help="Text file, one class name per line.")
@click.option("--ort-tolerance", default=None, metavar="[ATOL,]RTOL",
              help="ONNX Runtime vs PyTorch check: max abs error <= ATOL + RTOL x max |logit| "
                   "(default 1e-4,1e-4; one number sets RTOL).")
@precision_options
@handles_errors
def command(
    checkpoint: Path | None,
    input_size: int | None,
    fold_div: int | None,
    segments: int | None,
    target_name: str,
    output: Path,
    tuning_db: Path | None,
    no_tuning: bool,
    labels: Path | None,
    cuda_arch: str | None,
    frame_size: str | None,
    ort_tolerance: str | None,
    precision: str,
    calibration: Path | None,
) -> None:
    """Compile a checkpoint into an artifact (module + manifest.json) for a target."""
    from ..support.atomic import check_writable
    from ..compiler.artifact import compile_artifact, describe
    from ..target.library import TARGET_RECORDS
    from ..frontend.export import ort_tolerance as checked_with

    tolerance = parse_ort_tolerance(ort_tolerance)

    echo_args("compile", checkpoint=checkpoint, target=target_name, output=output, tuning_db=tuning_db)
    check_writable(output)  # a read-only output fails now, not after the build
    target, size = load_target_for(target_name, cuda_arch, frame_size)
    loaded = load_checkpoint_for(checkpoint, model_overrides(input_size, fold_div, segments))
    label_list = [line.strip() for line in labels.read_text().splitlines() if line.strip()] if labels else None
    database: Any = None if no_tuning else (tuning_db if tuning_db is not None else TARGET_RECORDS)
    quant = quantization_for(loaded, precision, calibration)
    with checked_with(tolerance):
        result = compile_artifact(loaded, target, output, database=database, labels=label_list, progress=progress,
                                  frame_size=size, quant=quant)
    echo_coverage(result.coverage, target, checkpoint, size, precision)
    click.echo(f"wrote {describe(result)}")


def parse_ort_tolerance(text: str | None):
    """``--ort-tolerance``: ``RTOL`` or ``ATOL,RTOL`` (non-negative numbers) -> OrtTolerance."""
    from ..frontend.export import ORT_TOLERANCE, OrtTolerance

    if text is None:
        return ORT_TOLERANCE
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or not all(v >= 0 and v == v and v != float("inf") for v in values):
        raise TsmDeployError(f"--ort-tolerance takes RTOL or ATOL,RTOL (non-negative numbers), got {text!r}")
    if len(values) == 1:
        return OrtTolerance(atol=ORT_TOLERANCE.atol, rtol=values[0])
    return OrtTolerance(atol=values[0], rtol=values[1])
