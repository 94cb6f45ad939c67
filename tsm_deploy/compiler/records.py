"""Tuning records applied kernel by kernel, from the target's library and then its fallbacks.

A prepared module's kernels (its fused TIR functions) are scheduled in stages: the target's own
library, then each library the target file names as valid on it (``record_fallbacks``), then, for
a kernel no library has, the schedule of the nearest tuned kernel of the same kind carried over
(:mod:`.derived`), and a kernel that only moves data an inlined, parallel loop nest
(:mod:`.data_movement`). What is left runs TVM's default schedule. Coverage is reported by work (the
multiply-accumulates of the kernels each stage scheduled), not by count alone: a class count never
tuned changes one small dense layer, not the convolutions.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import tvm
from tvm import relax

from ..target.library import RecordLibrary, database_prepack, has_database, open_database, read_metadata
from .data_movement import schedule_data_movement
from .kernels import is_scheduled, kernel_macs, tir_functions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuningCoverage:
    database: str | None  # the first library applied (the target's own), None when there was none
    tasks: int  # kernels that need a schedule (hand-written ones come scheduled)
    tuned: int  # of which a library had a record for
    untuned: tuple[str, ...] = field(default_factory=tuple)  # kernels without a record
    libraries: tuple[str, ...] = ()  # paths of the libraries applied, in order
    by_library: tuple[tuple[str, int], ...] = ()  # (library name, kernels it scheduled)
    derived: tuple[tuple[str, str], ...] = ()  # (kernel, the tuned kernel whose schedule it took)
    data_movement: tuple[str, ...] = ()  # kernels without a reduction given :mod:`.data_movement`'s schedule
    macs: float = 0.0  # multiply-accumulates of all kernels, per call of main
    tuned_macs: float = 0.0  # of those, in kernels scheduled from a record
    missing_macs: tuple[tuple[str, float], ...] = ()  # (kernel, macs) without a record, largest first

    @property
    def tuned_fraction(self) -> float:
        return self.tuned_macs / self.macs if self.macs else (1.0 if self.tuned == self.tasks else 0.0)

    def line(self) -> str:
        """``tuned: 98.7 % of the model's multiply-accumulates, 41 of 44 kernels, 6 from x86-avx2 records``."""
        if not self.libraries:
            text = f"untuned: no tuning records ({self.tasks} kernels)"
        else:
            own = self.by_library[0][0] if self.by_library else None
            others = [f"{n} from {name} records" for name, n in self.by_library[1:] if n]
            text = (f"tuned: {100 * self.tuned_fraction:.1f} % of the model's multiply-accumulates, "
                    f"{self.tuned} of {self.tasks} kernels" + (f" ({own} library)" if own else ""))
            if others:
                text += ", " + ", ".join(others)
        if self.derived:
            text += f"; {len(self.derived)} kernels scheduled like the nearest tuned kernel"
        if self.data_movement:
            text += f"; {len(self.data_movement)} data-movement kernels inlined and run in parallel"
        default = self.tasks - self.tuned - len(self.derived) - len(self.data_movement)
        if default:
            text += f"; {default} on TVM's default schedule"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "tasks": self.tasks,
            "tuned": self.tuned,
            "untuned": list(self.untuned),
            "libraries": list(self.libraries),
            "by_library": {name: n for name, n in self.by_library},
            "derived": {kernel: source for kernel, source in self.derived},
            "data_movement": list(self.data_movement),
            "macs": self.macs,
            "tuned_macs": self.tuned_macs,
            "tuned_fraction": round(self.tuned_fraction, 6),
        }


def attach_layout_free(mod: tvm.IRModule) -> tvm.IRModule:
    """Mark weight buffers (constants of main) layout-free: MetaSchedule may then rewrite their layout."""
    return relax.transform.AttachAttrLayoutFreeBuffers()(mod)


