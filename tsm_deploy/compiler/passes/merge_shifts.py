"""After the tuning records: each shift kernel joins the kernel that consumes the activation it shifts.

Why: a shift's own work is a few thousand float copies, but as a kernel of its own it costs a VM call,
an output allocation and a packed function's argument checks, ten times per frame; on the default
model that dispatch was most of the shift's overhead. The merge keeps the consumer's tuned loops (its
record's schedule; the tuner never sees the merged kernel: tune and compile prepare the same module and
this runs after the records); a small loop after them writes this frame's channels into the state.

Two ways, chosen per target (``shift_merge`` in the target file) by what was measured (2026-12-02,
commit a54e55b, default model): ``copy`` writes the shifted activation in front of the tuned loops
(one thread, a loop over the pixels); ``inline`` inlines the shift's values into the tuned loops: they read the previous
frame's channels straight from the state and the rest from the activation, and the shifted activation
is never written. x86 (x86-avx2 records, paired TVM-only rounds on a 2-core VM, against the network
without shifts): copy +1.9 % per frame at two threads, inline +0.35 to +0.99 % (the bench's own
pair runs: +0.3 to +1.9 %, by how busy the VM was); exact x86 count +5.0 k -> +2.3 k instructions.
Emulated Cortex-A72 (rasp4 records): inline +2.2 % instructions against copy's +0.3 % (its tuned
loops keep a test per element), so ARM targets copy.

``s = call_tir(shift_state_k, (state, x))`` + ``y = call_tir(consumer, (..., s, ...))`` ->
``y = call_tir(consumer_shift_state_k, (..., state, x, ...))``. Merging into the producer instead
was measured worse: a kernel with two outputs makes the VM build a tuple per call.
A shifted activation used more than once, or by anything but a kernel call, keeps its shift kernel.
"""

from __future__ import annotations

import logging
from typing import Any

import tvm
from tvm import relax
from tvm.s_tir import SBlock, SBlockRealize

from .shift_kernel import SHIFT_ATTR, SHIFT_VALUES_BLOCK, shift_values, state_update_block

log = logging.getLogger(__name__)

_CALL_TIR = tvm.ir.Op.get("relax.call_tir")
_OPAQUE = 8  # TVM's kOpaque op pattern: nothing fuses with the merged kernel

def merge_shifts_into_consumers(mod: tvm.IRModule, inline: bool = False) -> tvm.IRModule:
    """Merge every shift kernel of ``main`` into the one kernel that reads its output (see above):
    ``inline``: its values read inside the tuned loops; else written in front of them (a copy)."""
    main_gv = next((gv for gv in mod.get_global_vars() if gv.name_hint == "main"), None)
    if main_gv is None or not isinstance(mod[main_gv], relax.Function):
        return mod
    main = mod[main_gv]
    bound = {b.var: b.value for block in main.body.blocks for b in block.bindings if isinstance(b, relax.VarBinding)}
    uses = _uses(main)
    merges: dict[relax.Var, tuple[relax.Call, tvm.tirx.PrimFunc, str]] = {}  # consumer var -> merge
    for var, call in bound.items():
        shift_gv = _callee(call)
        if shift_gv is None or not _is_shift_kernel(mod[shift_gv]) or len(call.args[1].fields) != 2:
            continue
        users = uses.get(var, [])
        if len(users) != 1 or users[0] not in bound or users[0] in merges:
            continue
        consumer = bound[users[0]]
        consumer_gv = _callee(consumer)
        if consumer_gv is None or _is_shift_kernel(mod[consumer_gv]):
            continue
        args = list(consumer.args[1].fields)
        position = next((i for i, a in enumerate(args) if a.same_as(var)), None)
        if position is None or sum(a.same_as(var) for a in args) != 1:
            continue
        kernel = _merged_kernel(mod[shift_gv], mod[consumer_gv], position, inline)
        if kernel is None:
            continue
        state, x = call.args[1].fields
        merged_call = (relax.Tuple(args[:position] + [state, x] + args[position + 1 :]), consumer.ty_args[0])
        merges[users[0]] = (merged_call, kernel, f"{consumer_gv.name_hint}_{shift_gv.name_hint}")
    if not merges:
        return mod
    mutator = _Merger(mod, merges)
    mutator.builder_.update_func(main_gv, mutator.visit_expr(main))
    log.info("merged %d shift kernels into their consumers", len(merges))
    return relax.transform.DeadCodeElimination()(mutator.builder_.get())


