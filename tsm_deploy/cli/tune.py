"""``tsm-deploy tune``: MetaSchedule records for a model on a target (here, over RPC, or emulated)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .common import (
    PLACE_KEYS,
    checkpoint_options,
    echo_args,
    handles_errors,
    load_checkpoint_for,
    load_target_for,
    model_overrides,
    place_options,
    precision_options,
    quantization_for,
    resolve_place_for,
    target_options,
    tuning_db_option,
)


@click.command(name="tune")
@checkpoint_options
@target_options
@click.option("--trials", type=click.IntRange(min=1), default=None,
              help="Bring every kernel of the model to this many trials (in all: a resumed run adds up to it). "
                   "Default: tune only the kernels the target's library has no record for, 32 trials each.")
@click.option("--budget", type=click.FloatRange(min=0, min_open=True), default=None, metavar="MINUTES",
              help="Start no new kernel after this many minutes (the run resumes where it stopped).")
@place_options
@click.option("--max-tasks", type=click.IntRange(min=1), default=None, help="Tune only the N most expensive tasks.")
@tuning_db_option("Database directory (default: the target's record library tuning_logs/<target>/, which compile reads).")
@click.option("--no-prepack", is_flag=True, help="Do not rewrite weight layouts (default: on for CPU targets).")
@click.option("--remeasure", is_flag=True,
              help="First re-time the stored best records of the model's kernels where this run measures, and keep "
                   "only those (records timed on another machine keep costs no schedule measured here can beat).")
@precision_options
@handles_errors
def command(
    checkpoint: Path | None,
    input_size: int | None,
    fold_div: int | None,
    segments: int | None,
    target_name: str,
    trials: int | None,
    budget: float | None,
    max_tasks: int | None,
    tuning_db: Path | None,
    no_prepack: bool,
    remeasure: bool,
    cuda_arch: str | None,
    frame_size: str | None,
    precision: str,
    calibration: Path | None,
    **place: Any,
) -> None:
    """Tune a model's kernels for a target with MetaSchedule (resumable; records go to tuning_logs/).

    Candidates are measured where --emulate / --rpc-tracker say (instruction counts on an emulated
    ARM CPU; the devices of an RPC tracker), else on this host."""
    from ..tuning.loop import DEFAULT_TRIALS, tune_model

    echo_args("tune", checkpoint=checkpoint, target=target_name, trials=trials, max_tasks=max_tasks,
              tuning_db=tuning_db, **{k: place[k] for k in PLACE_KEYS})
    target, size = load_target_for(target_name, cuda_arch, frame_size)
    where = resolve_place_for({**target.to_manifest(), "rpc_key": target.rpc_key}, place, tracker_only=True)
    loaded = load_checkpoint_for(checkpoint, model_overrides(input_size, fold_div, segments))
    quant = quantization_for(loaded, precision, calibration)

    def progress(task: str, done: int, wanted: int, best_us: float | None) -> None:
        best = f"{best_us:.1f} us" if best_us is not None else "no valid trial yet"
        click.echo(f"  .. {task}: {min(done, wanted)}/{wanted} trials, best {best}", err=True)

    summary = tune_model(
        loaded, target, trials or DEFAULT_TRIALS, database_dir=tuning_db, place=where,
        prepack=False if no_prepack else None, max_tasks=max_tasks, progress=progress,
        frame_size=size, missing_only=trials is None, budget_s=budget * 60 if budget else None, quant=quant,
        remeasure=remeasure,
    )
    if summary.untuned_tasks:
        click.echo(f"not tuned yet: {len(summary.untuned_tasks)} kernels (run again to continue)", err=True)
    click.echo(f"tuned {summary.line()}")
