"""The preprocessing as a torch module: same numbers as the numpy runtime, in torch, ONNX and TVM."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import onnx
import pytest
import torch
import tvm
from tvm import relax

from tsm_deploy.errors import TsmDeployError
from tsm_deploy.frontend.relax import check_static_shift, import_onnx
from tsm_deploy.models import ModelConfig, build_model, preprocessing
from tsm_deploy.models.preprocess import (
    FramePreprocess,
    WithPreprocess,
    axis_taps,
    crop_geometry,
    parse_frame_size,
    preprocess_to_onnx,
)
from tsm_deploy.runtime.preprocess import prepare_frame

from ..conftest import SMALL_CONFIG

PREPROCESS = preprocessing(ModelConfig())  # 224 crop of the short side resized to 256
# (height, width): landscape and portrait VGA, QVGA (upsampled), an odd size, one that needs no resize
SIZES = [(480, 640), (640, 480), (240, 320), (517, 333), (256, 300)]
TOLERANCE = 1e-5
TARGET = {"kind": "llvm"}


def _frame(height: int, width: int, seed: int = 0, frames: int | None = None) -> np.ndarray:
    shape = (height, width, 3) if frames is None else (frames, height, width, 3)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _compile(proto: onnx.ModelProto) -> tuple[relax.VirtualMachine, tvm.IRModule]:
    mod = relax.transform.FoldConstant()(import_onnx(proto))  # folds the importer's negative-index guards
    executable = tvm.compile(mod, tvm.target.Target(TARGET))
    return relax.VirtualMachine(executable, tvm.cpu()), mod


def _op_counts(mod: tvm.IRModule) -> Counter:
    counts: Counter = Counter()

    def visit(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            counts[expr.op.name] += 1

    relax.analysis.post_order_visit(mod["main"], visit)
    return counts


@pytest.mark.parametrize("height,width", SIZES + [(50, 100), (224, 224)])
def test_torch_module_matches_numpy_prepare_frame(height, width):
    module = FramePreprocess(height, width, PREPROCESS)
    for seed in range(2):
        frame = _frame(height, width, seed)
        expected = prepare_frame(frame, PREPROCESS)
        out = module(torch.from_numpy(frame)).numpy()
        assert out.shape == (1, 3, 224, 224) and out.dtype == np.float32
        assert np.abs(out - expected).max() <= TOLERANCE


def test_only_the_cropped_pixels_are_computed():
    """Taps for the 224 kept rows only, inside the source frame, and the crop window is centred."""
    g = crop_geometry(480, 640, PREPROCESS)
    assert (g.resized_height, g.resized_width, g.top, g.left) == (256, 341, 16, 58)
    taps = axis_taps(640, 341, g.left, 224)
    assert len(taps.low) == 224 and taps.low.min() >= 0 and taps.high.max() <= 639
    assert np.all((taps.weight >= 0) & (taps.weight < 1))
    # a frame whose width already matches the resized width is sliced, not gathered
    assert axis_taps(300, 300, 38, 224).identity and not taps.identity


@pytest.mark.parametrize("height,width", SIZES)
def test_onnx_export_and_tvm_compile_match(height, width):
    module = FramePreprocess(height, width, PREPROCESS)
    proto = onnx.load_from_string(preprocess_to_onnx(module))
    ops = Counter(node.op_type for node in proto.graph.node)
    assert "Resize" not in ops and ops["Cast"] >= 1, ops
    frame_type = proto.graph.input[0].type.tensor_type
    assert frame_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in frame_type.shape.dim] == [height, width, 3]

    vm, mod = _compile(proto)
    counts = _op_counts(mod)
    # gather rows (2 taps), gather columns (2 taps), cast uint8 -> float32 after the first gather
    g = module.geometry
    resampled = [
        not axis_taps(g.height, g.resized_height, g.top, g.crop).identity,
        not axis_taps(g.width, g.resized_width, g.left, g.crop).identity,
    ]
    assert counts["relax.take"] == 2 * sum(resampled)
    assert counts["relax.astype"] >= 1
    assert not {"relax.shape_of", "relax.image.resize2d", "relax.dynamic_strided_slice"} & set(counts)
    ret = mod["main"].ret_ty
    assert [int(d) for d in ret.shape.values] == [1, 3, 224, 224] and ret.dtype == "float32"
    for seed in range(2):
        frame = _frame(height, width, seed + 10)
        out = vm["main"](tvm.runtime.tensor(frame)).numpy()
        assert np.abs(out - prepare_frame(frame, PREPROCESS)).max() <= TOLERANCE


def test_uint8_cast_imports_as_astype_of_the_gathered_pixels():
    """Cast comes after the first Gather: only crop x W (not H x W) pixels are converted."""
    module = FramePreprocess(480, 640, PREPROCESS)
    _, mod = _compile(onnx.load_from_string(preprocess_to_onnx(module)))
    casts = []

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == "relax.astype":
            casts.append((expr.args[0].ty.dtype, [int(d) for d in expr.ty.shape.values], expr.ty.dtype))

    relax.analysis.post_order_visit(mod["main"], visit)
    assert casts and all(c == ("uint8", [480, 224, 3], "float32") for c in casts), casts


def test_clip_form_is_the_frame_module_per_frame_and_compiles():
    module = FramePreprocess(240, 320, PREPROCESS)
    clip = _frame(240, 320, seed=4, frames=3)
    out = module(torch.from_numpy(clip)).numpy()
    assert out.shape == (1, 3, 3, 224, 224)
    expected = np.stack([prepare_frame(f, PREPROCESS)[0] for f in clip])[None]
    assert np.abs(out - expected).max() <= TOLERANCE
    vm, _ = _compile(onnx.load_from_string(preprocess_to_onnx(module, frames=3)))
    compiled = vm["main"](tvm.runtime.tensor(clip)).numpy()
    assert np.abs(compiled - expected).max() <= TOLERANCE


@pytest.mark.slow  # compiles the small network: ~13 s on an idle 2-core machine, a minute under load
def test_with_preprocess_streams_like_prepare_frame_then_network(small_checkpoint):
    """The small network with the preprocessing in front: torch, then ONNX -> TVM, buffers fed back."""
    height, width = 120, 160
    network = build_model(SMALL_CONFIG)
    network.load_state_dict(small_checkpoint.state_dict)
    pre = preprocessing(SMALL_CONFIG)
    model = WithPreprocess(FramePreprocess(height, width, pre), network).eval()
    buffers = network.zero_buffers()
    frames = [_frame(height, width, seed) for seed in range(3)]

    names = ["frame"] + [f"shift_buffer_{i}" for i in range(len(buffers))]
    out_names = ["logits"] + [f"next_shift_buffer_{i}" for i in range(len(buffers))]
    blob = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            model, (torch.from_numpy(frames[0]), *buffers), blob, input_names=names, output_names=out_names,
            opset_version=17, dynamo=False,
        )
    mod = relax.transform.FoldConstant()(import_onnx(onnx.load_from_string(blob.getvalue())))
    check_static_shift(mod, len(buffers))  # the preprocessing adds no dynamic op to the shift check
    vm = relax.VirtualMachine(tvm.compile(mod, tvm.target.Target(TARGET)), tvm.cpu())

    ref_buffers = [b.clone() for b in buffers]
    tvm_buffers = [tvm.runtime.tensor(b.numpy()) for b in buffers]
    with torch.no_grad():
        for frame in frames:
            ref = network(torch.from_numpy(prepare_frame(frame, pre)), *ref_buffers)
            ours = model(torch.from_numpy(frame), *[b.clone() for b in ref_buffers])
            assert np.abs(ours[0].numpy() - ref[0].numpy()).max() <= 1e-4
            outputs = vm["main"](tvm.runtime.tensor(frame), *tvm_buffers)
            assert np.abs(outputs[0].numpy() - ref[0].numpy()).max() <= 1e-4
            for got, want in zip(list(outputs)[1:], ref[1:]):
                assert np.abs(got.numpy() - want.numpy()).max() <= 1e-4
            ref_buffers = list(ref[1:])
            tvm_buffers = [outputs[i] for i in range(1, len(outputs))]
    assert float(ref[0].abs().max()) > 1e-3  # the comparison was not between two zero vectors


def test_with_preprocess_keeps_the_pipeline_interface():
    network = build_model(SMALL_CONFIG)
    model = WithPreprocess(FramePreprocess(120, 160, preprocessing(SMALL_CONFIG)), network)
    shapes = model.input_shapes()
    assert list(shapes) == list(network.input_shapes())
    assert shapes["frame"] == (120, 160, 3) and model.input_dtypes()["frame"] == "uint8"
    assert all(model.input_dtypes()[name] == "float32" for name in list(shapes)[1:])
    assert model.output_names() == network.output_names() and model.n_shifts == network.n_shifts
    with pytest.raises(TsmDeployError, match="the preprocessing makes"):
        WithPreprocess(FramePreprocess(120, 160, PREPROCESS), network)  # 224 crop for a 64 network


class _ClipNetwork(torch.nn.Module):
    """A clip model's interface (input ``clip`` (1, T, 3, S, S) -> per-clip logits) over the small network."""

    def __init__(self, network: torch.nn.Module, frames: int, size: int) -> None:
        super().__init__()
        self.network, self.frames, self.size = network, frames, size

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"clip": (1, self.frames, 3, self.size, self.size)}

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        frames = clip.reshape(self.frames, 3, self.size, self.size)
        return self.network.forward_clip(frames, self.frames).mean(dim=0, keepdim=True)


