"""``tsm-deploy tune``: MetaSchedule records for a model on a target (here, over RPC, or emulated)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import TsmDeployError
from .common import (
    checkpoint_options,
    echo_args,
    handles_errors,
    load_checkpoint_for,
    model_overrides,
    load_target_for,
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
@click.option("--rpc-tracker", default=None, metavar="HOST:PORT", help="Measure on the devices registered at this RPC tracker.")
@click.option("--rpc-key", default=None, help="Device key at the tracker (default: the target's rpc_key).")
@click.option("--emulate", is_flag=True, help="Measure aarch64 candidates as instruction counts on an emulated CPU (QEMU).")
@click.option("--max-tasks", type=click.IntRange(min=1), default=None, help="Tune only the N most expensive tasks.")
@tuning_db_option("Database directory (default: the target's record library tuning_logs/<target>/, which compile reads).")
@click.option("--no-prepack", is_flag=True, help="Do not rewrite weight layouts (default: on for CPU targets).")
@handles_errors
def command(
    checkpoint: Path | None,
    input_size: int | None,
    fold_div: int | None,
    segments: int | None,
    target_name: str,
    trials: int | None,
    budget: float | None,
    rpc_tracker: str | None,
    rpc_key: str | None,
    emulate: bool,
    max_tasks: int | None,
    tuning_db: Path | None,
    no_prepack: bool,
    cuda_arch: str | None,
    frame_size: str | None,
) -> None:
    """Tune a model's kernels for a target with MetaSchedule (resumable; records go to tuning_logs/)."""
    from ..tuning.loop import DEFAULT_TRIALS, tune_model
    from ..tuning.rpc import RpcConfig, parse_tracker

    echo_args("tune", checkpoint=checkpoint, target=target_name, trials=trials, rpc_tracker=rpc_tracker,
              rpc_key=rpc_key, max_tasks=max_tasks, tuning_db=tuning_db, emulate=emulate)
    target, size = load_target_for(target_name, cuda_arch, frame_size)
    rpc = None
    if rpc_tracker is not None:
        host, port = parse_tracker(rpc_tracker)
        key = rpc_key or target.rpc_key
        if not key:
            raise TsmDeployError(f"target {target.name} has no rpc_key: pass --rpc-key")
        rpc = RpcConfig(host, port, key)
    elif rpc_key is not None:
        raise TsmDeployError("--rpc-key needs --rpc-tracker HOST:PORT")
    loaded = load_checkpoint_for(checkpoint, model_overrides(input_size, fold_div, segments))

    def progress(task: str, done: int, wanted: int, best_us: float | None) -> None:
        best = f"{best_us:.1f} us" if best_us is not None else "no valid trial yet"
        click.echo(f"  .. {task}: {min(done, wanted)}/{wanted} trials, best {best}", err=True)

    summary = tune_model(
        loaded, target, trials or DEFAULT_TRIALS, database_dir=tuning_db, rpc=rpc, prepack=False if no_prepack else None,
        max_tasks=max_tasks, progress=progress, emulate=emulate,
        frame_size=size, missing_only=trials is None, budget_s=budget * 60 if budget else None,
    )
    if summary.untuned_tasks:
        click.echo(f"not tuned yet: {len(summary.untuned_tasks)} kernels (run again to continue)", err=True)
    click.echo(f"tuned {summary.line()}")
