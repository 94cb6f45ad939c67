"""Schedules for kernels no library has: the nearest tuned kernel's schedule, carried over.

A kernel without a record would run TVM's default schedule: one thread, no vectorisation (measured:
an untuned TSM-ResNet-34 ran 110x slower than ONNX Runtime). A tuned kernel of the same kind (the
same blocks with the same loop structure: an NHWC convolution with a bias and a ReLU, say) at other
shapes has a schedule whose structure fits: tiling, vectorised channels, parallel outer loops, the
epilogue fused. Its trace is replayed on the new kernel, every tile split re-fitted to the new loop
extents (each factor the divisor of what is left nearest to the tuned one, the innermost within the
vector limit the rule set), and the target's post-processing run again. Candidates are tried
nearest first (the sum of |log ratio| of all loop extents); a trace that does not replay or fails a
post-processor is skipped. Nothing is measured: the result is a reasonable schedule, not a tuned one,
and coverage reports it apart from records.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Sequence

import tvm
from tvm.s_tir import meta_schedule as ms

from ..target.library import workload_key
from .kernels import is_scheduled, tir_functions, workload_of

log = logging.getLogger(__name__)

CANDIDATES_TRIED = 4  # nearest tuned kernels tried per kernel


@dataclass(frozen=True)
class _Shape:
    signature: tuple[Any, ...]  # block names, iteration kinds and buffer ranks: what a trace refers to
    extents: tuple[int, ...]  # every block's iteration extents, in order


def kernel_shape(mod: tvm.IRModule) -> _Shape | None:
    """The structure of a one-function workload, or None when it cannot be read (no root block)."""
    try:
        sch = tvm.s_tir.Schedule(mod)
        blocks = sch.get_child_blocks(sch.get_sblock("root", func_name="main"))
    except Exception:  # noqa: BLE001 - not a block-structured function
        return None
    signature: list[Any] = []
    extents: list[int] = []
    for rv in blocks:
        block = sch.get(rv)
        signature.append((block.name_hint, tuple(int(iv.iter_type) for iv in block.iter_vars)))
        for iv in block.iter_vars:
            extent = iv.dom.extent
            if not isinstance(extent, tvm.tirx.IntImm):
                return None
            extents.append(int(extent))
    func = mod["main"]
    signature.append(tuple(len(getattr(p, "shape", None) or ()) for p in func.params))  # TVM 0.27: params carry shapes
    return _Shape(tuple(signature), tuple(extents))


def _distance(a: _Shape, b: _Shape) -> float:
    return sum(abs(math.log(max(x, 1) / max(y, 1))) for x, y in zip(a.extents, b.extents))


def _nearest_divisor(n: int, want: int, limit: int) -> int:
    """The divisor of ``n`` (at most ``limit``) nearest to ``want`` on a log scale; ties: the larger."""
    best, best_gap = 1, float("inf")
    for d in range(1, min(n, limit) + 1):
        if n % d:
            continue
        gap = abs(math.log(d / max(want, 1)))
        if gap < best_gap or (gap == best_gap and d > best):
            best, best_gap = d, gap
    return best


def refit_tiles(extent: int, factors: Sequence[int], max_innermost: int) -> list[int]:
    """Tile factors for a loop of ``extent`` shaped like ``factors`` (tuned for another extent): the
    inner factors kept where they divide, else the nearest divisor; the outermost takes the rest."""
    if math.prod(factors) == extent:
        return list(factors)
    new = [1] * len(factors)
    rest = extent
    for i in range(len(factors) - 1, 0, -1):
        limit = max_innermost if (i == len(factors) - 1 and max_innermost > 0) else rest
        new[i] = _nearest_divisor(rest, int(factors[i]), limit)
        rest //= new[i]
    new[0] = rest
    return new


def _replay(trace: Any, workload: tvm.IRModule, postprocs: list[Any]) -> Any | None:
    """The trace replayed on ``workload`` with its tiles re-fitted, post-processed; None on failure."""
    sch = tvm.s_tir.Schedule(workload)

    def decide(inst: Any, inputs: list[Any], attrs: list[Any], decision: Any) -> Any:
        if inst.kind.name == "SamplePerfectTile":
            extent = sch.get(inputs[0]).extent
            if isinstance(extent, tvm.tirx.IntImm):
                return refit_tiles(int(extent), [int(f) for f in decision], int(attrs[1]))
        return decision

    try:
        trace.apply_to_schedule(sch, remove_postproc=True, decision_provider=decide)
        sch.enter_postproc()
        for postproc in postprocs:
            if not postproc.apply(sch):
                return None
    except Exception:  # noqa: BLE001 - a trace that does not fit this kernel: try the next one
        return None
    return sch


def _postprocs(target: tvm.target.Target, workload: tvm.IRModule) -> list[Any]:
    """The CPU post-processors MetaSchedule runs on every candidate (what ``Postproc.create("llvm")``
    lists), built directly: ``create`` and a ``TuneContext`` import TVM's tensor intrinsics first,
    which takes 35 s to minutes here, and none of these four needs them or a tuning context."""
    if target.kind.name != "llvm":
        return []
    post = ms.postproc
    return [post.DisallowDynamicLoop(), post.RewriteParallelVectorizeUnroll(), post.RewriteReductionBlock(),
            post.RewriteLayout()]


def _tuned_kernels(databases: Sequence[tuple[str, Any, dict[str, Any]]]) -> list[tuple[_Shape, Any, str]]:
    """(shape, best trace, kernel name) of every workload the libraries hold, own library first."""
    kernels = []
    seen: set[str] = set()
    for library, database, tasks in databases:
        best: dict[str, Any] = {}
        for record in database.get_all_tuning_records():
            key = workload_key(record.workload.mod)
            if key in seen or not record.run_secs:
                continue
            cost = sum(float(s) for s in record.run_secs) / len(record.run_secs)
            if cost >= 1e9:
                continue
            if key not in best or cost < best[key][0]:
                best[key] = (cost, record)
        for key, (_, record) in best.items():
            seen.add(key)
            shape = kernel_shape(record.workload.mod)
            if shape is not None:
                name = tasks.get(key, {}).get("name") or f"workload {key}"
                kernels.append((shape, record.trace, f"{name} ({library})"))
    return kernels


def derive_schedules(
    mod: tvm.IRModule, target: tvm.target.Target, names: Sequence[str],
    databases: Sequence[tuple[str, Any, dict[str, Any]]],
) -> tuple[tvm.IRModule, list[tuple[str, str]]]:
    """Schedule the kernels ``names`` of ``mod`` from the nearest tuned kernel of the same kind in
    ``databases`` ((library name, MetaSchedule database, its ``tuning.json`` tasks) triples).
    -> (module, [(kernel, source kernel)])."""
    if target.kind.name != "llvm":  # GPU kernels without records get dlight's schedules in tvm.compile
        return mod, []
    tuned = _tuned_kernels(databases)
    if not tuned:
        return mod, []
    functions = tir_functions(mod)
    memory = ms.database.MemoryDatabase(module_equality="structural")
    derived: list[tuple[str, str]] = []
    postprocs: list[Any] | None = None
    for name in names:
        workload = workload_of(functions[name])
        shape = kernel_shape(workload)
        if shape is None:
            continue
        candidates = sorted((c for c in tuned if c[0].signature == shape.signature), key=lambda c: _distance(shape, c[0]))
        for source_shape, trace, source in candidates[:CANDIDATES_TRIED]:
            postprocs = postprocs if postprocs is not None else _postprocs(target, workload)
            sch = _replay(trace, workload, postprocs)
            if sch is None:
                continue
            entry = memory.commit_workload(workload)
            # a placeholder cost: the record is the only one for its workload, never compared
            memory.commit_tuning_record(ms.database.TuningRecord(sch.trace, entry, [1.0], target,
                                                          ms.arg_info.ArgInfo.from_prim_func(workload["main"])))
            derived.append((name, source))
            log.info("kernel %s: schedule carried over from the tuned kernel %s", name, source)
            break
    if not derived:
        return mod, []
    with target, memory:
        scheduled = tvm.relax.transform.MetaScheduleApplyDatabase()(mod)
    # applying records may rename the functions it schedules: what is still unscheduled tells
    still = {n for n, f in tir_functions(scheduled).items() if not is_scheduled(f)}
    return scheduled, [(kernel, source) for kernel, source in derived if kernel not in still]

