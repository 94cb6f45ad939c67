"""Online shifts that write the state in place: each shift's kernel reads its part of the state and
writes this frame's channels back into the same part, in place, so the state input is the next state. No packing kernel runs at the end and the ten activations are no
longer kept alive until then (each held a storage block of its own: ten more allocations per frame).
Measured (2026-11-22, f1a4d13), instructions per frame over the network without shifts: emulated Cortex-A72 +1.7 % ->
+1.1 %, x86 (QEMU count of the x86-avx2 artifact) +2.0 % -> +1.3 %. ``main`` then stops returning
the state (the VM's result tuple and the runtime's item reads went with it). The kernel is two
blocks, the shifted values (:func:`shift_values`) and the state update (:func:`state_update_block`),
so that, after the tuning records, :mod:`.merge_shifts` can inline the values into the convolution
that reads the shifted activation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import tvm
from tvm import relax

from .relax_match import CONCAT, RESHAPE, bindings, flat_channel_slice, rewrite, static_shape, unit_slice
from .shift_kernel import shift_kernel


def shifts_write_state(mod: tvm.IRModule) -> tvm.IRModule:
    """Each online shift (``concat([unpacked part of the state input, x[..., c:]], axis=3)``) -> one
    hand-written kernel that returns the shifted activation and, after reading its part of the state
    input, overwrites that part with ``x[..., :c]``; the packed next state (``concat`` of the flattened
    ``x[..., :c]``) -> nothing: ``main`` no longer returns it (the caller holds the updated input)
    and is marked :data:`STATE_IN_PLACE_ATTR`.

    Why it is safe: every part is read and written by its own kernel only, each element read before
    it is written; the runtime passes the same tensor every call, and never passes memory it does
    not own as a state input (:meth:`LoadedArtifact.to_device` copies state inputs). The call
    is a plain ``call_tir`` (Relax sees a pure function of the state): nothing between import and build
    reorders or duplicates calls, and the parity tests stream through it. The module is returned
    unchanged unless every part of the next state matches exactly one shift (same activation,
    channels and offset) of one state input."""
    plan = _plan_state_parts(mod["main"]) if "main" in [gv.name_hint for gv in mod.get_global_vars()] else None
    if plan is None:
        return mod
    mod = rewrite(_ShiftStateWriter(mod, plan), mod)
    return rewrite(_StateOutputDropper(mod, plan.state), mod)


STATE_IN_PLACE_ATTR = "tsm_deploy.state_in_place"  # on main: the state inputs are updated, not returned


def state_in_place(mod: tvm.IRModule) -> bool:
    """Whether :func:`shifts_write_state` rewrote ``main``: it then returns the logits only, and each
    call updates its state input in place (the manifest's ``io.state_in_place``)."""
    attrs = mod["main"].attrs
    return attrs is not None and STATE_IN_PLACE_ATTR in attrs and bool(attrs[STATE_IN_PLACE_ATTR])


@dataclass(frozen=True)
class _ShiftPart:
    index: int  # the part's position in the packed state
    x: relax.Var  # the activation shifted
    state: relax.Var  # the packed state input
    offset: int  # where the part starts in the packed state
    channels: int  # the shifted channels (the part's last dimension)


@dataclass(frozen=True)
class _StatePlan:
    shifts: dict  # (unpacked-buffer var, rest-slice var) -> _ShiftPart
    packed: relax.Var  # the first field of the next state's concatenation
    state: relax.Var  # the state input
    total: int
    dtype: str


def _plan_state_parts(func: relax.Function) -> _StatePlan | None:
    bound = bindings(func)
    params = set(func.params)

    def value(expr: relax.Expr) -> relax.Expr:
        return bound.get(expr, expr) if isinstance(expr, relax.Var) else expr

    packs = [v for v in bound.values() if isinstance(v, relax.Call) and v.op == CONCAT and int(v.attrs.axis) in (1, -1)
             and isinstance(v.args[0], relax.Tuple)]
    parts_of = [[flat_channel_slice(f, value) for f in p.args[0].fields] for p in packs]
    candidates = [(p, parts) for p, parts in zip(packs, parts_of) if len(parts) >= 1 and all(parts)]
    if len(candidates) != 1:
        return None
    pack, parts = candidates[0]
    offsets, offset = [], 0
    for x, c in parts:
        _, h, w, _ = static_shape(x)
        offsets.append(offset)
        offset += h * w * c
    wanted = {(x, off, c): i for i, ((x, c), off) in enumerate(zip(parts, offsets))}
    shifts: dict = {}
    for call in bound.values():
        if not (isinstance(call, relax.Call) and call.op == CONCAT and isinstance(call.args[0], relax.Tuple)):
            continue
        fields = list(call.args[0].fields)
        if int(call.attrs.axis) not in (3, -1) or len(fields) != 2:
            continue
        unpacked = _unpacked_state_part(fields[0], value, params)
        rest = _channel_rest(fields[1], value)
        if unpacked is None or rest is None:
            continue
        state, off, c = unpacked
        x, begin = rest
        index = wanted.get((x, off, c))
        if index is None or begin != c or static_shape(fields[0]) != static_shape(x)[:3] + (c,):
            return None
        if any(s.index == index for s in shifts.values()):
            return None
        shifts[(fields[0], fields[1])] = _ShiftPart(index, x, state, off, c)
    if len(shifts) != len(parts) or len({s.state for s in shifts.values()}) != 1:
        return None
    if static_shape(next(iter(shifts.values())).state) != (1, offset):
        return None
    state = next(iter(shifts.values())).state
    return _StatePlan(shifts, pack.args[0].fields[0], state, offset, str(parts[0][0].ty.dtype))


def _unpacked_state_part(expr: relax.Expr, value: Callable, params: set) -> tuple[relax.Var, int, int] | None:
    """(state, offset, c) when ``expr`` is ``reshape(strided_slice(state, axes=[1], [offset], [offset + n]),
    (1, h, w, c))`` of a function parameter ``state``."""
    reshape = value(expr)
    if not isinstance(reshape, relax.Call) or reshape.op != RESHAPE:
        return None
    sliced = unit_slice(value(reshape.args[0]))
    shape = static_shape(expr)
    if sliced is None or shape is None or len(shape) != 4:
        return None
    state, axis, begin, end = sliced
    if state not in params or axis != 1 or end - begin != shape[1] * shape[2] * shape[3]:
        return None
    return state, begin, shape[3]


def _channel_rest(expr: relax.Expr, value: Callable) -> tuple[relax.Var, int] | None:
    """(x, c) when ``expr`` is ``strided_slice(x, axes=[3], [c], [end >= channels])`` of a 4-D ``x``."""
    sliced = unit_slice(value(expr))
    if sliced is None:
        return None
    x, axis, begin, end = sliced
    shape = static_shape(x)
    if len(shape) != 4 or axis != 3 or shape[0] != 1 or end < shape[3] or not 0 < begin < shape[3]:
        return None
    return x, begin


@relax.expr_functor.mutator
class _ShiftStateWriter(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, plan: _StatePlan) -> None:
        super().__init__(mod)
        self.plan = plan

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: N802
        call = self.visit_expr_post_order(call)
        if call.op != CONCAT or not isinstance(call.args[0], relax.Tuple):
            return call
        fields = tuple(call.args[0].fields)
        part = self.plan.shifts.get(fields) if len(fields) == 2 else None
        if part is not None:
            shape = static_shape(part.x)
            kernel = shift_kernel(shape, part.channels, part.offset, self.plan.total, self.plan.dtype)
            gv = self.builder_.add_func(kernel, f"shift_state{part.index}")
            return relax.call_tir(gv, [part.state, part.x], relax.TensorType(shape, self.plan.dtype))
        if fields and fields[0].same_as(self.plan.packed):
            return self.plan.state
        return call


@relax.expr_functor.mutator
class _StateOutputDropper(relax.PyExprMutator):
    """``return (logits, state)`` -> ``return logits`` where ``state`` is the state input itself: the
    caller already holds that tensor, and a returned tuple costs the VM a tuple and the runtime two
    foreign-function item reads a frame."""

    def __init__(self, mod: tvm.IRModule, state: relax.Var) -> None:
        super().__init__(mod)
        self.state = state
        self.returned: relax.Expr | None = None
        self.dropped = False

    def visit_function_(self, func: relax.Function) -> relax.Expr:  # noqa: N802
        self.returned, self.dropped = func.body.body, False
        new = super().visit_function_(func)
        return new.with_attr(STATE_IN_PLACE_ATTR, True) if self.dropped else new

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:  # noqa: N802
        value = binding.value
        if not (binding.var.same_as(self.returned) and isinstance(value, relax.Tuple)
                and any(f.same_as(self.state) for f in value.fields)):
            super().visit_var_binding_(binding)
            return
        self.dropped = True
        kept = [self.visit_expr(f) for f in value.fields if not f.same_as(self.state)]
        new = kept[0] if len(kept) == 1 else relax.Tuple(kept)
        self.set_var_remap(binding.var, self.builder_.emit_output(new) if not isinstance(binding.var, relax.DataflowVar)
                           else self.builder_.emit(new))
