"""Shift kernels merged into the kernels that consume them (after the records): same numbers, fewer calls."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from tsm_deploy.compiler.passes.merge_shifts import merge_shifts_into_consumers
from tsm_deploy.compiler.records import apply_records
from tsm_deploy.compiler.pipeline import prepare_module
from tsm_deploy.runtime import StreamingModel
from tsm_deploy.runtime.stream import buffers_nchw
from tsm_deploy.target.targets import load_target
from tsm_deploy.compiler.passes.shift_kernel import SHIFT_ATTR
from tsm_deploy.compiler.passes.shift_state import shifts_write_state

from .test_transforms import _packed_shifts


def _called(mod: tvm.IRModule) -> list[str]:
    """Names of the kernels ``main`` calls, in order."""
    names: list[str] = []
    call_tir = tvm.ir.Op.get("relax.call_tir")
    relax.analysis.post_order_visit(
        mod["main"], lambda e: names.append(e.args[0].name_hint) if isinstance(e, relax.Call) and e.op == call_tir else None
    )
    return names


def _is_shift(mod: tvm.IRModule, name: str) -> bool:
    func = mod[name]
    return isinstance(func, tvm.tirx.PrimFunc) and func.attrs is not None and SHIFT_ATTR in func.attrs


def _stream(mod: tvm.IRModule, frames: list[np.ndarray], state_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    vm = relax.VirtualMachine(tvm.compile(mod, target=load_target("x86").tvm()), tvm.cpu())
    state = tvm.runtime.tensor(np.zeros((1, state_size), np.float32))
    out = []
    for frame in frames:  # main returns the logits and updates the state in place
        logits = vm["main"](tvm.runtime.tensor(frame), state)
        out.append((logits.numpy(), state.numpy()))
    return out


def test_merged_shifts_stream_the_same_numbers_with_ten_fewer_calls(small_checkpoint, small_artifact):
    target = load_target("x86")
    prepared = prepare_module(small_checkpoint, target)
    mod, _ = apply_records(prepared.mod, target.tvm(), [])
    merged = merge_shifts_into_consumers(mod, inline=True)  # as the x86 target: shift_merge "inline"
    before, after = _called(mod), _called(merged)
    n_shifts = len([n for n in before if _is_shift(mod, n)])
    assert n_shifts == len(prepared.io.state_parts) == 10
    assert len(after) == len(before) - n_shifts
    assert not [n for n in after if _is_shift(merged, n)]
    merged_kernels = [n for n in after if "_shift_state" in n]
    assert len(merged_kernels) == n_shifts  # each into its consumer
    copied = merge_shifts_into_consumers(mod, inline=False)  # as ARM targets: "copy"
    for name in merged_kernels:  # inlined into the tuned loops: no copy of the activation, then the state write
        script = merged[name].script()
        assert "shift_values" not in script and "state_update" in script, name
        assert "shift_values" in copied[name].script(), name
    # the small_artifact fixture is this model compiled with the merge (compile_artifact, no records):
    # it streams the very numbers of the unmerged module
    rng = np.random.default_rng(0)
    frames = [rng.standard_normal(prepared.io.inputs["frame"]).astype(np.float32) for _ in range(4)]
    stream = StreamingModel(small_artifact)
    unmerged = _stream(mod, frames, prepared.io.inputs["shift_state"][1])
    for frame, (want_logits, want_state) in zip(frames, unmerged):
        np.testing.assert_array_equal(stream.run_prepared(frame), want_logits.reshape(-1))  # same loops, same order
        for buffer, want in zip(stream.buffers(), buffers_nchw(stream.io, [want_state])):
            np.testing.assert_array_equal(buffer, want)
    for (logits, state), (want_logits, want_state) in zip(_stream(copied, frames, prepared.io.inputs["shift_state"][1]),
                                                          unmerged):
        np.testing.assert_array_equal(logits, want_logits)
        np.testing.assert_array_equal(state, want_state)


def test_a_shifted_activation_not_read_by_one_kernel_keeps_its_shift_kernel():
    # the shifted activations are returned by main: there is no consumer kernel to merge into
    mod = shifts_write_state(_packed_shifts([(1, 4, 4, 16), (1, 2, 2, 24)], [2, 3]))
    mod = relax.transform.LegalizeOps()(mod)
    assert _called(merge_shifts_into_consumers(mod)) == _called(mod) == ["shift_state0", "shift_state1"]
