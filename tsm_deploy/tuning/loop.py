"""MetaSchedule tuning of a model for a target, resumable, into the target's record library
``tuning_logs/<target>/`` (shared by every model: a kernel another model already tuned is not tuned again).

The tuned module is the one ``compile`` builds: :func:`tsm_deploy.compiler.pipeline.prepare_module` (with the
same prepacking ``compile`` applies when ``tuning.json`` says so), so the workloads recorded here are
the ones ``compile`` looks up.

Tasks are tuned one after another, most expensive first. The JSON database is tuned in a working
copy; after every measured batch the committed files are replaced by rename, so a run killed at any
moment leaves a valid database, and the next run loads it and continues: records are never deleted,
and the trials each task has had add up.

Where candidates are measured: here (MetaSchedule's LocalRunner), on boards behind an RPC tracker,
or on an emulated CPU with the instruction meter (``Place`` emulated; :mod:`.emulated_runner`).

A library gathers records measured on several machines of one kind; their costs compare only within
one machine. ``remeasure`` re-times the stored best records of the model's kernels where this run
measures and keeps only those: otherwise a record timed on a faster machine keeps a cost no schedule
measured here can beat, and the search could never replace it by one faster here.
"""

from __future__ import annotations

import datetime
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from ..checkpoint import LoadedCheckpoint
from ..compiler.kernels import is_scheduled
from ..compiler.pipeline import prepare_module
from ..errors import TsmDeployError
from ..evaluate.place import EMULATED, HOST, RPC, Place
from ..quantize import QuantSpec
from ..support.host import cpu_name
from ..target.arch import require_emulatable
from ..target.library import WorkingCopy, library_dir, workload_key, library_lock, measurement_kind, model_key, read_metadata
from ..target.targets import DeployTarget
from .builder import DEFAULT_BUILD_TIMEOUT_S, PersistentBuilder
from .rpc import check_tracker, rpc_config

log = logging.getLogger("tsm_deploy.tune")

DEFAULT_TRIALS_PER_ITER = 32
DEFAULT_TRIALS = 32  # per kernel, when tune fills what the library is missing
# Records re-timed per kernel by --remeasure: the stored best few, which the search also starts from
REMEASURE_TOP_K = 8


@dataclass
class TaskState:
    name: str
    key: str  # structural hash of the workload: task names repeat across models and shapes
    weight: int
    flops: float
    trials: int = 0
    best_us: float | None = None  # best measured cost of one call, microseconds (or meter units)

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
    tuned_fraction: float = 0.0  # of the model's work (FLOPs x weight) in kernels with a record

    def line(self) -> str:
        est = f"{self.estimated_ms:.2f} ms" if self.estimated_ms is not None else "n/a"
        return (
            f"{self.database}: {self.tuned_tasks}/{self.tasks} kernels tuned "
            f"({100 * self.tuned_fraction:.1f} % of the model's work), {self.trials} trials this run "
            f"({self.total_trials} in all), {self.records} records, estimated {est} per frame, "
            f"{self.elapsed_s / 60:.1f} min"
        )


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
# plan: which tasks, in which order, from where


def _check_request(checkpoint: LoadedCheckpoint, target: DeployTarget, trials: int, path: Path | None, place: Place) -> Path:
    if trials < 1:
        raise TsmDeployError(f"--trials must be >= 1, got {trials}")
    target.require_tools()
    if path is None:
        path = library_dir(target.tuning_logs)
        if path is None:
            raise TsmDeployError(f"target {target.name} has no tuning_logs folder; pass a database directory")
    if place.kind == RPC:
        if not place.tracker:
            raise TsmDeployError("tuning measures through an RPC tracker: give it with --rpc-tracker HOST:PORT")
        rpc = rpc_config(place)
        devices = check_tracker(rpc)
        log.info("RPC tracker %s:%d: %d device(s) under key %s", rpc.tracker_host, rpc.tracker_port, devices, rpc.key)
    elif place.kind == EMULATED:
        require_emulatable(target.to_manifest(), "--emulate")
    elif target.is_cross:
        raise TsmDeployError(
            f"target {target.name} runs on another machine: measure on it through an RPC tracker "
            "(--rpc-tracker HOST:PORT --rpc-key KEY), or on an emulated CPU (--emulate)"
        )
    return Path(path)


