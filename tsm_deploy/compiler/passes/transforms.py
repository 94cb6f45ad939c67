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
- :func:`shifts_write_state` (applied first; the packer is the fallback): each shift's kernel reads
  its part of the state and writes this frame's channels back into the same part, in place, so the
  state input is the next state. No packing kernel runs at the end and the ten activations are no
  longer kept alive until then (each held a storage block of its own: ten more allocations per frame).
  Measured, instructions per frame over the network without shifts: emulated Cortex-A72 +1.7 % ->
  +1.1 %, x86 (QEMU count of the x86-avx2 artifact) +2.0 % -> +1.3 %. ``main`` then stops returning
  the state (the VM's result tuple and the runtime's item reads went with it). The kernel is two
  blocks, the shifted values (:func:`shift_values`) and the state update (:func:`state_update_block`),
  so that, after the tuning records, :mod:`.merge_shifts` can inline the values into the convolution
  that reads the shifted activation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

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
    mod = _rewrite(_ShiftStateWriter(mod, plan), mod)
    return _rewrite(_StateOutputDropper(mod, plan.state), mod)


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


def _bindings(func: relax.Function) -> dict:
    body = func.body
    return {b.var: b.value for block in getattr(body, "blocks", []) for b in block.bindings if isinstance(b, relax.VarBinding)}


def _static_shape(expr: relax.Expr) -> tuple[int, ...] | None:
    info = getattr(expr, "ty", None)
    if not isinstance(info, relax.TensorType) or info.shape is None or not isinstance(info.shape, relax.ShapeExpr):
        return None
    dims = list(info.shape.values)
    return tuple(int(d) for d in dims) if all(isinstance(d, IntImm) for d in dims) else None


def _plan_state_parts(func: relax.Function) -> _StatePlan | None:
    bound = _bindings(func)
    params = set(func.params)

    def value(expr: relax.Expr) -> relax.Expr:
        return bound.get(expr, expr) if isinstance(expr, relax.Var) else expr

    packs = [v for v in bound.values() if isinstance(v, relax.Call) and v.op == _CONCAT and int(v.attrs.axis) in (1, -1)
             and isinstance(v.args[0], relax.Tuple)]
    parts_of = [[_flat_channel_slice(f, value) for f in p.args[0].fields] for p in packs]
    candidates = [(p, parts) for p, parts in zip(packs, parts_of) if len(parts) >= 1 and all(parts)]
    if len(candidates) != 1:
        return None
    pack, parts = candidates[0]
    offsets, offset = [], 0
    for x, c in parts:
        _, h, w, _ = _static_shape(x)
        offsets.append(offset)
        offset += h * w * c
    wanted = {(x, off, c): i for i, ((x, c), off) in enumerate(zip(parts, offsets))}
    shifts: dict = {}
    for call in bound.values():
        if not (isinstance(call, relax.Call) and call.op == _CONCAT and isinstance(call.args[0], relax.Tuple)):
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
        if index is None or begin != c or _static_shape(fields[0]) != _static_shape(x)[:3] + (c,):
            return None
        if any(s.index == index for s in shifts.values()):
            return None
        shifts[(fields[0], fields[1])] = _ShiftPart(index, x, state, off, c)
    if len(shifts) != len(parts) or len({s.state for s in shifts.values()}) != 1:
        return None
    if _static_shape(next(iter(shifts.values())).state) != (1, offset):
        return None
    state = next(iter(shifts.values())).state
    return _StatePlan(shifts, pack.args[0].fields[0], state, offset, str(parts[0][0].ty.dtype))


def _unpacked_state_part(expr: relax.Expr, value: Callable, params: set) -> tuple[relax.Var, int, int] | None:
    """(state, offset, c) when ``expr`` is ``reshape(strided_slice(state, axes=[1], [offset], [offset + n]),
    (1, h, w, c))`` of a function parameter ``state``."""
    reshape = value(expr)
    if not isinstance(reshape, relax.Call) or reshape.op != _RESHAPE:
        return None
    sliced = _unit_slice(value(reshape.args[0]))
    shape = _static_shape(expr)
    if sliced is None or shape is None or len(shape) != 4:
        return None
    state, axis, begin, end = sliced
    if state not in params or axis != 1 or end - begin != shape[1] * shape[2] * shape[3]:
        return None
    return state, begin, shape[3]


