"""Offline shifts as one kernel each: the chain an offline shift imports as, after layout conversion
(``permute`` to NCHW -> ``reshape`` to ``(N, T, C, H, W)`` -> slices -> concatenations with zeros ->
``reshape`` -> ``permute`` back to NHWC), becomes a call of :func:`.shift_kernel.clip_shift_kernel`.

Why: the chain fuses into one kernel whose loops carry the permutes' and reshapes' index arithmetic
and a concatenation test per element; on TSM-ResNet-50 8x224 its two largest instances ran at
2.8 GB/s (18.4 ms for the 8x56x56x256 activation, 9.3 ms for 8x28x28x512; 2-core Zen 3,
2026-12-04), about 100 ms of a clip. The hand-written kernel copies contiguous channel ranges.

What a chain computes is found by running it, not by its op names: its ops are evaluated with
NumPy on the flat index of every element of its one input (zeros standing in for its constant
operands, which must be zero), and the resulting gather map must be exactly a shift along the clip
axis: per channel one offset ``d``, zero where ``t + d`` leaves the clip (``T`` found from the
zeros). Anything else (another layout, a non-zero pad, a reordering of channels) is left as it is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import tvm
from tvm import relax

from .relax_match import CONCAT, PERMUTE, RESHAPE, SLICE, axes, bindings, ints, rewrite, static_shape
from .shift_kernel import clip_shift_kernel

log = logging.getLogger(__name__)

_MOVES = (PERMUTE, RESHAPE, SLICE, CONCAT)
_CONSTANT = tvm.ir.expr.Constant
_ZERO = -1  # the gather map's mark for an element that is zero


@dataclass(frozen=True)
class ClipShift:
    """A shift of an NHWC clip batch: ``ranges`` ``(c0, c1, d)`` read frame ``t + d`` of ``T = segments``."""

    segments: int
    ranges: tuple[tuple[int, int, int], ...]


def clip_shifts_as_kernels(mod: tvm.IRModule) -> tvm.IRModule:
    """Replace every data-movement chain of ``main`` that computes a clip shift of a 4-D tensor by
    one call of the hand-written kernel (see above); the rest of the module is unchanged."""
    if "main" not in [gv.name_hint for gv in mod.get_global_vars()]:
        return mod
    plan = _plan(mod["main"])
    if not plan:
        return mod
    log.info("%d offline shifts as hand-written kernels", len(plan))
    return rewrite(_ClipShiftWriter(mod, plan), mod)


def _plan(main: relax.Function) -> dict[relax.Var, tuple[relax.Var, ClipShift]]:
    """For each chain's last variable: (its input, the shift it computes); the outermost chains only."""
    bound = bindings(main)
    order = list(bound)
    plan: dict[relax.Var, tuple[relax.Var, ClipShift]] = {}
    covered: set[relax.Var] = set()
    for var in reversed(order):
        if var in covered or not _is_move(bound[var]):
            continue
        inner: set[relax.Var] = set()
        leaves = _leaves(var, bound, inner)
        shape = static_shape(var)
        if leaves is None or len(leaves) != 1 or shape is None or len(shape) != 4:
            continue
        (x,) = leaves
        if static_shape(x) != shape or len(inner) < 2:
            continue
        gather = _gather_map(var, x, bound)
        shift = None if gather is None else match_clip_shift(gather)
        if shift is None:
            continue
        plan[var] = (x, shift)
        covered |= inner
    return plan


def _is_move(value: Any) -> bool:
    return isinstance(value, relax.Call) and value.op in _MOVES


def _leaves(var: relax.Var, bound: dict, inner: set) -> set[relax.Var] | None:
    """The non-constant inputs of the data-movement tree under ``var`` (its variables go to ``inner``);
    ``None`` when a constant operand is not zero."""
    value = bound.get(var)
    if not _is_move(value):
        return {var}
    inner.add(var)
    found: set[relax.Var] = set()
    for arg in _tensor_args(value):
        if isinstance(arg, _CONSTANT):
            if np.any(arg.value.numpy() != 0):
                return None
            continue
        if not isinstance(arg, relax.Var):
            return None
        below = _leaves(arg, bound, inner)
        if below is None:
            return None
        found |= below
    return found


def _tensor_args(call: relax.Call) -> list[relax.Expr]:
    if call.op == CONCAT:
        return list(call.args[0].fields) if isinstance(call.args[0], relax.Tuple) else [call.args[0]]
    return [call.args[0]]