def _resolve_prepack(path: Path, old: dict[str, Any], prepack: bool | None, target: DeployTarget) -> bool:
    if prepack is None:
        return bool(old["prepack"]) if "prepack" in old else target.device == "cpu"
    if "prepack" in old and bool(old["prepack"]) != prepack and old.get("tasks"):
        raise TsmDeployError(
            f"{path} was tuned with prepack={old['prepack']}; resume with the same setting (or use another --database)"
        )
    return prepack


def plan_tasks(extracted: list[Any], known: dict[str, Any], max_tasks: int | None) -> tuple[list[TaskState], list[int]]:
    """Task states (trials so far from ``tuning.json``) and the order to tune them: most expensive
    first, by measured weighted latency once every task has one, else by FLOPs."""
    from tvm.s_tir.analysis import estimate_tir_flops

    states = []
    for task in extracted:
        key = _task_key(task)
        st = TaskState(task.task_name, key, int(task.weight), float(estimate_tir_flops(task.dispatched[0])))
        st.trials = int(known.get(key, {}).get("trials", 0))
        st.best_us = known.get(key, {}).get("best_us")
        states.append(st)
    if all(st.best_us for st in states):
        order = sorted(range(len(states)), key=lambda i: -states[i].best_us * states[i].weight)
    else:
        order = sorted(range(len(states)), key=lambda i: -states[i].flops * states[i].weight)
    return states, order[:max_tasks] if max_tasks else order


def _task_key(task: Any) -> str:
    """A workload's key in ``tuning.json``: its structural hash (task names repeat across models)."""
    return workload_key(task.dispatched[0])


def _runner(target: DeployTarget, place: Place) -> tuple[Any, Callable[[], None], str]:
    """-> (MetaSchedule runner, close function, what measures: for tuning.json)."""
    if place.kind == RPC:
        rpc = rpc_config(place)
        return ms.runner.RPCRunner(rpc_config=rpc.ms_config(), max_workers=1), lambda: None, f"RPC key {rpc.key}"
    if place.kind == EMULATED:
        from .emulated_runner import make_emulated_runner, measure_description

        runner, close = make_emulated_runner(target, qemu_cpu=place.qemu_cpu)
        return runner, close, measure_description(place.qemu_cpu)
    # TVM's runtime uses half the logical CPUs on x86 unless told: measure as the artifact will run
    os.environ.setdefault("TVM_NUM_THREADS", str(int(target.tvm_target.get("num-cores", os.cpu_count() or 1))))
    return ms.runner.LocalRunner(timeout_sec=30), lambda: None, cpu_name()


def _best_us(database: Any, task: Any) -> float | None:
    mod = task.dispatched[0]
    if not database.has_workload(mod):
        return None
    top = database.get_top_k(database.commit_workload(mod), 1)
    if not top or not top[0].run_secs:
        return None
    secs = [float(s) for s in top[0].run_secs]
    best = sum(secs) / len(secs)
    return None if best >= 1e9 else best * 1e6


def _fmt_us(us: float | None) -> str:
    return "n/a" if us is None else f"{us:.1f} us"


# --------------------------------------------------------------------------------------------------
# the loop


@dataclass(frozen=True)
class SearchSettings:
    """How MetaSchedule searches each kernel."""

    trials_per_iter: int = DEFAULT_TRIALS_PER_ITER
    build_timeout: float = DEFAULT_BUILD_TIMEOUT_S
    population_size: int = 256
    seed: int | None = None