def _uses(func: relax.Function) -> dict[relax.Var, list[Any]]:
    """For each variable, what uses it: the variable a binding defines, or ``None`` for the return."""
    found: dict[relax.Var, list[Any]] = {}

    def collect(expr: relax.Expr, user: Any) -> None:
        relax.analysis.post_order_visit(expr, lambda e: found.setdefault(e, []).append(user)
                                        if isinstance(e, relax.Var) else None)

    for block in func.body.blocks:
        for binding in block.bindings:
            collect(binding.value, binding.var)
    collect(func.body.body, None)
    return found


def _is_shift_kernel(func: Any) -> bool:
    return isinstance(func, tvm.tirx.PrimFunc) and func.attrs is not None and SHIFT_ATTR in func.attrs


def _callee(value: relax.Expr) -> tvm.ir.GlobalVar | None:
    """The PrimFunc's GlobalVar of ``call_tir(gv, (args...), out)`` with a single tensor output."""
    if not (isinstance(value, relax.Call) and value.op == _CALL_TIR and isinstance(value.args[0], tvm.ir.GlobalVar)):
        return None
    if len(value.args) != 2 or not isinstance(value.args[1], relax.Tuple) or len(value.ty_args) != 1:
        return None
    return value.args[0] if isinstance(value.ty_args[0], relax.TensorType) else None


def _merged_kernel(shift: tvm.tirx.PrimFunc, consumer: Any, position: int, inline: bool) -> tvm.tirx.PrimFunc | None:
    """``consumer(..., shifted, ...)`` -> ``consumer(..., state, x, ...)``: ``shifted`` becomes a buffer
    of the kernel written first (or, ``inline``, the consumer's tuned loops read ``state`` for the shifted
    channels and ``x`` for the rest), then a small loop writes ``x``'s shifted channels into the state
    (after every read of it)."""
    if not isinstance(consumer, tvm.tirx.PrimFunc) or not isinstance(consumer.body, SBlockRealize):
        return None
    if len(shift.params) != 3 or position >= len(consumer.params) - 1:
        return None
    state, x, shifted = shift.params
    inner = consumer.params[position]
    if not (tvm.tirx.is_buffer_var(inner) and [int(d) for d in inner.shape] == [int(d) for d in shifted.shape]
            and inner.dtype == shifted.dtype):
        return None
    spec = shift.attrs[SHIFT_ATTR]
    channels, offset = int(spec["channels"]), int(spec["offset"])
    params = [*consumer.params[:position], state, x, *consumer.params[position + 1 :]]
    attrs = {str(k): v for k, v in consumer.attrs.items()} if consumer.attrs is not None else {}
    attrs["op_pattern"] = _OPAQUE
    root = consumer.body.block

    def kernel(body: list[Any], alloc_buffers: list[Any]) -> tvm.tirx.PrimFunc:
        new_root = SBlock([], [], [], "root", tvm.tirx.SeqStmt(body), None, alloc_buffers, list(root.match_buffers),
                          root.annotations)
        return tvm.tirx.PrimFunc(params, SBlockRealize([], True, new_root), consumer.ret_type,
                                 tvm.ir.make_node("ir.DictAttrs", **attrs))

    # the shift as values of a buffer inside the kernel, then the state update after the tuned loops
    values = shift_values(state, x, inner, channels, offset)
    update = state_update_block(state, x, channels, offset)
    if not inline:
        return kernel([values, root.body, update], [inner, *root.alloc_buffers])
    # inline: TVM's own schedule primitive rewrites every read of that buffer (and the reading blocks'
    # regions) into reads of the state or x
    schedule = tvm.s_tir.Schedule(kernel([values, root.body], [inner, *root.alloc_buffers]))
    try:
        schedule.compute_inline(schedule.get_sblock(SHIFT_VALUES_BLOCK))
    except tvm.s_tir.ScheduleError as error:
        log.warning("a shift keeps its own kernel: its consumer cannot inline it (%s)", type(error).__name__)
        return None
    inlined = schedule.mod["main"].body.block
    return kernel([inlined.body, update], list(inlined.alloc_buffers))


@relax.expr_functor.mutator
class _Merger(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, merges: dict) -> None:
        super().__init__(mod)
        self.merges = merges

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:  # noqa: N802
        merge = self.merges.get(binding.var)
        if merge is None:
            super().visit_var_binding_(binding)
            return
        (args, out_ty), kernel, name = merge
        gv = self.builder_.add_func(kernel, name)
        call = relax.call_tir(gv, relax.Tuple([self.visit_expr(a) for a in args.fields]), out_ty)
        emit = self.builder_.emit if isinstance(binding.var, relax.DataflowVar) else self.builder_.emit_output
        self.set_var_remap(binding.var, emit(call))
