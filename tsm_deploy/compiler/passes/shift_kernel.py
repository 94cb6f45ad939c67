"""The shift kernel, in one place: the hand-written TIR of an online shift that reads its part of the
state and writes this frame's channels back (:mod:`.shift_state` calls it), made of two blocks, the
shifted values (:func:`shift_values`) and the state update (:func:`state_update_block`), so that
:mod:`.merge_shifts` can take them into the convolution that reads the shifted activation."""

from __future__ import annotations

from typing import Any, Sequence

import tvm
from tvm.ir.prim.expr import IntImm


SHIFT_ATTR = "tsm_deploy.shift"  # on each shift kernel: {"channels": c, "offset": part's offset}
SHIFT_VALUES_BLOCK = "shift_values"


def shift_kernel(shape: Sequence[int], channels: int, offset: int, total: int, dtype: str) -> Any:
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


CLIP_SHIFT_ATTR = "tsm_deploy.clip_shift"  # on each clip shift kernel: {"segments": T, "ranges": [[c0, c1, d]]}
CLIP_VECTOR_LANES = 8  # fp32 lanes of an AVX2 register; on NEON LLVM splits the vector in two


def clip_shift_kernel(shape: Sequence[int], ranges: Sequence[tuple[int, int, int]], segments: int, dtype: str) -> Any:
    """One offline shift of a clip batch, NHWC ``(N*T, H, W, C)``: ``out[n*T + t, h, w, c] =
    x[n*T + t + d, h, w, c]`` for the channels ``c0 <= c < c1`` of each ``(c0, c1, d)`` in ``ranges``,
    zero where ``t + d`` leaves the clip. Written scheduled: the pixels run in parallel, each range
    is a copy (or a zero fill) of contiguous channels vectorised by :data:`CLIP_VECTOR_LANES`, the
    clip-end test is made once per pixel and range instead of once per element."""
    from tvm.s_tir import SBlock, SBlockRealize
    from tvm.tirx import BufferLoad, BufferStore, For, ForKind, IfThenElse, Var, const

    nt, height, width, _ = (int(d) for d in shape)
    x = tvm.tirx.decl_buffer([_i64(d) for d in shape], dtype, "x")
    out = tvm.tirx.decl_buffer([_i64(d) for d in shape], dtype, "out")
    pixel = Var("pixel", "int64")
    frame = tvm.tirx.floordiv(pixel, _i64(height * width))
    h = tvm.tirx.floormod(tvm.tirx.floordiv(pixel, _i64(width)), _i64(height))
    w = tvm.tirx.floormod(pixel, _i64(width))
    t = tvm.tirx.floormod(frame, _i64(segments))

    def channels(c0: int, c1: int, value: Any) -> Any:
        """``out[frame, h, w, c] = value(c)`` for ``c0 <= c < c1``, vectorised where the lanes fit."""
        loops = []
        full = (c1 - c0) // CLIP_VECTOR_LANES * CLIP_VECTOR_LANES
        if full:
            outer, lane = Var("c_outer", "int64"), Var("c_lane", "int64")
            c = _i64(c0) + outer * _i64(CLIP_VECTOR_LANES) + lane
            body = BufferStore(out, value(c), [frame, h, w, c])
            loops.append(For(outer, _i64(0), _i64(full // CLIP_VECTOR_LANES), ForKind.SERIAL,
                             For(lane, _i64(0), _i64(CLIP_VECTOR_LANES), ForKind.VECTORIZED, body)))
        if c0 + full < c1:
            rest = Var("c_rest", "int64")
            c = _i64(c0 + full) + rest
            loops.append(For(rest, _i64(0), _i64(c1 - c0 - full), ForKind.SERIAL,
                             BufferStore(out, value(c), [frame, h, w, c])))
        return loops[0] if len(loops) == 1 else tvm.tirx.SeqStmt(loops)

    parts = []
    for c0, c1, d in ranges:
        moved = channels(c0, c1, lambda c, d=d: BufferLoad(x, [frame + _i64(d), h, w, c]))
        if d == 0:
            parts.append(moved)
            continue
        inside = tvm.tirx.all(t + _i64(d) >= _i64(0), t + _i64(d) < _i64(segments))
        parts.append(IfThenElse(inside, moved, channels(c0, c1, lambda c: const(0, dtype))))
    loop = For(pixel, _i64(0), _i64(nt * height * width), ForKind.PARALLEL,
               parts[0] if len(parts) == 1 else tvm.tirx.SeqStmt(parts))
    attrs = {"s_tir": True, "tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": 8,
             CLIP_SHIFT_ATTR: {"segments": segments, "ranges": [list(r) for r in ranges]}}
    root = SBlock([], [], [], "root", SBlockRealize([], True, SBlock([], [], [], "clip_shift", loop)))
    return tvm.tirx.PrimFunc([x, out], SBlockRealize([], True, root), attrs=tvm.ir.make_node("ir.DictAttrs", **attrs))