def tune_model(
    checkpoint: LoadedCheckpoint,
    target: DeployTarget,
    trials_per_task: int,
    database_dir: Path | None = None,
    place: Place | None = None,
    prepack: bool | None = None,
    max_tasks: int | None = None,
    progress: Callable[[str, int, int, float | None], None] | None = None,
    trials_per_iter: int = DEFAULT_TRIALS_PER_ITER,
    build_timeout: float = DEFAULT_BUILD_TIMEOUT_S,
    population_size: int = 256,
    seed: int | None = None,
    frame_size: tuple[int, int] | None = None,
    missing_only: bool = False,
    budget_s: float | None = None,
    quant: QuantSpec | None = None,
    remeasure: bool = False,
) -> TuningSummary:
    """Tune ``checkpoint``'s model for ``target`` until every task has had ``trials_per_task`` trials.

    Resumes from what ``database_dir`` (default: the target's record library) already holds.
    ``missing_only`` tunes only the kernels the library has no record for (largest work first);
    ``budget_s`` starts no new kernel once that many seconds have passed. ``prepack`` (default: on for
    CPU targets) tunes with weight-layout rewriting; a database keeps the mode it was started with.
    ``max_tasks`` tunes only the most expensive tasks. ``place`` (default: this host) is where
    candidates are measured: an emulated CPU of the target (instruction counts) or the devices of an
    RPC tracker (:func:`tsm_deploy.evaluate.place.resolve_place`). ``frame_size`` tunes the compiled
    preprocessing's tasks too (compile ``--frame-size``). ``progress(task_name, trials_done,
    trials_wanted, best_latency_us)`` is called after every batch. ``quant`` tunes the int8 network
    compile builds with that calibration (its kernels do not depend on the calibration's values).
    ``remeasure`` first re-times the stored best records of the model's kernels here
    (:meth:`TuningSession.remeasure`).
    """
    start = time.perf_counter()
    place = place or Place(HOST)
    path = _check_request(checkpoint, target, trials_per_task, database_dir, place)
    settings = SearchSettings(trials_per_iter, build_timeout, population_size, seed)
    with library_lock(path):
        session = TuningSession.open(checkpoint, target, trials_per_task, path, place, prepack, frame_size, settings,
                                     progress, quant)
        try:
            if remeasure:
                session.remeasure()
            states, selected = session.plan(max_tasks, missing_only)
            for rank, i in enumerate(selected, 1):
                if budget_s is not None and time.perf_counter() - start > budget_s:
                    log.info("budget of %.1f min spent: %d of %d kernels left for the next run",
                             budget_s / 60, len(selected) - rank + 1, len(selected))
                    break
                session.tune_task(i, rank, len(selected))
            records = session.finish()
        finally:
            session.close()
    summary = _summary(target, path, states, session.metadata, session.trials, records, time.perf_counter() - start,
                       session.builder, session.prepack)
    log.info("%s", summary.line())
    return summary