def prepack_weights(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """Split the tuned kernels' weight layout rewrites into functions of their own and fold them:
    the weights are constants, so they are stored pre-packed and the kernels no longer repack them."""
    with target:
        return tvm.transform.Sequential(
            [
                relax.transform.SplitLayoutRewritePreproc(),
                relax.transform.FoldConstant(),
                relax.transform.CanonicalizeBindings(),
                relax.transform.DeadCodeElimination(),
            ]
        )(mod)


def _has_layout_free(mod: tvm.IRModule) -> bool:
    return any(f.attrs is not None and "layout_free_buffers" in f.attrs for f in tir_functions(mod).values())


def _usable(libraries: Sequence[RecordLibrary]) -> list[RecordLibrary]:
    """The libraries that exist, all of the first one's prepacking mode (a workload tuned with
    layout-free weights is another workload than one without)."""
    present = [lib for lib in libraries if has_database(lib.path)]
    if not present:
        return []
    mode = database_prepack(present[0].path)
    kept = [lib for lib in present if database_prepack(lib.path) == mode]
    for lib in present:
        if lib not in kept:
            log.warning("records of %s (%s) were tuned with prepack=%s, not %s: not used", lib.name, lib.path,
                        not mode, mode)
    return kept


def _apply(mod: tvm.IRModule, target: tvm.target.Target, database: Any) -> tvm.IRModule:
    with target, database:
        return relax.transform.MetaScheduleApplyDatabase()(mod)


def apply_records(
    mod: tvm.IRModule, target: tvm.target.Target, libraries: Sequence[RecordLibrary], derive: bool = True
) -> tuple[tvm.IRModule, TuningCoverage]:
    """Schedule the kernels of ``mod`` (from :func:`tsm_deploy.compiler.pipeline.prepare_module`, without
    prepacking) from ``libraries`` in order; with ``derive``, carry the nearest tuned kernel's
    schedule over to those no library has, and give the data-movement kernels still left
    :mod:`.data_movement`'s schedule. When the libraries were tuned with prepacking
    (``tuning.json``), the same layout-free marking is applied first so the workloads match, and the
    weight layout rewrites of the scheduled kernels are folded into the constants afterwards."""
    functions = tir_functions(mod)
    todo = {name: kernel_macs(f) for name, f in functions.items() if not is_scheduled(f)}
    total = sum(todo.values())
    libraries = _usable(libraries)
    if not libraries:
        missing = tuple(sorted(todo))
        coverage = TuningCoverage(None, len(todo), 0, missing, macs=total,
                                  missing_macs=tuple(sorted(todo.items(), key=lambda kv: -kv[1])))
        return mod, coverage
    prepack = database_prepack(libraries[0].path)
    if prepack and not _has_layout_free(mod):
        mod = attach_layout_free(mod)
    by_library = []
    databases = []
    with tempfile.TemporaryDirectory(prefix="tsm-db-") as scratch:
        for n, lib in enumerate(libraries):
            database = open_database(lib.path, Path(scratch) / str(n))
            databases.append((lib.name, database, read_metadata(lib.path).get("tasks", {})))
            before = _unscheduled(mod)
            mod = _apply(mod, target, database)
            by_library.append((lib.name, len(before - _unscheduled(mod))))
    left = {name: kernel_macs(f) for name, f in tir_functions(mod).items() if not is_scheduled(f)}
    derived: list[tuple[str, str]] = []
    if derive and left:
        from .derived import derive_schedules

        mod, derived = derive_schedules(mod, target, sorted(left), databases)
    moved: list[str] = []
    if derive:
        mod, moved = schedule_data_movement(mod, target, sorted(_unscheduled(mod)))
    if prepack:
        mod = prepack_weights(mod, target)
    untuned = tuple(sorted(left))  # the names as the libraries left them (applying records renames)
    coverage = TuningCoverage(
        database=str(libraries[0].path),
        tasks=len(todo),
        tuned=len(todo) - len(untuned),
        untuned=untuned,
        libraries=tuple(str(lib.path) for lib in libraries),
        by_library=tuple(by_library),
        derived=tuple(derived),
        data_movement=tuple(moved),
        macs=total,
        tuned_macs=total - sum(left.values()),
        missing_macs=tuple(sorted(left.items(), key=lambda kv: -kv[1])),
    )
    return mod, coverage


def _unscheduled(mod: tvm.IRModule) -> set[str]:
    return {name for name, f in tir_functions(mod).items() if not is_scheduled(f)}