def _channel_rest(expr: relax.Expr, value: Callable) -> tuple[relax.Var, int] | None:
    """(x, c) when ``expr`` is ``strided_slice(x, axes=[3], [c], [end >= channels])`` of a 4-D ``x``."""
    sliced = _unit_slice(value(expr))
    if sliced is None:
        return None
    x, axis, begin, end = sliced
    shape = _static_shape(x)
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
        if call.op != _CONCAT or not isinstance(call.args[0], relax.Tuple):
            return call
        fields = tuple(call.args[0].fields)
        part = self.plan.shifts.get(fields) if len(fields) == 2 else None
        if part is not None:
            shape = _static_shape(part.x)
            kernel = _shift_kernel(shape, part.channels, part.offset, self.plan.total, self.plan.dtype)
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
        parts = [_flat_channel_slice(f, self._value) for f in call.args[0].fields]
        if len(parts) < 2 or any(p is None for p in parts) or len({x.ty.dtype for x, _ in parts}) != 1:
            return call
        sources = [x for x, _ in parts]
        shapes = [tuple(int(d) for d in x.ty.shape.values) for x in sources]
        dtype = str(sources[0].ty.dtype)
        kernel = _packing_kernel(shapes, [c for _, c in parts], dtype)
        total = sum(h * w * c for (_, h, w, _), (_, c) in zip(shapes, parts))
        gv = self.builder_.add_func(kernel, "pack_state")
        return relax.call_tir(gv, sources, relax.TensorType((1, total), dtype))

    def _value(self, expr: relax.Expr) -> relax.Expr:
        return self.lookup_binding(expr) if isinstance(expr, relax.Var) else expr


def _flat_channel_slice(expr: relax.Expr, value: Callable) -> tuple[relax.Expr, int] | None:
    """(x, c) when ``expr`` is ``reshape(strided_slice(x, axes=[3], begin=[0], end=[c]), (1, n))``
    of a static 4-D batch-1 ``x``."""
    reshape = value(expr)
    if not isinstance(reshape, relax.Call) or reshape.op != _RESHAPE:
        return None
    sliced = _unit_slice(value(reshape.args[0]))
    if sliced is None:
        return None
    x, axis, begin, end = sliced
    dims = _static_shape(x)
    if axis != 3 or begin != 0 or dims is None or len(dims) != 4 or dims[0] != 1:
        return None
    c = min(end, dims[3])
    target = _ints(reshape.args[1]) if isinstance(reshape.args[1], relax.Tuple) else None
    if target is None and isinstance(reshape.args[1], relax.ShapeExpr):
        target = [int(v) for v in reshape.args[1].values if isinstance(v, IntImm)]
    if target != [1, dims[1] * dims[2] * c]:
        return None
    return x, c


def _unit_slice(call: relax.Expr) -> tuple[relax.Expr, int, int, int] | None:
    """(x, axis, begin, end) when ``call`` is a ``strided_slice`` of one axis (counted from the front)
    with stride 1 and constant bounds."""
    if not isinstance(call, relax.Call) or call.op != _SLICE:
        return None
    axes, begin, end = (_ints(a) for a in call.args[1:4])
    strides = _ints(call.args[4]) if len(call.args) > 4 and call.args[4] is not None else [1]
    shape = _static_shape(call.args[0])
    if not axes or len(axes) != 1 or not begin or len(begin) != 1 or not end or len(end) != 1 or strides != [1]:
        return None
    if shape is None:
        return None
    return call.args[0], axes[0] % len(shape), begin[0], end[0]


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


SHIFT_ATTR = "tsm_deploy.shift"  # on each shift kernel: {"channels": c, "offset": part's offset}
SHIFT_VALUES_BLOCK = "shift_values"


