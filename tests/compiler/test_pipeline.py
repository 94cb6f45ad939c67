"""Export -> Relax import -> compile -> artifact -> runtime -> verify, all real, on a small model."""

import io
import json

import numpy as np
import onnx
import pytest
import torch

from tsm_deploy.support.atomic import atomic_output_dir
from tsm_deploy.checkpoint import default_checkpoint
from tsm_deploy.compiler.artifact import compile_artifact
from tsm_deploy.errors import CheckFailed, TsmDeployError
from tsm_deploy.frontend.export import export_onnx
from tsm_deploy.frontend.relax import check_static_shift, import_onnx
from tsm_deploy.runtime import StreamingModel, read_manifest
from tsm_deploy.target.targets import load_target
from tsm_deploy.evaluate.verify import verify_artifact

from ..conftest import SMALL_CONFIG


def test_export_names_checker_and_onnxruntime(tmp_path, small_checkpoint):
    path = tmp_path / "m.onnx"
    result = export_onnx(small_checkpoint.model(), path)
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input][:2] == ["frame", "shift_buffer_0"]
    assert [o.name for o in proto.graph.output][:2] == ["logits", "next_shift_buffer_0"]
    assert result.ort_max_abs_error < 1e-4
    ops = {n.op_type for n in proto.graph.node}
    assert "ScatterND" not in ops and {"Slice", "Concat"} <= ops


def test_shift_check_accepts_the_model(small_checkpoint):
    report = check_static_shift(import_onnx(export_onnx(small_checkpoint.model(), check_ort=False).model), 10)
    assert report.strided_slices >= 20 and report.concatenates >= 10


class SliceAssignmentShift(torch.nn.Module):
    """The export-hostile way to write a shift (upstream TSM issues #77, #103)."""

    def forward(self, frame, shift_buffer_0):
        out = torch.zeros_like(frame)
        out[:, :2] = shift_buffer_0
        out[:, 2:] = frame[:, 2:]
        return torch.relu(out), frame[:, :2]


def test_shift_check_rejects_slice_assignment():
    buffer = io.BytesIO()
    torch.onnx.export(
        SliceAssignmentShift(), (torch.randn(1, 16, 4, 4), torch.randn(1, 2, 4, 4)), buffer, opset_version=17, dynamo=False
    )
    mod = import_onnx(onnx.load_from_string(buffer.getvalue()))
    with pytest.raises(CheckFailed, match="scatter_nd"):
        check_static_shift(mod, 1)


def test_shift_check_requires_the_slices():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    buffer = io.BytesIO()
    torch.onnx.export(model, (torch.randn(1, 3, 8, 8),), buffer, opset_version=17, dynamo=False)
    with pytest.raises(CheckFailed, match="expected >= 2 strided_slice"):
        check_static_shift(import_onnx(onnx.load_from_string(buffer.getvalue())), 1)


def test_manifest_describes_the_artifact(small_artifact):
    manifest = read_manifest(small_artifact)
    assert manifest.format_version == 2 and manifest.kind == "stream" and manifest.target["name"] == "x86"
    assert manifest.frame.shape == (1, 3, 64, 64) and len(manifest.io.state_parts) == 10
    assert manifest.outputs[0].shape == (1, 10)
    assert manifest.state == (("next_shift_state", "shift_state"),)  # the ten buffers packed, NHWC
    assert manifest.io.state_in_place and len(manifest.outputs) == 1  # the state is updated, not returned
    assert manifest.model["n_class"] == 10 and manifest.preprocess["crop"] == 64
    assert manifest.tvm_version.startswith("0.27")


def test_verify_passes_on_a_stream(small_artifact, small_checkpoint):
    report = verify_artifact(small_artifact, small_checkpoint, frames=8)
    assert report.passed, report.table()
    assert report.max_abs_error <= 1e-4 and report.top1_agreement == 1.0
    assert len(report.per_frame) == 8 and json.loads(report.to_json())["max_abs_error"] == report.max_abs_error


def test_verify_fails_against_other_weights(small_artifact):
    other = default_checkpoint(SMALL_CONFIG, seed=11)
    report = verify_artifact(small_artifact, other, frames=2)
    assert not report.passed and report.max_abs_error > 1e-3


def test_verify_refuses_checkpoint_of_another_class_count(small_artifact):
    other = default_checkpoint(SMALL_CONFIG.__class__(**{**SMALL_CONFIG.to_dict(), "n_class": 5}))
    with pytest.raises(TsmDeployError, match="n_class=5 in the checkpoint"):
        verify_artifact(small_artifact, other, frames=1)


def test_runtime_streams_uint8_frames_and_resets(small_artifact):
    model = StreamingModel(small_artifact, history=3)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) for _ in range(3)]
    first = [model.step(f).logits for f in frames]
    model.reset()
    again = [model.step(f).logits for f in frames]
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first[1], StreamingModel(small_artifact).step(frames[1]).logits)  # buffers fed back


def test_runtime_rejects_wrong_frame_shape(small_artifact):
    model = StreamingModel(small_artifact)
    with pytest.raises(TsmDeployError, match="expected an HxWx3 uint8 RGB frame or a prepared float32 tensor"):
        model.step(np.zeros((1, 3, 32, 32), dtype=np.float32))
    with pytest.raises(TsmDeployError, match="expected an HxWx3"):
        model.step(np.zeros((64, 64), dtype=np.uint8))


def test_runtime_rejects_tampered_module(tmp_path, small_artifact):
    import shutil

    copy = tmp_path / "tampered"
    shutil.copytree(small_artifact, copy)
    module = copy / "module.so"
    data = bytearray(module.read_bytes())
    data[len(data) // 2] ^= 0xFF
    module.write_bytes(bytes(data))
    with pytest.raises(TsmDeployError, match="does not match the sha256"):
        StreamingModel(copy)


def test_runtime_rejects_unknown_format_version(tmp_path, small_artifact):
    import shutil

    copy = tmp_path / "future"
    shutil.copytree(small_artifact, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TsmDeployError, match="format 99 is not supported"):
        StreamingModel(copy)


def test_failed_compile_leaves_nothing(tmp_path, small_checkpoint):
    out = tmp_path / "art"
    with pytest.raises(TsmDeployError, match="labels"):
        compile_artifact(small_checkpoint, load_target("x86"), out, database=None, labels=["only-one"])
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_dir_cleans_up_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_output_dir(tmp_path / "out") as tmp:
            (tmp / "half-written").write_text("x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_runtime_does_not_import_torch_or_onnx():
    import subprocess
    import sys

    code = (
        "import sys; import tsm_deploy.runtime; "
        "bad = [m for m in ('torch', 'onnx', 'onnxruntime', 'tsm_deploy.compiler.artifact') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_default_model_parity_over_32_frames(tmp_path):
    """The issue's bar: the full-size default model, 32 streamed frames, <= 1e-4 and 100 % top-1."""
    checkpoint = default_checkpoint()
    out = tmp_path / "default-x86"
    compile_artifact(checkpoint, load_target("x86"), out, database=None)
    report = verify_artifact(out, checkpoint, frames=32)
    assert report.passed, report.table()
    assert report.max_abs_error <= 1e-4 and report.top1_agreement == 1.0
