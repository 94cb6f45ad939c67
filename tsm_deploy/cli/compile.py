"""``tsm-deploy compile``: checkpoint -> artifact for a target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .common import (
    checkpoint_options,
    echo_args,
    handles_errors,
    load_checkpoint_for,
    model_overrides,
    progress,
    load_target_for,
    target_options,
    tuning_db_option,
)


@click.command(name="compile")
@checkpoint_options
@target_options
@click.option("--output", "-o", type=click.Path(path_type=Path, file_okay=False), required=True, help="Artifact directory.")
@tuning_db_option("MetaSchedule database directory (default: tuning_logs/<target>/<model>/ when present).")
@click.option("--no-tuning", is_flag=True, help="Ignore tuning records; default schedules only.")
@click.option("--labels", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None, help="Text file, one class name per line.")
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
) -> None:
    """Compile a checkpoint into an artifact (module + manifest.json) for a target."""
    from ..compile import compile_artifact, describe

    echo_args("compile", checkpoint=checkpoint, target=target_name, output=output, tuning_db=tuning_db)
    target, size = load_target_for(target_name, cuda_arch, frame_size)
    loaded = load_checkpoint_for(checkpoint, model_overrides(input_size, fold_div, segments))
    label_list = [line.strip() for line in labels.read_text().splitlines() if line.strip()] if labels else None
    database: Any = None if no_tuning else (tuning_db if tuning_db is not None else "auto")
    result = compile_artifact(loaded, target, output, database=database, labels=label_list, progress=progress,
                              frame_size=size)
    cov = result.coverage
    if cov.database:
        click.echo(f"tuning records: {cov.tuned} of {cov.tasks} tasks covered ({cov.database})")
    else:
        click.echo(f"tuning records: none for {target.name}; {cov.tasks} tasks use default schedules")
    click.echo(f"wrote {describe(result)}")
