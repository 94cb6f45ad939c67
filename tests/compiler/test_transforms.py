"""The CPU pipeline's Relax rewrites: permutes folded away around the shift, channels-last buffers."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.script import relax as R

from tsm_deploy.compiler.pipeline import prepare_module
from tsm_deploy.runtime import StreamingModel, read_manifest
from tsm_deploy.target.targets import load_target
from tsm_deploy.compiler.passes.fold_permutes import fold_permutes
from tsm_deploy.compiler.passes.pack_state import pack_state_by_parts
from tsm_deploy.compiler.passes.shift_state import shifts_write_state, state_in_place


def _shift_like(buffer_shape=(1, 4, 4, 2), x_shape=(1, 4, 4, 16), fold=2) -> tvm.IRModule:
    """What layout conversion leaves for a shift with an NHWC buffer: NCHW concat between permutes,
    plus the next buffer sliced from the NCHW view."""
    bb = relax.BlockBuilder()
    buf = relax.Var("buf", R.Tensor(buffer_shape, "float32"))
    x = relax.Var("x", R.Tensor(x_shape, "float32"))
    with bb.function("main", [x, buf]):
        with bb.dataflow():
            b_nchw = bb.emit(relax.op.permute_dims(buf, [0, 3, 1, 2]))
            x_rest = bb.emit(relax.op.strided_slice(x, [3], [fold], [x_shape[3]]))
            rest_nchw = bb.emit(relax.op.permute_dims(x_rest, [0, 3, 1, 2]))
            joined = bb.emit(relax.op.concat([b_nchw, rest_nchw], axis=1))
            shifted = bb.emit(relax.op.permute_dims(joined, [0, 2, 3, 1]))
            x_nchw = bb.emit(relax.op.permute_dims(x, [0, 3, 1, 2]))
            head = bb.emit(relax.op.strided_slice(x_nchw, [1], [0], [fold]))
            nxt = bb.emit(relax.op.permute_dims(head, [0, 2, 3, 1]))
            out = bb.emit_output(relax.Tuple([shifted, nxt]))
        bb.emit_func_output(out)
    return bb.get()


def _ops(mod: tvm.IRModule) -> list[str]:
    names = []
    relax.analysis.post_order_visit(
        mod["main"], lambda e: names.append(e.op.name) if isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op) else None
    )
    return names


def _run(mod: tvm.IRModule, *arrays: np.ndarray) -> list[np.ndarray]:
    exe = tvm.compile(mod, target="llvm")
    vm = relax.VirtualMachine(exe, tvm.cpu())
    out = vm["main"](*(tvm.runtime.tensor(a) for a in arrays))
    return [out[i].numpy() for i in range(len(out))]


def test_fold_permutes_cancels_the_shift_transposes_and_keeps_the_values():
    mod = _shift_like()
    folded = fold_permutes(mod)
    assert _ops(mod).count("relax.permute_dims") == 5
    assert "relax.permute_dims" not in _ops(folded)
    assert _ops(folded).count("relax.concat") == 1 and _ops(folded).count("relax.strided_slice") == 2
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 4, 16)).astype(np.float32)
    buf = rng.standard_normal((1, 4, 4, 2)).astype(np.float32)
    for want, got in zip(_run(mod, x, buf), _run(folded, x, buf)):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(_run(folded, x, buf)[0], np.concatenate([buf, x[..., 2:]], axis=3))


def test_fold_permutes_leaves_a_lone_permute_alone():
    bb = relax.BlockBuilder()
    x = relax.Var("x", R.Tensor((1, 2, 3, 4), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(relax.op.permute_dims(x, [0, 3, 1, 2]))
        bb.emit_func_output(y)
    mod = bb.get()
    assert _ops(fold_permutes(mod)) == ["relax.permute_dims"]


def _flat_slices(shapes, channels) -> tvm.IRModule:
    """The packed next state as PackedState exports it: each NHWC activation's first channels,
    flattened, concatenated."""
    bb = relax.BlockBuilder()
    xs = [relax.Var(f"x{i}", R.Tensor(shape, "float32")) for i, shape in enumerate(shapes)]
    with bb.function("main", xs):
        with bb.dataflow():
            flat = []
            for x, (_, h, w, _), c in zip(xs, shapes, channels):
                part = bb.emit(relax.op.strided_slice(x, [3], [0], [c]))
                flat.append(bb.emit(relax.op.reshape(part, (1, h * w * c))))
            out = bb.emit_output(relax.op.concat(flat, axis=1))
        bb.emit_func_output(out)
    return bb.get()


def test_the_next_state_is_packed_part_by_part_with_the_same_values():
    shapes, channels = [(1, 4, 4, 16), (1, 2, 2, 24), (1, 1, 1, 40)], [2, 3, 5]
    mod = _flat_slices(shapes, channels)
    packed = pack_state_by_parts(mod)
    assert "relax.concat" not in _ops(packed) and "relax.call_tir" in _ops(packed)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    want = np.concatenate([x[..., :c].reshape(1, -1) for x, c in zip(xs, channels)], axis=1)
    exe = tvm.compile(packed, target="llvm")
    got = relax.VirtualMachine(exe, tvm.cpu())["main"](*(tvm.runtime.tensor(x) for x in xs)).numpy()
    np.testing.assert_array_equal(got, want)


def test_other_concatenations_are_left_alone():
    mod = _shift_like()  # a shift's concatenation (of the buffer and a slice that is not flattened)
    assert _ops(pack_state_by_parts(mod)) == _ops(mod)


def _packed_shifts(shapes, channels, pack_order=None) -> tvm.IRModule:
    """Online shifts as PackedState exports them (after layout folding): each buffer unpacked from one
    state input, concatenated with the rest of its activation; the next state packed from the first
    channels. ``pack_order`` packs the parts in another order than the state holds them."""
    bb = relax.BlockBuilder()
    sizes = [h * w * c for (_, h, w, _), c in zip(shapes, channels)]
    state = relax.Var("state", R.Tensor((1, sum(sizes)), "float32"))
    xs = [relax.Var(f"x{i}", R.Tensor(shape, "float32")) for i, shape in enumerate(shapes)]
    with bb.function("main", [*xs, state]):
        with bb.dataflow():
            shifted, offset = [], 0
            for x, (_, h, w, ch), c, size in zip(xs, shapes, channels, sizes):
                part = bb.emit(relax.op.strided_slice(state, [1], [offset], [offset + size]))
                buf = bb.emit(relax.op.reshape(part, (1, h, w, c)))
                rest = bb.emit(relax.op.strided_slice(x, [3], [c], [ch]))
                shifted.append(bb.emit(relax.op.concat([buf, rest], axis=3)))
                offset += size
            flat = []
            for i in pack_order or range(len(xs)):
                (_, h, w, _), c = shapes[i], channels[i]
                head = bb.emit(relax.op.strided_slice(xs[i], [3], [0], [c]))
                flat.append(bb.emit(relax.op.reshape(head, (1, h * w * c))))
            nxt = bb.emit(relax.op.concat(flat, axis=1))
            out = bb.emit_output(relax.Tuple([*shifted, nxt]))
        bb.emit_func_output(out)
    return bb.get()


def test_shift_kernels_write_the_next_state_into_the_state_input():
    shapes, channels = [(1, 4, 4, 16), (1, 2, 2, 24)], [2, 3]
    mod = _packed_shifts(shapes, channels)
    rewritten = shifts_write_state(mod)
    assert "relax.concat" not in _ops(rewritten) and _ops(rewritten).count("relax.call_tir") == 2
    assert state_in_place(rewritten) and not state_in_place(mod)
    assert len(rewritten["main"].ret_ty.fields) == len(shapes)  # the next state is no longer returned
    rng = np.random.default_rng(0)
    state = np.zeros((1, 4 * 4 * 2 + 2 * 2 * 3), np.float32)
    vm = relax.VirtualMachine(tvm.compile(rewritten, target="llvm"), tvm.cpu())
    state_tensor = tvm.runtime.tensor(state)
    for _ in range(3):  # a stream: the same state tensor goes back in, updated by each call
        xs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        want = _run(mod, *xs, state)
        out = vm["main"](*(tvm.runtime.tensor(x) for x in xs), state_tensor)
        for i in range(len(shapes)):
            np.testing.assert_array_equal(out[i].numpy(), want[i])
        np.testing.assert_array_equal(state_tensor.numpy(), want[-1])  # updated in place: the next state
        state = want[-1]


def test_shift_state_rewrite_leaves_a_mismatched_packing_alone():
    shapes, channels = [(1, 4, 4, 16), (1, 2, 2, 24)], [2, 3]
    mod = _packed_shifts(shapes, channels, pack_order=[1, 0])  # offsets do not match the unpacking
    assert _ops(shifts_write_state(mod)) == _ops(mod)


def test_cpu_artifacts_pack_the_shift_buffers_channels_last(small_checkpoint, small_artifact):
    prepared = prepare_module(small_checkpoint, load_target("x86"))
    model = small_checkpoint.model()
    torch_shapes = [s for name, s in model.input_shapes().items() if name != "frame"]
    io = prepared.io
    assert io.state_layout == "NHWC" and io.state == (("next_shift_state", "shift_state"),)
    assert list(io.state_parts) == [(n, h, w, c) for n, c, h, w in torch_shapes]
    assert io.inputs["shift_state"] == (1, sum(int(np.prod(s)) for s in torch_shapes))
    assert io.state_in_place and list(io.outputs) == ["logits"]  # the state is written, not returned
    fused = [gv.name_hint for gv in prepared.mod.get_global_vars()]
    assert not [n for n in fused if "concatenate" in n and "transpose" in n], fused  # the shift moves no layout
    assert len([n for n in fused if "transpose" in n]) <= 1, fused  # the NCHW frame going in, nothing else
    # one hand-written kernel per shift, writing its part of the state in place; no packing, no concatenation
    assert len([n for n in fused if n.startswith("shift_state")]) == len(torch_shapes), fused
    assert not [n for n in fused if "concatenate" in n or n.startswith("pack_state")], fused
    manifest = read_manifest(small_artifact)
    assert manifest.io.state_parts == io.state_parts and len(manifest.buffers) == 1
    stream = StreamingModel(small_artifact)
    stream.step(np.zeros(manifest.frame.shape, np.float32))
    assert [b.shape for b in stream.buffers()] == torch_shapes  # users see the PyTorch buffers