class TuningSession:
    """One tuning run over a locked library: the working copy of its database, ``tuning.json``'s
    metadata, the model's tasks, and the builder, runner and cost model every task shares."""

    def __init__(self, working: WorkingCopy, extracted: list[Any], builder: PersistentBuilder,
                 warming: list[Any], runner: Any, close_runner: Callable[[], None], measured_on: str, model: str,
                 prepack: bool, trials_per_task: int, settings: SearchSettings,
                 progress: Callable[[str, int, int, float | None], None] | None) -> None:
        self.working, self.extracted = working, extracted
        self.builder, self._warming, self.runner, self._close_runner = builder, warming, runner, close_runner
        self.measured_on, self.model, self.prepack = measured_on, model, prepack
        self.trials_per_task, self.settings, self.progress = trials_per_task, settings, progress
        self.host_cores = os.cpu_count() or 1  # builds, search and cost model run here
        self.cost_model = ms.cost_model.XGBModel(num_tuning_cores=self.host_cores)
        self.ms_log = logging.getLogger("tsm_deploy.tune.metaschedule")
        for name in ("tvm.s_tir.meta_schedule", self.ms_log.name):
            if logging.getLogger(name).level == logging.NOTSET:  # per-batch tables and XGBoost chatter
                logging.getLogger(name).setLevel(logging.WARNING)
        self.states: list[TaskState] = []
        self.trials = 0  # measured in this run

    @property
    def metadata(self) -> dict[str, Any]:
        """``tuning.json`` as this run will write it (the working copy commits it)."""
        return self.working.metadata

    @classmethod
    def open(cls, checkpoint: LoadedCheckpoint, target: DeployTarget, trials_per_task: int, path: Path, place: Place,
             prepack: bool | None, frame_size: tuple[int, int] | None, settings: SearchSettings,
             progress: Callable[[str, int, int, float | None], None] | None,
             quant: QuantSpec | None = None) -> "TuningSession":
        """Prepare the model as compile does, extract its tasks, start the builder and the runner."""
        old = read_metadata(path)
        kind = {EMULATED: "emulated-instructions", RPC: "rpc"}.get(place.kind, "local")
        if measurement_kind(old) and measurement_kind(old) != measurement_kind({"measured_by": kind}):
            raise TsmDeployError(
                f"{path} holds costs measured as {old['measured_by']}; this run would measure as {kind}: "
                "costs of two kinds cannot be compared (use another --tuning-db)"
            )
        prepack = _resolve_prepack(path, old, prepack, target)
        builder = PersistentBuilder(max_workers=os.cpu_count() or 1, timeout_sec=settings.build_timeout,
                                    cross_compiler=target.cross_compiler)
        warming = builder.start()  # the workers import TVM's tensor intrinsics while the model is prepared
        close_runner: Callable[[], None] = lambda: None
        try:
            mod = prepare_module(checkpoint, target, prepack=prepack, frame_size=frame_size, quant=quant).mod
            extracted = [  # hand-written kernels (the state packing) come scheduled: nothing to tune
                task for task in ms.relax_integration.extract_tasks(mod, target.tvm(), module_equality="structural")
                if not is_scheduled(task.dispatched[0]["main"])
            ]
            runner, close_runner, measured_on = _runner(target, place)
            key = model_key(checkpoint.config, "int8" if quant is not None else "fp32")
            working = WorkingCopy(path, _run_metadata(old, target, checkpoint, key, prepack, kind, measured_on))
        except BaseException:
            builder.shutdown()
            close_runner()
            raise
        return cls(working, extracted, builder, warming, runner, close_runner, measured_on,
                   key, prepack, trials_per_task, settings, progress)

    def plan(self, max_tasks: int | None, missing_only: bool) -> tuple[list[TaskState], list[int]]:
        """The task states and the indices to tune, in order (see :func:`plan_tasks`)."""
        have: set[int] = set()
        if missing_only:
            have = {i for i, task in enumerate(self.extracted) if self.working.database.has_workload(task.dispatched[0])}
            for i in have:  # a record from a merge or a run without tuning.json's count
                self.metadata["tasks"].setdefault(_task_key(self.extracted[i]), {}).setdefault("trials", self.trials_per_task)
        self.states, selected = plan_tasks(self.extracted, self.metadata["tasks"], max_tasks)
        if missing_only:
            selected = sorted((i for i in selected if i not in have), key=lambda i: -self.states[i].flops * self.states[i].weight)
        log.info("%d tasks; tuning %d of them to %d trials each into %s (prepack=%s, measured by %s)",
                 len(self.states), len(selected), self.trials_per_task, self.working.dir, self.prepack, self.measured_on)
        return self.states, selected

    def tune_task(self, i: int, rank: int, of: int) -> None:
        """Tune task ``i`` until it has ``trials_per_task`` trials, committing the database every batch."""
        for future in self._warming:
            future.result()
        self._warming = []
        st, task = self.states[i], self.extracted[i]
        st.best_us = _best_us(self.working.database, task)
        remaining = self.trials_per_task - st.trials
        if remaining <= 0:
            log.info("[%d/%d] %s: %d trials already, best %s", rank, of, st.name, st.trials, _fmt_us(st.best_us))
            return
        log.info("[%d/%d] %s (weight %d, %.1f MFLOP): %d trials so far, tuning %d more",
                 rank, of, st.name, st.weight, st.flops / 1e6, st.trials, remaining)

        def on_batch(n: int, latencies: list[float]) -> None:
            st.trials += n
            self.trials += n
            if latencies:
                best = min(latencies) * 1e6
                st.best_us = best if st.best_us is None else min(st.best_us, best)
            self._record(st)
            self.working.commit()
            log.info("[%d/%d] %s: %d/%d trials, best %s, %d valid of %d", rank, of, st.name,
                     st.trials, self.trials_per_task, _fmt_us(st.best_us), len(latencies), n)
            if self.progress is not None:
                self.progress(st.name, st.trials, self.trials_per_task, st.best_us)

        try:
            _search(self._context(i, task, st), task, remaining, self.settings.trials_per_iter, self.builder, self.runner,
                    self.working, self.cost_model, on_batch)
        except RuntimeError as exc:  # TVM's search itself failed on this kernel (seen: an int32 overflow in a
            # candidate's loop bounds): the records so far are committed; the other kernels go on
            log.warning("%s: the search failed after %d trials (%s); going on with the next kernel",
                        st.name, st.trials, " ".join(str(exc).split())[-200:])
            self.working.commit()
            return
        if st.trials < self.trials_per_task:
            # the search ran out of new candidates: count the task as done for this budget
            log.info("%s: search space exhausted at %d trials", st.name, st.trials)
            st.trials = self.trials_per_task
            self._record(st)
        self.working.commit()

    def remeasure(self, top_k: int = REMEASURE_TOP_K) -> int:
        """Re-time the ``top_k`` best stored records of each of the model's kernels where this run
        measures; a kernel with at least one re-timed record keeps only those (see the module
        docstring). -> kernels re-timed."""
        for future in self._warming:
            future.result()
        self._warming = []
        database, first = self.working.database, self.working.records()
        with_records = [task for task in self.extracted if database.has_workload(task.dispatched[0])]
        retimed = 0
        for rank, task in enumerate(with_records, 1):
            workload = database.commit_workload(task.dispatched[0])
            records = list(database.get_top_k(workload, top_k))
            before = _best_us(database, task)
            timed = self._time_records(workload, records, task.target)
            for record, secs in timed:
                database.commit_tuning_record(
                    ms.database.TuningRecord(record.trace, workload, secs, record.target, record.args_info))
            best = min((sum(secs) / len(secs) * 1e6 for _, secs in timed), default=None)
            log.info("[%d/%d] %s: re-timed %d of %d records, best %s (stored: %s)", rank, len(with_records),
                     task.task_name, len(timed), len(records), _fmt_us(best), _fmt_us(before))
            if self.progress is not None:
                self.progress(f"re-timing {task.task_name}", len(timed), len(records), best)
            if timed:
                retimed += 1
                entry = self.metadata["tasks"].setdefault(_task_key(task), {"name": task.task_name, "trials": 0})
                entry.update(best_us=best, measured_on=[self.measured_on])
        dropped = self.working.keep_only_from(first)
        self.working.commit()
        log.info("re-timed %d of %d kernels with records; %d records measured elsewhere dropped",
                 retimed, len(with_records), dropped)
        return retimed

    def _time_records(self, workload: Any, records: list[Any], target: Any) -> list[tuple[Any, list[float]]]:
        """``(record, run_secs)`` for each of ``records`` that builds and runs here."""
        from tvm.s_tir.meta_schedule.utils import remove_build_dir

        schedules = []
        for record in records:
            sch = tvm.s_tir.Schedule(workload.mod)
            record.trace.apply_to_schedule(sch, remove_postproc=False)
            schedules.append(sch.mod)
        built = self.builder.build([ms.builder.BuilderInput(mod, target) for mod in schedules])
        for result in built:
            if result.error_msg is not None:
                log.warning("a stored record does not build here: %s", " ".join(str(result.error_msg).split())[-200:])
        ready = [(record, result) for record, result in zip(records, built) if result.error_msg is None]
        device = {"llvm": "cpu"}.get(target.kind.name, target.kind.name)  # a device name, as the search's inputs
        futures = self.runner.run([ms.runner.RunnerInput(result.artifact_path, device, record.args_info)
                                   for record, result in ready])
        timed = []
        for (record, result), future in zip(ready, futures):
            run = future.result()
            secs = [float(s) for s in run.run_secs or []]
            if run.error_msg is None and secs and max(secs) < 1e9:
                timed.append((record, secs))
            else:
                log.warning("a stored record does not run here: %s",
                            " ".join(str(run.error_msg or secs).split())[-200:])
            remove_build_dir(result.artifact_path)
        return timed

    def _context(self, i: int, task: Any, st: TaskState) -> Any:
        space: Any = "post-order-apply"
        if _is_small_copy(task.dispatched[0], st.flops):
            space = ms.space_generator.PostOrderApply(sch_rules=_serial_rules(task.target))
        seed = self.settings.seed
        return ms.TuneContext(
            # the stored workload when the database has a structurally equal one: its block names, which the
            # traces refer to, may differ from this module's (see database.unreplayable_records)
            mod=self.working.database.commit_workload(task.dispatched[0]).mod,
            target=task.target,
            space_generator=space,
            search_strategy=ms.search_strategy.EvolutionarySearch(population_size=self.settings.population_size),
            task_name=task.task_name,
            rand_state=-1 if seed is None else seed + i,
            num_threads=self.host_cores,
            logger=self.ms_log,  # not MetaSchedule's own per-task log files and console handlers
        ).clone()

    def _record(self, st: TaskState) -> None:
        entry = self.metadata["tasks"].get(st.key, {})
        self.metadata["tasks"][st.key] = {
            **entry, "name": entry.get("name", st.name), "trials": st.trials, "weight": max(st.weight, entry.get("weight", 0)),
            "best_us": st.best_us, "models": sorted({*entry.get("models", []), self.model}),
            "measured_on": sorted({*entry.get("measured_on", []), self.measured_on}),
        }

    def finish(self) -> int:
        """Every task's best cost from the database; the library committed. -> records in it."""
        for st, task in zip(self.states, self.extracted):
            st.best_us = _best_us(self.working.database, task)
        self.working.commit()
        return self.working.records()

    def close(self) -> None:
        self.builder.shutdown()
        self._close_runner()
        self.working.close()


