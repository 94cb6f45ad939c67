"""MetaSchedule tuning of a model for a target, resumable, into ``tuning_logs/<target>/<model>/``.

The tuned module is the one ``compile`` builds: export -> import -> :func:`compile.fuse` (with the
same prepacking pre-pass ``compile`` applies when ``tuning.json`` says so), so the workloads recorded
here are the ones ``compile`` looks up.

Tasks are tuned one after another, most expensive first. The JSON database is tuned in a working copy;
after every measured batch the committed files are replaced by rename (workloads first, then records,
then ``tuning.json``), so a run killed at any moment leaves a valid database, and the next run loads
it and continues: records are never deleted, and the trials each task has had add up.

Building: MetaSchedule's ``LocalBuilder`` restarts its worker pool on every batch, and each new worker
pays a ~35 s import of ``tvm.s_tir.tensor_intrin`` (more than the default 30 s build timeout).
:class:`PersistentBuilder` keeps its workers for the whole run (they import once, in the pool's
initializer) and gives each build its own timeout; a worker that times out or crashes is replaced.

This module's top level imports only TVM: the build workers import it by reference.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import tvm
import tvm_ffi
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

from .atomic import atomic_write_bytes, atomic_write_text
from .remote import check_reachable, parse_address
from .target_status import cpu_name

if TYPE_CHECKING:
    from .checkpoint import LoadedCheckpoint
    from .targets import DeployTarget

log = logging.getLogger("tsm_deploy.tune")

METADATA_FILE = "tuning.json"
DEFAULT_BUILD_TIMEOUT_S = 60.0
DEFAULT_TRIALS_PER_ITER = 32


# --------------------------------------------------------------------------------------------------
# The builder: long-lived workers, one import each, a timeout per build.


def _warm_worker() -> None:
    """Pool initializer: pay the slow import once per worker, not once per build."""
    import tvm.s_tir.tensor_intrin  # noqa: F401  (registers the tensor intrinsics the schedules use)


def _build_one(mod: tvm.IRModule, target: tvm.target.Target, cross_compiler: str | None) -> str:
    """In a worker: build one candidate and export it as a shared library; return its path."""
    import tvm.s_tir.tensor_intrin  # noqa: F401  (already imported by the initializer)
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
    from tvm.support import cc

    # measure the kernel without the weight layout rewrite (done once, at compile time)
    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    lib = tvm_build(mod, target=target)
    path = os.path.join(tempfile.mkdtemp(prefix="tsm-tune-"), "candidate.so")
    if cross_compiler:
        lib.export_library(path, fcompile=cc.cross_compiler(cross_compiler))
    else:
        lib.export_library(path)
    return path


@derived_object
class PersistentBuilder(ms.builder.PyBuilder):
    """A MetaSchedule builder over one long-lived pool of warmed-up worker processes."""

    def __init__(
        self,
        max_workers: int | None = None,
        timeout_sec: float = DEFAULT_BUILD_TIMEOUT_S,
        cross_compiler: str | None = None,
        max_uses: int | None = 400,
    ) -> None:
        super().__init__()
        self.max_workers = max_workers or os.cpu_count() or 1
        self.timeout_sec = timeout_sec
        self.cross_compiler = cross_compiler
        # workers are recycled after max_uses builds (LocalBuilder's reason to restart: a slow leak)
        self.pool = PopenPoolExecutor(
            max_workers=self.max_workers,
            timeout=timeout_sec,
            initializer=_warm_worker,
            maximum_process_uses=max_uses,
        )
        self.builds = 0
        self.failures = 0
        self.build_seconds = 0.0

    def start(self) -> list[Any]:
        """Start every worker now, in the background (each pays its import while the caller works)."""
        return [self.pool.submit(_noop) for _ in range(self.max_workers)]

    def build(self, build_inputs: list[ms.builder.BuilderInput]) -> list[ms.builder.BuilderResult]:
        start = time.perf_counter()
        results = []
        args = [(inp.mod, inp.target, self.cross_compiler) for inp in build_inputs]
        for res in self.pool.map_with_error_catching(lambda a: _build_one(*a), args):
            if res.status == StatusKind.COMPLETE:
                results.append(ms.builder.BuilderResult(res.value, None))
            else:
                self.failures += 1
                if res.status == StatusKind.TIMEOUT:
                    message = f"PersistentBuilder: timeout, worker killed after {self.timeout_sec} s"
                else:
                    message = f"PersistentBuilder: build failed\n{res.value}"
                results.append(ms.builder.BuilderResult(None, message))
        self.builds += len(build_inputs)
        self.build_seconds += time.perf_counter() - start
        return results

    def shutdown(self) -> None:
        self.pool.shutdown()


def _noop() -> None:
    return None


# --------------------------------------------------------------------------------------------------
# Remote measurement through an RPC tracker.


@dataclass(frozen=True)
class RpcConfig:
    tracker_host: str
    tracker_port: int
    key: str
    session_timeout: int = 60

    def ms_config(self) -> ms.runner.RPCConfig:
        return ms.runner.RPCConfig(
            tracker_host=self.tracker_host,
            tracker_port=self.tracker_port,
            tracker_key=self.key,
            session_timeout_sec=self.session_timeout,
        )


def parse_tracker(value: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port), with a clear error."""
    return parse_address(value, what="--rpc-tracker")


