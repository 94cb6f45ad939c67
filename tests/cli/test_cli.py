"""The CLI contract: exit codes 0/1/2, one clear line for bad input, never a traceback or half an artifact."""

import json
import shutil

import pytest
import torch
from click.testing import CliRunner

from tsm_deploy.cli import main


def invoke(*args: str):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def assert_one_line_error(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.output


def test_export(tmp_path, small_checkpoint_file):
    out = tmp_path / "m.onnx"
    result = invoke("export", "--checkpoint", small_checkpoint_file, "--output", out)
    assert result.exit_code == 0, result.output
    assert out.exists() and "ONNX Runtime max abs error" in result.stdout


def test_compile_and_verify(tmp_path, small_checkpoint_file):
    art = tmp_path / "art"
    result = invoke("compile", "--checkpoint", small_checkpoint_file, "--target", "x86", "--output", art, "--no-tuning")
    assert result.exit_code == 0, result.output
    assert (art / "manifest.json").exists() and "untuned: no tuning records" in result.stdout
    report = tmp_path / "report.json"
    result = invoke("verify", art, "--checkpoint", small_checkpoint_file, "--frames", 4, "--json", report)
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["max_abs_error"] <= 1e-4 and data["top1_agreement"] == 1.0 and data["frames"] == 4


def test_verify_exit_1_when_parity_fails(small_artifact, tmp_path):
    from tsm_deploy.checkpoint import default_checkpoint, save_checkpoint

    from ..conftest import SMALL_CONFIG

    other = tmp_path / "other.pth"
    save_checkpoint(default_checkpoint(SMALL_CONFIG, seed=12), other)
    result = invoke("verify", small_artifact, "--checkpoint", other, "--frames", 2)
    assert result.exit_code == 1 and "FAIL" in result.stdout


def test_unknown_target(tmp_path):
    result = invoke("compile", "--target", "commodore64", "--output", tmp_path / "a")
    assert_one_line_error(result, "unknown target 'commodore64'")
    assert not (tmp_path / "a").exists()


def test_missing_checkpoint(tmp_path):
    result = invoke("compile", "--checkpoint", tmp_path / "nope.pth", "--target", "x86", "--output", tmp_path / "a")
    assert_one_line_error(result, "checkpoint not found")
    assert not (tmp_path / "a").exists()


def test_truncated_checkpoint(tmp_path, small_checkpoint_file):
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(small_checkpoint_file.read_bytes()[:10000])
    result = invoke("compile", "--checkpoint", bad, "--target", "x86", "--output", tmp_path / "a")
    assert_one_line_error(result, "not a PyTorch checkpoint or truncated")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["truncated.pth"]


def test_checkpoint_of_another_architecture(tmp_path):
    bad = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(400, 2048)}, bad)
    result = invoke("export", "--checkpoint", bad, "--output", tmp_path / "m.onnx")
    assert_one_line_error(result, "does not look like an online TSM-MobileNetV2")
    assert not (tmp_path / "m.onnx").exists()


def test_checkpoint_of_another_class_count(tmp_path, small_artifact):
    from tsm_deploy.checkpoint import default_checkpoint, save_checkpoint

    from ..conftest import SMALL_CONFIG

    other = tmp_path / "five.pth"
    save_checkpoint(default_checkpoint(SMALL_CONFIG.__class__(**{**SMALL_CONFIG.to_dict(), "n_class": 5})), other)
    result = invoke("verify", small_artifact, "--checkpoint", other)
    assert_one_line_error(result, "n_class=5 in the checkpoint, 10 in the artifact")


def test_tampered_artifact(tmp_path, small_artifact, small_checkpoint_file):
    copy = tmp_path / "tampered"
    shutil.copytree(small_artifact, copy)
    with open(copy / "module.so", "r+b") as f:
        f.seek(4096)
        byte = f.read(1)
        f.seek(4096)
        f.write(bytes([byte[0] ^ 0xFF]))
    result = invoke("verify", copy, "--checkpoint", small_checkpoint_file)
    assert_one_line_error(result, "does not match the sha256")


def test_not_an_artifact(tmp_path):
    result = invoke("verify", tmp_path)
    assert_one_line_error(result, "not a tsm-deploy artifact")


@pytest.mark.parametrize("args, message", [(["--input-size", "100"], "multiple of 32"), (["--fold-div", "1"], "fold-div")])
def test_bad_model_arguments(tmp_path, args, message):
    result = invoke("export", *args, "--output", tmp_path / "m.onnx")
    assert_one_line_error(result, message)


def test_run_streams_frames(small_artifact):
    result = invoke("run", small_artifact, "--frames", 3)
    assert result.exit_code == 0, result.output
    assert len([line for line in result.stdout.splitlines() if "top1=" in line]) == 3


def _write_video(path, frames: int = 4, size=(96, 128)) -> None:
    """A real encoded video file (MPEG-4 part 2 in MP4), written with PyAV."""
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        for _ in range(frames):
            image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def test_run_streams_a_video_file(tmp_path, small_artifact):
    video = tmp_path / "clip.mp4"
    _write_video(video, frames=4)
    result = invoke("run", small_artifact, video, "--frames", 10)
    assert result.exit_code == 0, result.output
    assert len([line for line in result.stdout.splitlines() if "top1=" in line]) == 4


def test_run_refuses_a_file_that_is_not_a_video(tmp_path, small_artifact):
    bogus = tmp_path / "clip.mp4"
    bogus.write_bytes(b"not a video at all")
    result = invoke("run", small_artifact, bogus)
    assert_one_line_error(result, "cannot read video")


def test_click_usage_errors_are_one_line():
    """An unknown option or a missing one is bad input like any other: one line, exit 2."""
    from click.testing import CliRunner

    from tsm_deploy.cli import main

    for argv, message in ((["targets", "-0"], "error: No such option '-0'."),
                          (["compile"], "error: Missing option '--target' / '-t'.")):
        result = CliRunner().invoke(main, argv)
        assert result.exit_code == 2 and result.stderr.splitlines() == [message], result.stderr