def _gather_map(var: relax.Var, x: relax.Var, bound: dict) -> np.ndarray | None:
    """Which element of ``x`` each element of ``var`` is (its flat index), or :data:`_ZERO`."""
    shape = static_shape(x)
    memo: dict[relax.Var, np.ndarray | None] = {x: np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)}

    def value_of(expr: relax.Expr) -> np.ndarray | None:
        if isinstance(expr, _CONSTANT):
            return np.full(tuple(int(d) for d in expr.value.shape), _ZERO, dtype=np.int64)
        if expr not in memo:
            memo[expr] = _evaluate(bound[expr], value_of)
        return memo[expr]

    result = value_of(var)
    return result if result is not None and result.shape == tuple(shape) else None


def _evaluate(call: relax.Call, value_of: Any) -> np.ndarray | None:
    args = [value_of(a) for a in _tensor_args(call)]
    if any(a is None for a in args):
        return None
    if call.op == PERMUTE:
        order = axes(call)
        return np.transpose(args[0], order) if order is not None else np.transpose(args[0])
    if call.op == RESHAPE:
        shape = static_shape(call)
        return None if shape is None else args[0].reshape(shape)
    if call.op == CONCAT:
        return np.concatenate(args, axis=int(call.attrs.axis))
    slice_axes, begin, end = (ints(a) for a in call.args[1:4])
    strides = ints(call.args[4]) if len(call.args) > 4 and call.args[4] is not None else [1] * len(slice_axes or [])
    if slice_axes is None or begin is None or end is None or strides is None:
        return None
    index = [slice(None)] * args[0].ndim
    for axis, b, e, s in zip(slice_axes, begin, end, strides):
        index[axis] = slice(b, e, s)
    result = args[0][tuple(index)]
    return result if result.shape == static_shape(call) else None


def match_clip_shift(gather: np.ndarray) -> ClipShift | None:
    """The clip shift an NHWC gather map ``(N*T, H, W, C)`` is, if it is exactly one (see above)."""
    frames, height, width, channels = gather.shape
    per_frame = height * width * channels
    own = np.arange(gather.size, dtype=np.int64).reshape(gather.shape)
    moved = gather != _ZERO
    if np.any(gather[moved] < 0) or np.any(gather[moved] % per_frame != own[moved] % per_frame):
        return None  # something other than a move along the frame axis
    delta = np.where(moved, gather // per_frame - own // per_frame, 0)
    offsets = []
    for c in range(channels):
        values = np.unique(delta[..., c][moved[..., c]])
        if len(values) != 1:
            return None
        offsets.append(int(values[0]))
    if not any(offsets):
        return None
    frame_of = np.arange(frames).reshape(frames, 1, 1, 1)
    for segments in (t for t in range(2, frames + 1) if frames % t == 0):
        t = frame_of % segments + np.asarray(offsets).reshape(1, 1, 1, channels)
        if np.array_equal(~moved, np.broadcast_to((t < 0) | (t >= segments), gather.shape)):
            return ClipShift(segments, _ranges(offsets))
    return None


def _ranges(offsets: list[int]) -> tuple[tuple[int, int, int], ...]:
    ranges: list[tuple[int, int, int]] = []
    for c, d in enumerate(offsets):
        if ranges and ranges[-1][2] == d:
            ranges[-1] = (ranges[-1][0], c + 1, d)
        else:
            ranges.append((c, c + 1, d))
    return tuple(ranges)


@relax.expr_functor.mutator
class _ClipShiftWriter(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, plan: dict) -> None:
        super().__init__(mod)
        self.plan = plan

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:  # noqa: N802
        planned = self.plan.get(binding.var)
        if planned is None:
            super().visit_var_binding_(binding)
            return
        x, shift = planned
        ty = binding.var.ty
        kernel = clip_shift_kernel(static_shape(x), shift.ranges, shift.segments, ty.dtype)
        gv = self.builder_.add_func(kernel, "clip_shift")
        call = relax.call_tir(gv, [self.visit_expr(x)], relax.TensorType(static_shape(x), ty.dtype))
        emit = self.builder_.emit if isinstance(binding.var, relax.DataflowVar) else self.builder_.emit_output
        self.set_var_remap(binding.var, emit(call))