def test_with_preprocess_on_a_clip_network(small_checkpoint):
    network = build_model(SMALL_CONFIG)
    network.load_state_dict(small_checkpoint.state_dict)
    clip_net = _ClipNetwork(network, frames=4, size=SMALL_CONFIG.input_size).eval()
    pre = preprocessing(SMALL_CONFIG)
    model = WithPreprocess(FramePreprocess(90, 160, pre), clip_net).eval()
    assert model.input_shapes() == {"clip": (4, 90, 160, 3)}
    clip = _frame(90, 160, seed=7, frames=4)
    prepared = np.stack([prepare_frame(f, pre)[0] for f in clip])[None]
    with torch.no_grad():
        want = clip_net(torch.from_numpy(prepared)).numpy()
        got = model(torch.from_numpy(clip)).numpy()
    assert got.shape == (1, SMALL_CONFIG.n_class)
    assert np.abs(got - want).max() <= 1e-4 and np.abs(want).max() > 1e-3


def test_wrong_frame_is_one_clear_error():
    module = FramePreprocess(480, 640, PREPROCESS)
    with pytest.raises(TsmDeployError, match=r"built for uint8 \(480, 640, 3\)"):
        module(torch.zeros((640, 480, 3), dtype=torch.uint8))
    with pytest.raises(TsmDeployError, match="uint8"):
        module(torch.zeros((480, 640, 3), dtype=torch.float32))


def test_parse_frame_size():
    assert parse_frame_size("640x480") == (480, 640)
    assert parse_frame_size(" 333X517 ") == (517, 333)
    for bad in ("640", "0x480", "640x-1", "axb", "640x480x3"):
        with pytest.raises(TsmDeployError, match="WIDTHxHEIGHT"):
            parse_frame_size(bad)
