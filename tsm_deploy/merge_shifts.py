"""After the tuning records: each shift kernel joins the kernel that consumes the activation it shifts.

Why: a shift's own work is a few thousand float copies, but as a kernel of its own it costs a VM call,
an output allocation and a packed function's argument checks, ten times per frame; on the default
model that dispatch was most of the shift's overhead. Putting the shift's block in front of its
consumer (the block's expansion convolution, already scheduled by its record) removes those calls
without touching the tuned loops: the consumer keeps the schedule its record gave it, the tuner never
sees the merged kernel (tune and compile prepare the same module; this runs after the records), and the
shifted activation becomes a buffer inside the kernel rather than a tensor of the graph.

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

from .transforms import SHIFT_ATTR, shift_block

log = logging.getLogger(__name__)

_CALL_TIR = tvm.ir.Op.get("relax.call_tir")
_OPAQUE = 8  # TVM's kOpaque op pattern: nothing fuses with the merged kernel


def merge_shifts_into_consumers(mod: tvm.IRModule) -> tvm.IRModule:
    """Merge every shift kernel of ``main`` into the one kernel that reads its output (see above)."""
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
        kernel = _merged_kernel(mod[shift_gv], mod[consumer_gv], position)
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


def _merged_kernel(shift: tvm.tirx.PrimFunc, consumer: Any, position: int) -> tvm.tirx.PrimFunc | None:
    """``consumer(..., shifted, ...)`` -> ``consumer(..., state, x, ...)``: the consumer's ``shifted``
    parameter becomes a buffer of its root block, written first by the shift's block."""
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
    block = shift_block(state, x, inner, int(spec["channels"]), int(spec["offset"]))
    root = consumer.body.block
    merged_root = SBlock([], [], [], "root", tvm.tirx.SeqStmt([block, root.body]), None,
                         [inner, *root.alloc_buffers], list(root.match_buffers), root.annotations)
    params = [*consumer.params[:position], state, x, *consumer.params[position + 1 :]]
    attrs = {str(k): v for k, v in consumer.attrs.items()} if consumer.attrs is not None else {}
    attrs["op_pattern"] = _OPAQUE
    return tvm.tirx.PrimFunc(params, SBlockRealize([], True, merged_root), consumer.ret_type,
                             tvm.ir.make_node("ir.DictAttrs", **attrs))


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
