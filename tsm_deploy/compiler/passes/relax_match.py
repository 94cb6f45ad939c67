"""What the passes share: the rewrite driver and the matchers of Relax expressions (bindings, static
shapes, permutes, channel slices)."""

from __future__ import annotations

from typing import Any, Callable

import tvm
from tvm import relax
from tvm.ir.prim.expr import IntImm

PERMUTE = tvm.ir.Op.get("relax.permute_dims")
CONCAT = tvm.ir.Op.get("relax.concat")
SLICE = tvm.ir.Op.get("relax.strided_slice")
RESHAPE = tvm.ir.Op.get("relax.reshape")


def rewrite(mutator: relax.PyExprMutator, mod: tvm.IRModule) -> tvm.IRModule:
    for gv, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gv, mutator.visit_expr(func))
    mod = mutator.builder_.get()
    return relax.transform.DeadCodeElimination()(relax.transform.CanonicalizeBindings()(mod))


def bindings(func: relax.Function) -> dict:
    body = func.body
    return {b.var: b.value for block in getattr(body, "blocks", []) for b in block.bindings if isinstance(b, relax.VarBinding)}


def static_shape(expr: relax.Expr) -> tuple[int, ...] | None:
    info = getattr(expr, "ty", None)
    if not isinstance(info, relax.TensorType) or info.shape is None or not isinstance(info.shape, relax.ShapeExpr):
        return None
    dims = list(info.shape.values)
    return tuple(int(d) for d in dims) if all(isinstance(d, IntImm) for d in dims) else None


def axes(call: relax.Call) -> tuple[int, ...] | None:
    axes = call.attrs.axes
    return None if axes is None else tuple(int(a) for a in axes)


def ints(expr: Any) -> list[int] | None:
    if not isinstance(expr, relax.Tuple):
        return None
    values = list(expr.fields)  # TVM 0.27: integer constants stand in the tuple as they are
    return [int(v) for v in values] if all(isinstance(v, IntImm) for v in values) else None


def flat_channel_slice(expr: relax.Expr, value: Callable) -> tuple[relax.Expr, int] | None:
    """(x, c) when ``expr`` is ``reshape(strided_slice(x, axes=[3], begin=[0], end=[c]), (1, n))``
    of a static 4-D batch-1 ``x``."""
    reshape = value(expr)
    if not isinstance(reshape, relax.Call) or reshape.op != RESHAPE:
        return None
    sliced = unit_slice(value(reshape.args[0]))
    if sliced is None:
        return None
    x, axis, begin, end = sliced
    dims = static_shape(x)
    if axis != 3 or begin != 0 or dims is None or len(dims) != 4 or dims[0] != 1:
        return None
    c = min(end, dims[3])
    target = ints(reshape.args[1]) if isinstance(reshape.args[1], relax.Tuple) else None
    if target is None and isinstance(reshape.args[1], relax.ShapeExpr):
        target = [int(v) for v in reshape.args[1].values if isinstance(v, IntImm)]
    if target != [1, dims[1] * dims[2] * c]:
        return None
    return x, c


def unit_slice(call: relax.Expr) -> tuple[relax.Expr, int, int, int] | None:
    """(x, axis, begin, end) when ``call`` is a ``strided_slice`` of one axis (counted from the front)
    with stride 1 and constant bounds."""
    if not isinstance(call, relax.Call) or call.op != SLICE:
        return None
    axes, begin, end = (ints(a) for a in call.args[1:4])
    strides = ints(call.args[4]) if len(call.args) > 4 and call.args[4] is not None else [1]
    shape = static_shape(call.args[0])
    if not axes or len(axes) != 1 or not begin or len(begin) != 1 or not end or len(end) != 1 or strides != [1]:
        return None
    if shape is None:
        return None
    return call.args[0], axes[0] % len(shape), begin[0], end[0]