def _run_metadata(old: dict[str, Any], target: DeployTarget, checkpoint: LoadedCheckpoint, key: str, prepack: bool,
                  kind: str, measured_on: str) -> dict[str, Any]:
    """``tuning.json`` for this run: the library's, with this model's run counted."""
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    models = dict(old.get("models", {}))
    models[key] = {**models.get(key, {}), "config": checkpoint.config.to_dict(), "machine_cpu": measured_on,
                   "runs": int(models.get(key, {}).get("runs", 0)) + 1,
                   "started": models.get(key, {}).get("started") or now}
    return {
        "target": old.get("target", target.name),
        "tvm_target": old.get("tvm_target", target.tvm_target),
        "prepack": prepack,
        "tvm_version": tvm.__version__,
        "measured_by": kind,
        "models": models,  # model key -> {"config", "runs", "machine_cpu", "started"}
        # workload hash -> {"name", "trials", "weight", "best_us", "models", "measured_on"}
        "tasks": dict(old.get("tasks", {})),
    }


def _search(context: Any, task: Any, remaining: int, trials_per_iter: int, builder: Any, runner: Any,
            working: WorkingCopy, cost_model: Any, on_batch: Callable[[int, list[float]], None]) -> None:
    ms.tune_tasks(
        tasks=[context],
        task_weights=[float(task.weight)],
        work_dir=str(working.work),
        max_trials_global=remaining,
        max_trials_per_task=remaining,
        num_trials_per_iter=min(trials_per_iter, remaining),
        builder=builder,
        runner=runner,
        database=working.database,
        cost_model=cost_model,
        measure_callbacks=[
            ms.measure_callback.AddToDatabase(),
            ms.measure_callback.RemoveBuildArtifact(),
            ms.measure_callback.UpdateCostModel(),
            _Progress(on_batch),
        ],
        task_scheduler="round-robin",
    )


