"""Relax rewrites the pipeline applies before fusion on CPU targets (see :func:`pipeline.fuse`).

- :func:`relu_from_clip`: the ONNX importer's Clip (ReLU6) arrives as opaque ``call_tir(maximum/
  minimum)`` with 0-d constant bounds, which layout conversion cannot see through (it would wrap
  every ReLU6 in transposes and keep it out of the convolution's fused kernel).
- :func:`fold_permutes`: after layout conversion to NHWC, a shift with channels-last buffers reads
  ``permute(concat(permute(buffer), permute(slice(x))))``; moving the permutes past the concatenation
  and the slice until they meet and cancel leaves a slice + concatenation on the channel axis.
- :func:`pack_state_by_parts`: the packed next state (``concat`` of the flattened channel slices of
  the ten shifted activations) becomes one plain loop nest per part. Legalized, that concatenation
  is one loop over the whole state whose every element walks a ten-way if-chain and unravels a
  reshape: 46 instructions per float on the A72, 41 % of the shift's instruction overhead.
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


def pack_state_by_parts(mod: tvm.IRModule) -> tvm.IRModule:
    """``concat([reshape(x_i[..., :c_i], (1, n_i)) ...], axis=1)`` of NHWC activations -> a call of a
    hand-written kernel with one loop nest per part (marked scheduled: there is nothing to tune)."""
    return _rewrite(_StatePacker(mod), mod)


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
_RESHAPE = tvm.ir.Op.get("relax.reshape")


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


@relax.expr_functor.mutator
class _StatePacker(relax.PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: N802
        call = self.visit_expr_post_order(call)
        if call.op != _CONCAT or not isinstance(call.args[0], relax.Tuple) or int(call.attrs.axis) not in (1, -1):
            return call
        parts = [self._flat_channel_slice(f) for f in call.args[0].fields]
        if len(parts) < 2 or any(p is None for p in parts) or len({x.ty.dtype for x, _ in parts}) != 1:
            return call
        sources = [x for x, _ in parts]
        shapes = [tuple(int(d) for d in x.ty.shape.values) for x in sources]
        dtype = str(sources[0].ty.dtype)
        kernel = _packing_kernel(shapes, [c for _, c in parts], dtype)
        total = sum(h * w * c for (_, h, w, _), (_, c) in zip(shapes, parts))
        gv = self.builder_.add_func(kernel, "pack_state")
        return relax.call_tir(gv, sources, relax.TensorType((1, total), dtype))

    def _flat_channel_slice(self, expr: relax.Expr) -> tuple[relax.Expr, int] | None:
        """(x, c) when ``expr`` is ``reshape(strided_slice(x, axes=[3], begin=[0], end=[c]), (1, n))``
        of a static 4-D batch-1 ``x``."""
        reshape = self.lookup_binding(expr) if isinstance(expr, relax.Var) else expr
        if not isinstance(reshape, relax.Call) or reshape.op != _RESHAPE:
            return None
        sliced = reshape.args[0]
        sliced = self.lookup_binding(sliced) if isinstance(sliced, relax.Var) else sliced
        if not isinstance(sliced, relax.Call) or sliced.op != _SLICE:
            return None
        axes, begin, end = (_ints(a) for a in sliced.args[1:4])
        strides = _ints(sliced.args[4]) if len(sliced.args) > 4 and sliced.args[4] is not None else [1]
        x = sliced.args[0]
        info = x.ty
        if axes not in ([3], [-1]) or begin != [0] or end is None or len(end) != 1 or strides != [1]:
            return None
        if not isinstance(info, relax.TensorType) or info.ndim != 4 or info.shape is None:
            return None
        dims = [d for d in info.shape.values]
        if not all(isinstance(d, IntImm) for d in dims) or int(dims[0]) != 1:
            return None
        c = min(end[0], int(dims[3]))
        target = _ints(reshape.args[1]) if isinstance(reshape.args[1], relax.Tuple) else None
        if target is None and isinstance(reshape.args[1], relax.ShapeExpr):
            target = [int(v) for v in reshape.args[1].values if isinstance(v, IntImm)]
        if target != [1, int(dims[1]) * int(dims[2]) * c]:
            return None
        return x, c


def _packing_kernel(shapes: Sequence[tuple[int, ...]], channels: Sequence[int], dtype: str) -> Any:
    """A TIR function copying ``x_i[0, :, :, :c_i]`` of each NHWC input into consecutive ranges of a
    ``(1, total)`` output: one loop nest per part, no condition, no division."""
    from tvm.script import parser
    from tvm.script import tirx as T

    def i64(v: int) -> str:
        return f"T.int64({v})"

    params = [f'x{i}: T.Buffer(({", ".join(i64(d) for d in shape)}), "{dtype}")' for i, shape in enumerate(shapes)]
    total = sum(h * w * c for (_, h, w, _), c in zip(shapes, channels))
    lines = [
        "@T.prim_func(private=True, s_tir=True)",
        f'def pack_state({", ".join(params)}, out: T.Buffer(({i64(1)}, {i64(total)}), "{dtype}")):',
        '    T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})',
    ]
    offset = 0
    for i, ((_, h, w, _), c) in enumerate(zip(shapes, channels)):
        lines += [
            f"    for h, w, c in T.grid({i64(h)}, {i64(w)}, {i64(c)}):",
            f'        with T.sblock("part{i}"):',
            '            vh, vw, vc = T.axis.remap("SSS", [h, w, c])',
            f"            out[{i64(0)}, {i64(offset)} + (vh * {i64(w)} + vw) * {i64(c)} + vc] = x{i}[{i64(0)}, vh, vw, vc]",
        ]
        offset += h * w * c
    return parser.parse("\n".join(lines) + "\n", extra_vars={"T": T})
