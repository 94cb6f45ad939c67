"""What an int8 calibration streams: the user's video, a folder of videos and images, the default
model's task, seeded frames; and one line for an input that holds no frames."""

from __future__ import annotations

import numpy as np
import pytest

from tsm_deploy.checkpoint.default import trained_checkpoint
from tsm_deploy.data.video_io import write_video
from tsm_deploy.errors import TsmDeployError
from tsm_deploy.quantize import calibrate_checkpoint, calibration_frames
from tsm_deploy.runtime.preprocess import prepare_frame
from tsm_deploy.models.registry import preprocessing

from ..cli.test_cli import assert_one_line_error, invoke


def _frames(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(72, 96, 3), dtype=np.uint8) for _ in range(count)]


def test_a_video_and_a_folder_are_streamed_in_order(tmp_path, small_checkpoint):
    write_video(_frames(5), tmp_path / "a.mp4", 8.0)
    frames = calibration_frames(small_checkpoint, tmp_path / "a.mp4")
    size = small_checkpoint.config.input_size
    assert frames.frames.shape == (5, 1, 3, size, size) and frames.frames.dtype == np.float32
    folder = tmp_path / "clips"
    folder.mkdir()
    write_video(_frames(4, seed=1), folder / "b.mp4", 8.0)
    (tmp_path / "a.mp4").rename(folder / "a.mp4")
    capped = calibration_frames(small_checkpoint, folder, max_frames=7)
    assert capped.frames.shape[0] == 7 and "2 files" in capped.source
    # a.mp4 first (name order): its frames lead the stream
    assert np.array_equal(capped.frames[:5], frames.frames)


def test_an_image_is_one_frame(tmp_path, small_checkpoint):
    import av

    image = _frames(1)[0]
    container = av.open(str(tmp_path / "f.png"), "w", format="image2")
    stream = container.add_stream("png")
    stream.width, stream.height, stream.pix_fmt = 96, 72, "rgb24"
    for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
        container.mux(packet)
    container.close()
    frames = calibration_frames(small_checkpoint, tmp_path / "f.png")
    expected = prepare_frame(image, preprocessing(small_checkpoint.config))
    assert frames.frames.shape[0] == 1 and np.array_equal(frames.frames[0], expected)  # PNG is lossless


def test_inputs_without_frames_are_one_line(tmp_path, small_checkpoint):
    with pytest.raises(TsmDeployError, match="does not exist"):
        calibration_frames(small_checkpoint, tmp_path / "nope.mp4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TsmDeployError, match="holds no frames"):
        calibration_frames(small_checkpoint, tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("not a video\n")
    with pytest.raises(TsmDeployError):
        calibration_frames(small_checkpoint, tmp_path / "notes.txt")


def test_default_frames_are_the_task_or_seeded(small_checkpoint, small_clip_checkpoint):
    seeded = calibration_frames(small_checkpoint, None, max_frames=3)
    assert seeded.frames.shape[0] == 3 and "seeded" in seeded.source
    trained = trained_checkpoint()
    if trained is not None:
        task = calibration_frames(trained, None, max_frames=20)
        assert task.frames.shape[0] == 20 and "own task" in task.source
    with pytest.raises(TsmDeployError, match="stream models"):
        calibrate_checkpoint(small_clip_checkpoint, None)


def test_compile_int8_options_are_checked(tmp_path, small_checkpoint_file):
    result = invoke("compile", "--checkpoint", small_checkpoint_file, "--target", "x86", "--output", tmp_path / "a",
                    "--calibration", tmp_path)
    assert_one_line_error(result, "--calibration is for --precision int8")
    (tmp_path / "empty").mkdir()
    result = invoke("compile", "--checkpoint", small_checkpoint_file, "--target", "x86", "--output", tmp_path / "a",
                    "--precision", "int8", "--calibration", tmp_path / "empty")
    assert_one_line_error(result, "holds no frames")
    assert not (tmp_path / "a").exists()
