"""The int8 benchmark's runners: an int8 artifact, its fp32 twin, ONNX Runtime's own static int8 and
its fp32, side by side (no timing asserted: speed claims live in benchmarks/)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tsm_deploy.compiler.artifact import compile_artifact
from tsm_deploy.errors import TsmDeployError
from tsm_deploy.evaluate.bench.int8 import INT8_RUNNERS, benchmark_int8, ort_static_int8
from tsm_deploy.evaluate.bench.report import write_report
from tsm_deploy.frontend.export import export_onnx
from tsm_deploy.quantize import calibrate_checkpoint, calibration_frames
from tsm_deploy.target.targets import load_target


def test_ort_static_int8_runs_integer_kernels(small_checkpoint):
    """ONNX Runtime's quantizer turns the stream export into QDQ with int8 weights; its logits stay near
    fp32 on the frames it was calibrated on."""
    import onnxruntime as ort

    model = small_checkpoint.model()
    proto = export_onnx(model, check_ort=False).model
    frames = calibration_frames(small_checkpoint, None, 8).frames
    quantized = ort_static_int8(model, proto, frames)
    ops = {node.op_type for node in quantized.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    session = ort.InferenceSession(quantized.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    out = session.run(None, dict(zip(names, [frames[0]] + [b.numpy() for b in model.zero_buffers()])))
    assert np.isfinite(out[0]).all() and out[0].shape == (1, small_checkpoint.config.n_class)


@pytest.mark.slow
@pytest.mark.heavy
def test_int8_bench_times_four_runners(tmp_path, small_checkpoint, small_artifact):
    out = tmp_path / "int8"
    compile_artifact(small_checkpoint, load_target("x86"), out, database=None,
                     quant=calibrate_checkpoint(small_checkpoint, None, 8))
    report = benchmark_int8(out, small_checkpoint, frames=4, warmup=1, threads=1, round_size=2)
    assert set(report.runners) == set(INT8_RUNNERS) and all(s.frames == 4 for s in report.runners.values())
    assert set(report.top1_agreement_fp32) >= {"tvm_int8", "onnxruntime_int8"}
    write_report(report, tmp_path / "r.json", tmp_path / "r.png")
    data = json.loads((tmp_path / "r.json").read_text())
    assert "tvm_int8 / tvm_fp32" in data["ratios"] and (tmp_path / "r.png").stat().st_size > 1000
    with pytest.raises(TsmDeployError, match="fp32 artifact"):
        benchmark_int8(small_artifact, small_checkpoint, frames=1, warmup=0, threads=1, round_size=1)