def check_tracker(rpc: RpcConfig, timeout: float = 5.0) -> int:
    """Fail fast, in one line, if the tracker is unreachable or has no device under ``rpc.key``.

    Returns the number of devices (free + busy) registered under the key.
    """
    from .errors import TsmDeployError

    where = f"{rpc.tracker_host}:{rpc.tracker_port}"
    check_reachable(rpc.tracker_host, rpc.tracker_port, "RPC tracker")
    try:
        from tvm import rpc as tvm_rpc

        summary = tvm_rpc.connect_tracker(rpc.tracker_host, rpc.tracker_port).summary()
    except Exception as exc:  # a port that answers but does not speak the tracker protocol
        raise TsmDeployError(f"{where} does not answer as a TVM RPC tracker ({type(exc).__name__})") from None
    queue = summary.get("queue_info", {}).get(rpc.key)
    devices = sum(1 for s in summary.get("server_info", []) if str(s.get("key", "")).split(":")[-1] == rpc.key)
    if queue is None and devices == 0:
        known = ", ".join(sorted(summary.get("queue_info", {}))) or "none"
        raise TsmDeployError(f"RPC tracker {where} has no device registered under key '{rpc.key}' (keys: {known})")
    return max(devices, int(queue.get("free", 0)) if queue else 0)


# --------------------------------------------------------------------------------------------------
# The database: a committed directory, tuned in a working copy, replaced by rename.


def read_metadata(database_dir: Path | None) -> dict[str, Any]:
    if database_dir is None:
        return {}
    path = Path(database_dir) / METADATA_FILE
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


@dataclass
class TaskState:
    name: str
    key: str  # structural hash of the workload: task names repeat across models and shapes
    weight: int
    flops: float
    trials: int = 0
    best_us: float | None = None  # best measured latency of one call, microseconds

    @property
    def cost_us(self) -> float | None:
        return None if self.best_us is None else self.best_us * self.weight


@dataclass(frozen=True)
class TuningSummary:
    target: str
    database: Path
    tasks: int  # tasks in the model
    tuned_tasks: int  # of which have at least one valid record
    trials: int  # trials measured in this run
    total_trials: int  # trials in the database's history (all runs)
    records: int  # lines in database_tuning_record.json
    estimated_ms: float | None  # sum over tuned tasks of weight x best latency
    untuned_tasks: tuple[str, ...]
    elapsed_s: float
    build_failures: int = 0
    prepack: bool = False
    per_task: tuple[dict[str, Any], ...] = field(default_factory=tuple)

    def line(self) -> str:
        est = f"{self.estimated_ms:.2f} ms" if self.estimated_ms is not None else "n/a"
        return (
            f"{self.database}: {self.tuned_tasks}/{self.tasks} tasks tuned, {self.trials} trials this run "
            f"({self.total_trials} in all), {self.records} records, estimated {est} per frame, "
            f"{self.elapsed_s / 60:.1f} min"
        )