def _shift_kernel(shape: Sequence[int], channels: int, offset: int, total: int, dtype: str) -> Any:
    """One online shift, NHWC: ``shifted = [state part, x[..., c:]]``, then the state part ``= x[..., :c]``
    (in place: the state parameter is written): :func:`shift_values`, then :func:`state_update_block`."""
    from tvm.s_tir import SBlock, SBlockRealize

    dims = [IntImm("int64", int(d)) for d in shape]
    state = tvm.tirx.decl_buffer([IntImm("int64", 1), IntImm("int64", total)], dtype, "state")
    x = tvm.tirx.decl_buffer(dims, dtype, "x")
    shifted = tvm.tirx.decl_buffer(dims, dtype, "shifted")
    body = tvm.tirx.SeqStmt([shift_values(state, x, shifted, channels, offset),
                             state_update_block(state, x, channels, offset)])
    attrs = {"s_tir": True, "tirx.noalias": True, "tirx.is_scheduled": True,
             SHIFT_ATTR: {"channels": channels, "offset": offset}}
    return tvm.tirx.PrimFunc([state, x, shifted], SBlockRealize([], True, SBlock([], [], [], "root", body)),
                             attrs=tvm.ir.make_node("ir.DictAttrs", **attrs))


def _i64(value: int) -> Any:
    return IntImm("int64", value)


def _state_index(offset: int, width: int, channels: int, h: Any, w: Any, k: Any) -> Any:
    """Where channel ``k`` of pixel ``(h, w)`` lives in the flat state: the part's offset, then NHWC."""
    return _i64(offset) + (h * _i64(width) + w) * _i64(channels) + k


def shift_values(state: Any, x: Any, shifted: Any, channels: int, offset: int) -> Any:
    """``shifted[0, h, w, k]`` = the state's element for ``k < c``, else ``x[0, h, w, k]`` (buffers
    ``(1, H, W, C)`` and ``(1, total)``): one complete block that only defines values, so that
    :mod:`.merge_shifts` can inline it into the tuned kernel that reads ``shifted`` (TVM's
    ``compute_inline``). The condition is marked ``likely`` so that loop partitioning (see
    :data:`tsm_deploy.compiler.build.BUILD_CONFIG`) splits the channel loop at ``c`` instead of testing
    every element."""
    from tvm.ir import Range
    from tvm.s_tir import SBlock, SBlockRealize
    from tvm.tirx import BufferLoad, BufferRegion, BufferStore, For, ForKind, IterVar, Var, if_then_else, likely

    dims = [int(d) for d in shifted.shape]
    loop_vars = [Var(name, "int64") for name in "nhwc"]
    block_vars = [IterVar(Range.from_min_extent(_i64(0), _i64(d)), Var("v" + name, "int64"), IterVar.DataPar)
                  for name, d in zip("nhwc", dims)]
    vn, vh, vw, vc = (iv.var for iv in block_vars)
    value = if_then_else(likely(vc < _i64(channels)),
                         BufferLoad(state, [_i64(0), _state_index(offset, dims[2], channels, vh, vw, vc)]),
                         BufferLoad(x, [vn, vh, vw, vc]))
    point = [Range.from_min_extent(v, _i64(1)) for v in (vn, vh, vw, vc)]
    whole_state = [Range.from_min_extent(_i64(0), d) for d in state.shape]
    block = SBlock(block_vars, [BufferRegion(state, whole_state), BufferRegion(x, point)],
                   [BufferRegion(shifted, point)], SHIFT_VALUES_BLOCK, BufferStore(shifted, value, [vn, vh, vw, vc]))
    stmt: Any = SBlockRealize(loop_vars, True, block)
    for var, extent in reversed(list(zip(loop_vars, dims))):
        stmt = For(var, _i64(0), _i64(extent), ForKind.SERIAL, stmt)
    return stmt


def state_update_block(state: Any, x: Any, channels: int, offset: int) -> Any:
    """The state part ``= x[0, :, :, :c]``, pixel by pixel, as an opaque block: placed after every read
    of the state (the shifted values need the previous frame's)."""
    from tvm.s_tir import SBlock, SBlockRealize
    from tvm.tirx import BufferLoad, BufferStore, For, ForKind, Var

    _, h, w, _ = (int(d) for d in x.shape)
    vh, vw, k = Var("h", "int64"), Var("w", "int64"), Var("c", "int64")
    store = BufferStore(state, BufferLoad(x, [_i64(0), vh, vw, k]), [_i64(0), _state_index(offset, w, channels, vh, vw, k)])
    loops = For(vh, _i64(0), _i64(h), ForKind.SERIAL, For(vw, _i64(0), _i64(w), ForKind.SERIAL,
                For(k, _i64(0), _i64(channels), ForKind.SERIAL, store)))
    return SBlockRealize([], True, SBlock([], [], [], "state_update", loops))
