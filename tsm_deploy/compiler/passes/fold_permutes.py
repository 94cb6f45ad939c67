"""After layout conversion to NHWC, a shift with channels-last buffers reads
``permute(concat(permute(buffer), permute(slice(x))))``; moving the permutes past the concatenation
and the slice until they meet and cancel leaves a slice + concatenation on the channel axis."""

from __future__ import annotations

from typing import Sequence

import tvm
from tvm import relax

from .relax_match import CONCAT, PERMUTE, SLICE, axes, ints, rewrite


def fold_permutes(mod: tvm.IRModule) -> tvm.IRModule:
    """Move ``permute_dims`` past ``concat`` and ``strided_slice`` and merge consecutive permutes
    (dropping identities), so transposes inserted on both sides of a layout boundary cancel."""
    return rewrite(_PermuteFolder(mod), mod)


@relax.expr_functor.mutator
class _PermuteFolder(relax.PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: N802
        call = self.visit_expr_post_order(call)
        if call.op == PERMUTE:
            return self._permute(call.args[0], axes(call))
        if call.op == CONCAT and isinstance(call.args[0], relax.Tuple):
            return self._concat(call, call.args[0].fields)
        if call.op == SLICE:
            return self._slice(call)
        return call

    def _permuted(self, expr: relax.Expr) -> tuple[relax.Expr, tuple[int, ...]] | None:
        """(source, axes) when ``expr`` is bound to ``permute_dims(source, axes)``."""
        value = self.lookup_binding(expr) if isinstance(expr, relax.Var) else expr
        if isinstance(value, relax.Call) and value.op == PERMUTE and axes(value) is not None:
            return value.args[0], axes(value)
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
        slice_axes = ints(call.args[1])
        if inner is None or slice_axes is None:
            return call
        source, axes = inner
        sliced = self.builder_.emit(
            relax.op.strided_slice(source, [axes[a] for a in slice_axes], call.args[2], call.args[3],
                                   call.args[4] if len(call.args) > 4 else None, call.attrs.assume_inbound)
        )
        return relax.op.permute_dims(sliced, axes)