class _Checkpointer:
    """Owns the working copy of the database and copies it over the committed one."""

    def __init__(self, database_dir: Path, metadata: dict[str, Any]) -> None:
        from .compile import DATABASE_FILES

        self.files = DATABASE_FILES
        self.dir = Path(database_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        # the working copy lives in the system temp dir: a killed run leaves no litter in tuning_logs/
        self.work = Path(tempfile.mkdtemp(prefix=f"tsm-tune-{self.dir.name}-"))
        for name in self.files:
            src = self.dir / name
            if src.is_file():
                shutil.copyfile(src, self.work / name)
            else:
                (self.work / name).touch()
        self.metadata = metadata
        self.database = ms.database.JSONDatabase(
            path_workload=str(self.work / self.files[0]),
            path_tuning_record=str(self.work / self.files[1]),
            module_equality="structural",
        )

    def commit(self) -> None:
        # workloads first: records only ever refer to workloads already in the committed file
        for name in self.files:
            atomic_write_bytes(self.dir / name, (self.work / name).read_bytes())
        self.metadata["updated"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        atomic_write_text(self.dir / METADATA_FILE, json.dumps(self.metadata, indent=1, sort_keys=True) + "\n")

    def records(self) -> int:
        with open(self.work / self.files[1], "rb") as f:
            return sum(1 for line in f if line.strip())

    def close(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


@derived_object
class _Progress(ms.measure_callback.PyMeasureCallback):
    """After each measured batch: count trials, track the best latency, checkpoint, report."""

    def __init__(self, on_batch: Callable[[int, list[float]], None]) -> None:
        super().__init__()
        self.on_batch = on_batch

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
        latencies = []
        for built, ran in zip(builder_results, runner_results):
            if built.error_msg is None and ran.error_msg is None and ran.run_secs:
                secs = [float(s) for s in ran.run_secs]
                latencies.append(sum(secs) / len(secs))
        self.on_batch(len(measure_candidates), latencies)


# --------------------------------------------------------------------------------------------------


def _prepare(checkpoint: LoadedCheckpoint, target: DeployTarget, prepack: bool) -> tvm.IRModule:
    """The fused module exactly as ``compile`` builds it before applying the database."""
    from .compile import fuse
    from .export import export_onnx
    from .frontend import check_static_shift, import_onnx

    exported = export_onnx(checkpoint.model())
    mod = import_onnx(exported.model)
    check_static_shift(mod, n_shift_buffers=len(exported.input_shapes) - 1)
    return fuse(mod, target.tvm(), prepack=prepack)


def _best_us(database: Any, task: Any, target: tvm.target.Target) -> float | None:
    mod = task.dispatched[0]
    if not database.has_workload(mod):
        return None
    top = database.get_top_k(database.commit_workload(mod), 1)
    if not top or not top[0].run_secs:
        return None
    secs = [float(s) for s in top[0].run_secs]
    best = sum(secs) / len(secs)
    return None if best >= 1e9 else best * 1e6


def tune_model(
    checkpoint: LoadedCheckpoint,
    target: DeployTarget,
    trials_per_task: int,
    database_dir: Path | None = None,
    rpc: RpcConfig | None = None,
    prepack: bool | None = None,
    max_tasks: int | None = None,
    progress: Callable[[str, int, int, float | None], None] | None = None,
    trials_per_iter: int = DEFAULT_TRIALS_PER_ITER,
    build_timeout: float = DEFAULT_BUILD_TIMEOUT_S,
    population_size: int = 256,
    seed: int | None = None,
) -> TuningSummary:
    """Tune ``checkpoint``'s model for ``target`` until every task has had ``trials_per_task`` trials.

    Resumes from what ``database_dir`` (default: the target's committed records for this model)
    already holds. ``prepack`` (default: on for CPU targets) tunes with weight-layout rewriting;
    a database keeps the mode it was started with. ``max_tasks`` tunes only the most expensive tasks.
    ``progress(task_name, trials_done, trials_wanted, best_latency_us)`` is called after every batch.
    """
    from .compile import tuning_database_dir
    from .errors import TsmDeployError

    start = time.perf_counter()
    if trials_per_task < 1:
        raise TsmDeployError(f"--trials must be >= 1, got {trials_per_task}")
    target.require_tools()
    if database_dir is None:
        database_dir = tuning_database_dir(target, checkpoint.config)
        if database_dir is None:
            raise TsmDeployError(f"target {target.name} has no tuning_logs folder; pass a database directory")
    database_dir = Path(database_dir)
    if rpc is not None:
        devices = check_tracker(rpc)
        log.info("RPC tracker %s:%d: %d device(s) under key %s", rpc.tracker_host, rpc.tracker_port, devices, rpc.key)
    elif target.is_cross:
        raise TsmDeployError(
            f"target {target.name} runs on another machine: measure on it through an RPC tracker "
            "(--rpc-tracker HOST:PORT --rpc-key KEY)"
        )

    old = read_metadata(database_dir)
    if prepack is None:
        prepack = bool(old["prepack"]) if "prepack" in old else target.device == "cpu"
    elif "prepack" in old and bool(old["prepack"]) != prepack and old.get("tasks"):
        raise TsmDeployError(
            f"{database_dir} was tuned with prepack={old['prepack']}; resume with the same setting "
            "(or use another --database)"
        )
    tvm_target = target.tvm()
    num_cores = int(target.tvm_target.get("num-cores", os.cpu_count() or 1))  # of the device
    host_cores = os.cpu_count() or 1  # builds, search and cost model run here
    if rpc is None:
        # TVM's runtime uses half the logical CPUs on x86 unless told: measure as the artifact will run
        os.environ.setdefault("TVM_NUM_THREADS", str(num_cores))

    builder = PersistentBuilder(
        max_workers=host_cores,
        timeout_sec=build_timeout,
        cross_compiler=target.cross_compiler,
    )
    warming = builder.start()  # the workers import TVM's tensor intrinsics while the model is prepared
    try:
        mod = _prepare(checkpoint, target, prepack)
        extracted = ms.relax_integration.extract_tasks(mod, tvm_target, module_equality="structural")
    except BaseException:
        builder.shutdown()
        raise
    from tvm.s_tir.analysis import estimate_tir_flops

    states = []
    for task in extracted:
        key = str(tvm_ffi.structural_hash(task.dispatched[0]) & 0xFFFFFFFFFFFFFFFF)
        states.append(TaskState(task.task_name, key, int(task.weight), float(estimate_tir_flops(task.dispatched[0]))))
    metadata = {
        "target": target.name,
        "tvm_target": target.tvm_target,
        "model": checkpoint.config.to_dict(),
        "prepack": prepack,
        "tvm_version": tvm.__version__,
        "machine_cpu": cpu_name() if rpc is None else f"RPC key {rpc.key}",
        "started": old.get("started") or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "runs": int(old.get("runs", 0)) + 1,
        "tasks": dict(old.get("tasks", {})),  # workload hash -> {"name", "trials"}
    }
    for st in states:
        st.trials = int(metadata["tasks"].get(st.key, {}).get("trials", 0))
        st.best_us = metadata["tasks"].get(st.key, {}).get("best_us")
    # most expensive first: by measured weighted latency once every task has one, else by FLOPs
    if all(st.best_us for st in states):
        order = sorted(range(len(states)), key=lambda i: -states[i].best_us * states[i].weight)
    else:
        order = sorted(range(len(states)), key=lambda i: -states[i].flops * states[i].weight)
    selected = order[:max_tasks] if max_tasks else order

    ckpt = _Checkpointer(database_dir, metadata)
    database = ckpt.database
    if rpc is not None:
        runner: Any = ms.runner.RPCRunner(rpc_config=rpc.ms_config(), max_workers=1)
    else:
        runner = ms.runner.LocalRunner(timeout_sec=30)
    cost_model = ms.cost_model.XGBModel(num_tuning_cores=host_cores)
    ms_log = logging.getLogger("tsm_deploy.tune.metaschedule")
    for name in ("tvm.s_tir.meta_schedule", ms_log.name):
        if logging.getLogger(name).level == logging.NOTSET:  # per-batch tables and XGBoost chatter
            logging.getLogger(name).setLevel(logging.WARNING)
    trials_this_run = 0
    try:
        log.info("%d tasks; tuning %d of them to %d trials each into %s (prepack=%s)",
                 len(states), len(selected), trials_per_task, database_dir, prepack)
        for rank, i in enumerate(selected, 1):
            st, task = states[i], extracted[i]
            st.best_us = _best_us(database, task, tvm_target)
            remaining = trials_per_task - st.trials
            if remaining <= 0:
                log.info("[%d/%d] %s: %d trials already, best %s", rank, len(selected), st.name, st.trials, _fmt_us(st.best_us))
                continue
            for future in warming:
                future.result()
            warming = []
            log.info("[%d/%d] %s (weight %d, %.1f MFLOP): %d trials so far, tuning %d more",
                     rank, len(selected), st.name, st.weight, st.flops / 1e6, st.trials, remaining)

            def on_batch(n: int, latencies: list[float], st: TaskState = st, rank: int = rank) -> None:
                nonlocal trials_this_run
                st.trials += n
                trials_this_run += n
                if latencies:
                    best = min(latencies) * 1e6
                    st.best_us = best if st.best_us is None else min(st.best_us, best)
                metadata["tasks"][st.key] = {"name": st.name, "trials": st.trials, "weight": st.weight,
                                             "best_us": st.best_us}
                metadata["trials_per_task"] = max(int(metadata.get("trials_per_task", 0)),
                                                  min(s.trials for s in (states[j] for j in selected)))
                ckpt.commit()
                log.info("[%d/%d] %s: %d/%d trials, best %s, %d valid of %d", rank, len(selected), st.name,
                         st.trials, trials_per_task, _fmt_us(st.best_us), len(latencies), n)
                if progress is not None:
                    progress(st.name, st.trials, trials_per_task, st.best_us)

            context = ms.TuneContext(
                mod=task.dispatched[0],
                target=task.target,
                space_generator="post-order-apply",
                search_strategy=ms.search_strategy.EvolutionarySearch(population_size=population_size),
                task_name=task.task_name,
                rand_state=-1 if seed is None else seed + i,
                num_threads=host_cores,
                logger=ms_log,  # not MetaSchedule's own per-task log files and console handlers
            ).clone()
            ms.tune_tasks(
                tasks=[context],
                task_weights=[float(task.weight)],
                work_dir=str(ckpt.work),
                max_trials_global=remaining,
                max_trials_per_task=remaining,
                num_trials_per_iter=min(trials_per_iter, remaining),
                builder=builder,
                runner=runner,
                database=database,
                cost_model=cost_model,
                measure_callbacks=[
                    ms.measure_callback.AddToDatabase(),
                    ms.measure_callback.RemoveBuildArtifact(),
                    ms.measure_callback.UpdateCostModel(),
                    _Progress(on_batch),
                ],
                task_scheduler="round-robin",
            )
            if st.trials < trials_per_task:
                # the search ran out of new candidates: count the task as done for this budget
                log.info("%s: search space exhausted at %d trials", st.name, st.trials)
                st.trials = trials_per_task
                metadata["tasks"][st.key] = {"name": st.name, "trials": st.trials, "weight": st.weight,
                                             "best_us": st.best_us}
            ckpt.commit()
        for st, task in zip(states, extracted):
            st.best_us = _best_us(database, task, tvm_target)
        metadata["trials_per_task"] = min(s.trials for s in (states[j] for j in selected))
        ckpt.commit()
        records = ckpt.records()
    finally:
        builder.shutdown()
        ckpt.close()

    tuned = [s for s in states if s.best_us is not None]
    untuned = tuple(sorted(s.name for s in states if s.best_us is None))
    elapsed = time.perf_counter() - start
    summary = TuningSummary(
        target=target.name,
        database=database_dir,
        tasks=len(states),
        tuned_tasks=len(tuned),
        trials=trials_this_run,
        total_trials=sum(int(t.get("trials", 0)) for t in metadata["tasks"].values()),
        records=records,
        estimated_ms=(sum(s.cost_us for s in tuned) / 1e3) if tuned else None,
        untuned_tasks=untuned,
        elapsed_s=elapsed,
        build_failures=builder.failures,
        prepack=prepack,
        per_task=tuple(asdict(s) for s in sorted(states, key=lambda s: -(s.cost_us or 0))),
    )
    if builder.builds:
        log.info("builder: %d builds, %.2f s per build (wall, %d workers), %d failed",
                 builder.builds, builder.build_seconds / builder.builds, builder.max_workers, builder.failures)
    log.info("%s", summary.line())
    return summary


def compact_database(database_dir: Path, keep: int = 16) -> tuple[int, int]:
    """Keep only the ``keep`` fastest records of each workload (a committed database of every trial
    grows by ~14 KB a trial). Never called by tuning itself, which only ever appends; a compacted
    database still resumes (the search restarts from the best records it keeps). -> (before, after)."""
    from .compile import DATABASE_FILES

    path = Path(database_dir) / DATABASE_FILES[1]
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    by_workload: dict[int, list[tuple[float, int, str]]] = {}
    for n, line in enumerate(lines):
        workload, record = json.loads(line)
        secs = record[1] if len(record) > 1 and record[1] else None
        cost = sum(float(s) for s in secs) / len(secs) if secs else float("inf")
        by_workload.setdefault(workload, []).append((cost, n, line))
    kept = sorted(n for recs in by_workload.values() for _, n, _ in sorted(recs)[:keep])
    atomic_write_text(path, "".join(lines[n] + "\n" for n in kept))
    return len(lines), len(kept)


def _fmt_us(us: float | None) -> str:
    return "n/a" if us is None else f"{us:.1f} us"
