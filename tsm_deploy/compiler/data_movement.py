"""A schedule without search for the kernels that only move data (no reduction).

Such kernels are chains of transposes, reshapes, strided slices and concatenations, each step
materialised in its own buffer and run on one thread by TVM's default schedule (the offline shift's
chain no longer reaches here on CPU targets: ``passes/clip_shift.py`` makes it one copy kernel). Here every step is inlined into the kernel's output, the
outer loops run in parallel and the innermost loop (channels, in NHWC) is vectorised. Kernels with
a record or a derived schedule never reach this.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import tvm
from tvm import s_tir

log = logging.getLogger(__name__)

VECTOR_LANES = 8  # fp32 lanes of an AVX2 register; on NEON LLVM splits the vector in two


def _is_spatial(sch: Any, block: Any) -> bool:
    return all(iv.iter_type == tvm.tirx.IterVar.DataPar for iv in sch.get(block).iter_vars)


def _schedule(func: Any) -> Any | None:
    sch = s_tir.Schedule(tvm.IRModule({"main": func}))
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    if not blocks or not all(_is_spatial(sch, b) for b in blocks):
        return None
    for block in blocks[:-1]:
        try:
            sch.compute_inline(block)
        except s_tir.ScheduleError:
            pass  # kept as its own loop nest, scheduled below like the output
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        loops = sch.get_loops(block)
        if len(loops) > 1:
            sch.parallel(sch.fuse(*loops[:-1]))
        inner = loops[-1]
        extent = sch.get(inner).extent
        if isinstance(extent, tvm.tirx.IntImm) and extent.value % VECTOR_LANES == 0 and extent.value > VECTOR_LANES:
            _, lanes = sch.split(inner, [None, VECTOR_LANES])
            sch.vectorize(lanes)
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def schedule_data_movement(
    mod: tvm.IRModule, target: tvm.target.Target, names: Sequence[str]
) -> tuple[tvm.IRModule, list[str]]:
    """Give the reduction-free kernels among ``names`` an inlined, parallel, vectorised schedule
    (CPU targets only). -> (module, names of the kernels scheduled)."""
    if target.kind.name != "llvm":
        return mod, []
    functions = dict(mod.functions)
    done: list[str] = []
    for name in names:
        gv = mod.get_global_var(name)
        scheduled = _schedule(functions[gv])
        if scheduled is not None:
            functions[gv] = scheduled
            done.append(name)
            log.info("kernel %s: data movement, inlined and run in parallel", name)
    return (tvm.IRModule(functions, attrs=mod.attrs) if done else mod), done
