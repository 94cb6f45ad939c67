"""Offline shifts as one hand-written kernel: recognised by the gather map they compute, exact."""

import numpy as np
import pytest
import torch
import tvm
from tvm import relax

from tsm_deploy.compiler import pipeline
from tsm_deploy.compiler.passes.clip_shift import ClipShift, match_clip_shift
from tsm_deploy.compiler.passes.shift_kernel import CLIP_SHIFT_ATTR, clip_shift_kernel
from tsm_deploy.models.shift import ShiftDirection, temporal_shift
from tsm_deploy.target.targets import load_target

LLVM = tvm.target.Target({"kind": "llvm"})


def _gather(shape, shift) -> np.ndarray:
    """The gather map of ``shift`` applied to an NHWC clip batch (flat source index, -1 for zero),
    computed by running it on the index (+1, so that zero padding reads -1)."""
    index = torch.arange(1, int(np.prod(shape)) + 1, dtype=torch.float64).reshape(shape)
    return (shift(index).numpy().astype(np.int64) - 1)


def _nchw(shift):
    return lambda x: shift(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


@pytest.mark.parametrize("segments,clips", [(4, 2), (8, 1), (3, 3)])
def test_both_directions_are_recognised_with_their_clip_length(segments, clips):
    shape = (segments * clips, 3, 2, 16)
    bi = _gather(shape, _nchw(lambda x: temporal_shift(x, segments, 8, ShiftDirection.BIDIRECTIONAL)))
    assert match_clip_shift(bi) == ClipShift(segments, ((0, 2, 1), (2, 4, -1), (4, 16, 0)))
    uni = _gather(shape, _nchw(lambda x: temporal_shift(x, segments, 4, ShiftDirection.UNIDIRECTIONAL)))
    assert match_clip_shift(uni) == ClipShift(segments, ((0, 4, -1), (4, 16, 0)))


def test_other_moves_are_not_shifts():
    shape = (8, 2, 2, 16)
    index = np.arange(int(np.prod(shape))).reshape(shape)
    assert match_clip_shift(index) is None  # nothing moves
    assert match_clip_shift(index[..., ::-1].copy()) is None  # channels reordered
    assert match_clip_shift(np.roll(index, 1, axis=0)) is None  # wraps around instead of zero padding
    assert match_clip_shift(np.roll(index, 1, axis=1)) is None  # moves along the image
    padded = np.concatenate([np.full_like(index[:1], -1), index[:-1]])
    assert match_clip_shift(padded) == ClipShift(8, ((0, 16, -1),))  # every channel from the previous frame


@pytest.mark.parametrize("channels", [16, 20, 5])
def test_kernel_copies_each_range_and_zero_fills_the_clip_ends(channels):
    shape, segments = (6, 3, 2, channels), 3
    ranges = ((0, 2, 1), (2, 4, -1), (4, channels, 0))
    kernel = clip_shift_kernel(shape, ranges, segments, "float32").with_attr("global_symbol", "shift")
    assert kernel.attrs[CLIP_SHIFT_ATTR]["segments"] == segments
    x = np.random.default_rng(0).standard_normal(shape).astype("float32")
    out = tvm.runtime.tensor(np.full(shape, np.nan, "float32"))
    tvm.compile(tvm.IRModule({"shift": kernel}), LLVM)["shift"](tvm.runtime.tensor(x), out)
    expected = np.zeros_like(x)
    for frame in range(shape[0]):
        t = frame % segments
        for c0, c1, d in ranges:
            if 0 <= t + d < segments:
                expected[frame, ..., c0:c1] = x[frame + d, ..., c0:c1]
    np.testing.assert_array_equal(out.numpy(), expected)


def _shift_kernel_calls(mod: tvm.IRModule) -> int:
    shifts = {gv for gv, f in mod.functions.items()
              if isinstance(f, tvm.tirx.PrimFunc) and f.attrs is not None and CLIP_SHIFT_ATTR in f.attrs}
    calls = []
    relax.analysis.post_order_visit(mod["main"], lambda e: calls.append(e) if isinstance(e, relax.Call)
                                    and e.args and isinstance(e.args[0], tvm.ir.GlobalVar) and e.args[0] in shifts
                                    else None)
    return len(calls)


def _run(prepared, clip: np.ndarray) -> np.ndarray:
    vm = relax.VirtualMachine(tvm.compile(prepared.mod, load_target("x86-avx2").tvm()), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(clip)).numpy()


def test_every_shift_of_a_clip_model_becomes_one_kernel_and_the_model_is_unchanged(small_clip_checkpoint):
    target = load_target("x86-avx2")
    prepared = pipeline.prepare_module(small_clip_checkpoint, target, check_ort=False)
    model = small_clip_checkpoint.model()
    assert _shift_kernel_calls(prepared.mod) == model.n_shifts > 0
    assert not [gv.name_hint for gv in prepared.mod.get_global_vars() if "concatenate" in gv.name_hint]
    clip = np.random.default_rng(1).standard_normal(prepared.io.inputs["clip"]).astype("float32")
    logits = _run(prepared, clip)
    with torch.no_grad():
        reference = model(torch.from_numpy(clip)).numpy()
    np.testing.assert_allclose(logits, reference, atol=1e-4, rtol=1e-4)


@pytest.mark.heavy  # two compiles of the clip model (~2 min on 2 cores): make test-all
def test_the_kernel_computes_bit_for_bit_what_the_chain_computed(small_clip_checkpoint, monkeypatch):
    """The shift moves values and adds nothing: the module with the chain it replaces gives the same bits."""
    target = load_target("x86-avx2")
    kernels = pipeline.prepare_module(small_clip_checkpoint, target, check_ort=False)
    clip = np.random.default_rng(1).standard_normal(kernels.io.inputs["clip"]).astype("float32")
    monkeypatch.setattr(pipeline, "clip_shifts_as_kernels", lambda mod: mod)
    chain = pipeline.prepare_module(small_clip_checkpoint, target, check_ort=False)
    assert _shift_kernel_calls(chain.mod) == 0 < _shift_kernel_calls(kernels.mod)
    np.testing.assert_array_equal(_run(chain, clip), _run(kernels, clip))
