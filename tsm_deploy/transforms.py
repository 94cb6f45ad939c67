"""Relax rewrites the pipeline applies before fusion on CPU targets (see :func:`pipeline.fuse`).

- :func:`relu_from_clip`: the ONNX importer's Clip (ReLU6) arrives as opaque ``call_tir(maximum/
  minimum)`` with 0-d constant bounds, which layout conversion cannot see through (it would wrap
  every ReLU6 in transposes and keep it out of the convolution's fused kernel).
- :func:`fold_permutes`: after layout conversion to NHWC, a shift with channels-last buffers reads
  ``permute(concat(permute(buffer), permute(slice(x))))``; moving the permutes past the concatenation
  and the slice until they meet and cancel leaves a slice + concatenation on the channel axis.
"""

from __future__ import annotations

from typing import Any, Sequence

import tvm
from tvm import relax
from tvm.ir.prim.expr import IntImm


def _rewrite(mutator: relax.PyExprMutator, mod: tvm.IRModule) -> tvm.IRModule:
    for gv, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gv, mutator.visit_expr(func))
    mod = mutator.builder_.get()
    return relax.transform.DeadCodeElimination()(relax.transform.CanonicalizeBindings()(mod))


def relu_from_clip(mod: tvm.IRModule) -> tvm.IRModule:
    """``call_tir(maximum*, (x, 0))`` -> ``relu(x)``; other scalar-constant maximum/minimum -> the Relax
    ops, which have layout inference (``clip`` and ``relu6`` have none: they would stay NCHW)."""
    return _rewrite(_ClipRewriter(mod), mod)


def fold_permutes(mod: tvm.IRModule) -> tvm.IRModule:
    """Move ``permute_dims`` past ``concat`` and ``strided_slice`` and merge consecutive permutes
    (dropping identities), so transposes inserted on both sides of a layout boundary cancel."""
    return _rewrite(_PermuteFolder(mod), mod)


@relax.expr_functor.mutator
class _ClipRewriter(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule) -> None:
        super().__init__(mod)
        self.names = {gv: gv.name_hint for gv in mod.get_global_vars()}
        self.call_tir = tvm.ir.Op.get("relax.call_tir")

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: N802 (TVM's visitor naming)
        call = self.visit_expr_post_order(call)
        if call.op != self.call_tir or not isinstance(call.args[0], tvm.ir.GlobalVar):
            return call
        name = self.names.get(call.args[0], "")
        args = call.args[1].fields if isinstance(call.args[1], relax.Tuple) else []
        if len(args) != 2 or not isinstance(args[1], tvm.ir.expr.Constant) or args[1].value.numpy().ndim != 0:
            return call
        x, bound = args[0], float(args[1].value.numpy())
        if name.startswith("maximum"):
            return relax.op.nn.relu(x) if bound == 0.0 else relax.op.maximum(x, args[1])
        if name.startswith("minimum"):
            return relax.op.minimum(x, args[1])
        return call


_PERMUTE = tvm.ir.Op.get("relax.permute_dims")
_CONCAT = tvm.ir.Op.get("relax.concat")
_SLICE = tvm.ir.Op.get("relax.strided_slice")


@relax.expr_functor.mutator
class _PermuteFolder(relax.PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: N802
        call = self.visit_expr_post_order(call)
        if call.op == _PERMUTE:
            return self._permute(call.args[0], _axes(call))
        if call.op == _CONCAT and isinstance(call.args[0], relax.Tuple):
            return self._concat(call, call.args[0].fields)
        if call.op == _SLICE:
            return self._slice(call)
        return call

    def _permuted(self, expr: relax.Expr) -> tuple[relax.Expr, tuple[int, ...]] | None:
        """(source, axes) when ``expr`` is bound to ``permute_dims(source, axes)``."""
        value = self.lookup_binding(expr) if isinstance(expr, relax.Var) else expr
        if isinstance(value, relax.Call) and value.op == _PERMUTE and _axes(value) is not None:
            return value.args[0], _axes(value)
        return None

    def _permute(self, x: relax.Expr, axes: tuple[int, ...] | None) -> relax.Expr:
        if axes is not None and axes == tuple(range(len(axes))):
            return x  # layout conversion leaves identity permutes where both sides became NHWC
        inner = self._permuted(x)
        if axes is None or inner is None:
            return relax.op.permute_dims(x, axes)
        source, first = inner
        combined = tuple(first[a] for a in axes)
        if combined == tuple(range(len(combined))):
            return source
        return relax.op.permute_dims(source, combined)

    def _concat(self, call: relax.Call, fields: Sequence[relax.Expr]) -> relax.Expr:
        inner = [self._permuted(f) for f in fields]
        if not inner or any(p is None for p in inner) or len({axes for _, axes in inner}) != 1:
            return call
        axes = inner[0][1]
        joined = self.builder_.emit(relax.op.concat([src for src, _ in inner], axis=axes[int(call.attrs.axis) % len(axes)]))
        return relax.op.permute_dims(joined, axes)

    def _slice(self, call: relax.Call) -> relax.Expr:
        inner = self._permuted(call.args[0])
        slice_axes = _ints(call.args[1])
        if inner is None or slice_axes is None:
            return call
        source, axes = inner
        sliced = self.builder_.emit(
            relax.op.strided_slice(source, [axes[a] for a in slice_axes], call.args[2], call.args[3],
                                   call.args[4] if len(call.args) > 4 else None, call.attrs.assume_inbound)
        )
        return relax.op.permute_dims(sliced, axes)


def _axes(call: relax.Call) -> tuple[int, ...] | None:
    axes = call.attrs.axes
    return None if axes is None else tuple(int(a) for a in axes)


def _ints(expr: Any) -> list[int] | None:
    if not isinstance(expr, relax.Tuple):
        return None
    values = list(expr.fields)  # TVM 0.27: integer constants stand in the tuple as they are
    return [int(v) for v in values] if all(isinstance(v, IntImm) for v in values) else None