SMALL_COPY_ELEMENTS = 1 << 16  # elements over all buffers


def _is_small_copy(mod: Any, flops: float) -> bool:
    """Pure data movement (a shift's slices and concatenation, the state packing) of few elements:
    starting the thread pool costs more than the copy (measured: 2-5 us a launch on 2 cores, for
    kernels of ~1 us serial), so these are tuned without thread parallelism."""
    if flops > 0:
        return False
    func = next(iter(mod.functions.values()))
    total = 0
    for param in func.params:  # TVM 0.27: buffer parameters carry their shape
        size = 1
        for dim in getattr(param, "shape", None) or ():
            size *= int(dim)
        total += size
    return total < SMALL_COPY_ELEMENTS


def _serial_rules(target: Any) -> list[Any]:
    """The target's schedule rules, with vectorisation and unrolling but no parallel loops."""
    serial = ms.schedule_rule.ParallelizeVectorizeUnroll(
        max_jobs_per_core=-1, max_vectorize_extent=64, unroll_max_steps=[0, 16, 64, 512], unroll_explicit=True
    )
    rules = ms.schedule_rule.ScheduleRule.create(target.kind.name)
    return [serial if isinstance(r, ms.schedule_rule.ParallelizeVectorizeUnroll) else r for r in rules]


def _summary(
    target: DeployTarget, path: Path, states: list[TaskState], metadata: dict[str, Any], trials: int, records: int,
    elapsed: float, builder: PersistentBuilder, prepack: bool,
) -> TuningSummary:
    tuned = [s for s in states if s.best_us is not None]
    if builder.builds:
        log.info("builder: %d builds, %.2f s per build (wall, %d workers), %d failed",
                 builder.builds, builder.build_seconds / builder.builds, builder.max_workers, builder.failures)
    return TuningSummary(
        target=target.name,
        database=path,
        tasks=len(states),
        tuned_tasks=len(tuned),
        trials=trials,
        total_trials=sum(int(t.get("trials", 0)) for t in metadata["tasks"].values()),
        records=records,
        estimated_ms=(sum(s.cost_us for s in tuned) / 1e3) if tuned else None,
        untuned_tasks=tuple(sorted(s.name for s in states if s.best_us is None)),
        tuned_fraction=(sum(s.flops * s.weight for s in tuned) / total) if (total := sum(s.flops * s.weight for s in states)) else 0.0,
        elapsed_s=elapsed,
        build_failures=builder.failures,
        prepack=prepack,
        per_task=tuple(asdict(s) for s in sorted(states, key=lambda s: -(s.cost_us or 0))),
    )
