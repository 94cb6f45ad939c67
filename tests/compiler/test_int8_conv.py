"""int8: a calibrated model compiles with its convolutions on integers and computes what its
fake-quantized PyTorch twin computes; an fp32 graph goes through the pass unchanged."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import tvm
from tvm import relax

from tsm_deploy.compiler.artifact import MANIFEST_NAME, compile_artifact
from tsm_deploy.compiler.passes.int8_conv import int8_convolutions, is_quantized, weight_grid
from tsm_deploy.compiler.pipeline import prepare_module
from tsm_deploy.evaluate.verify import INT8_STATE_STEPS, verify_artifact
from tsm_deploy.frontend.export import export_onnx
from tsm_deploy.frontend.relax import import_onnx
from tsm_deploy.quantize import QuantSpec, calibrate
from tsm_deploy.runtime import read_manifest
from tsm_deploy.target.targets import load_target


def _conv_dtypes(mod: tvm.IRModule) -> list[tuple[str, str]]:
    """(input dtype, output dtype) of every conv2d of ``mod``'s main function."""
    found = []

    def visit(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == "relax.nn.conv2d":
            found.append((str(expr.args[0].ty.dtype), str(expr.ty.dtype)))

    relax.analysis.post_order_visit(mod["main"].body, visit)
    return found


@pytest.fixture(scope="module")
def spec(small_checkpoint) -> QuantSpec:
    model = small_checkpoint.model()
    frames = np.random.default_rng(0).standard_normal((6, *model.input_shapes()["frame"])).astype(np.float32)
    return calibrate(model, frames)


def test_fp32_graph_is_unchanged(small_checkpoint):
    mod = import_onnx(export_onnx(small_checkpoint.model(), check_ort=False).model)
    assert not is_quantized(mod)
    assert int8_convolutions(mod) is mod


def test_every_convolution_runs_on_integers(small_checkpoint, spec):
    from tsm_deploy.quantize import fake_quantize

    quantized = fake_quantize(small_checkpoint.model(), spec)
    mod = import_onnx(export_onnx(quantized, check_ort=False).model)
    assert is_quantized(mod)
    before = _conv_dtypes(mod)
    converted = _conv_dtypes(int8_convolutions(mod))
    assert len(converted) == len(before) > 10
    assert all(out == "int32" and data in ("uint8", "int8") for data, out in converted), converted


def test_weight_grid_needs_every_value_on_the_grid():
    values = np.arange(-127, 128, dtype=np.float64).reshape(1, -1) * 0.01
    grid = weight_grid(values.astype(np.float32))
    assert grid is not None and np.array_equal(grid[0].astype(np.int64), np.arange(-127, 128).reshape(1, -1))
    assert weight_grid((values + 0.003).astype(np.float32)) is None  # a third of a step off


@pytest.fixture(scope="module")
def int8_artifact(tmp_path_factory, small_checkpoint, spec):
    out = tmp_path_factory.mktemp("int8") / "small-int8"
    compile_artifact(small_checkpoint, load_target("x86"), out, database=None, quant=spec)
    return out


def test_int8_artifact_streams_like_the_fake_quantized_model(int8_artifact, small_checkpoint, spec):
    """Compiled for x86 (untuned), streamed 12 frames: the state stays within a few steps of its grid,
    the logits within the int8 tolerance, the top-1 as the reference's; the manifest says int8."""
    manifest = read_manifest(int8_artifact)
    assert manifest.precision == "int8" and QuantSpec.from_json(manifest.quantization) == spec
    report = verify_artifact(int8_artifact, small_checkpoint, frames=12)
    assert report.passed, report.table()
    assert report.precision == "int8" and report.buffers_max_steps <= INT8_STATE_STEPS
    assert report.top1_agreement == 1.0 and report.top1_agreement_fp32 is not None
    assert "steps of their grid" in report.table()
    # and the fp32 artifact of the same checkpoint says fp32
    prepared = prepare_module(small_checkpoint, load_target("x86"), check_ort=False)
    assert not is_quantized(prepared.mod)


def test_int8_verify_fails_against_another_calibration(tmp_path, int8_artifact, small_checkpoint, spec):
    """The reference follows the manifest's scales: a manifest whose scales are not the module's fails."""
    copy = tmp_path / "other"
    shutil.copytree(int8_artifact, copy)
    data = json.loads((copy / MANIFEST_NAME).read_text())
    for act in data["quantization"]["activations"].values():
        act["scale"] *= 1.25
    (copy / MANIFEST_NAME).write_text(json.dumps(data))
    report = verify_artifact(copy, small_checkpoint, frames=4)
    assert not report.passed, report.table()
