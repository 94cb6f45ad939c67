"""Preprocessing compiled into the artifact: uint8 camera frames in, parity with the numpy path and
PyTorch, one clear line for a frame of another size."""

from __future__ import annotations

import numpy as np
import pytest

from tsm_deploy.compiler.artifact import compile_artifact
from tsm_deploy.errors import TsmDeployError
from tsm_deploy.evaluate.verify import verify_artifact
from tsm_deploy.runtime import StreamingModel
from tsm_deploy.target.targets import load_target

FRAME = (120, 160)  # height, width


@pytest.fixture(scope="module")
def raw_frame_artifact(tmp_path_factory, small_checkpoint):
    out = tmp_path_factory.mktemp("raw") / "small-x86-160x120"
    compile_artifact(small_checkpoint, load_target("x86"), out, database=None, frame_size=FRAME)
    return out


def test_manifest_says_frames_go_in_raw(raw_frame_artifact):
    model = StreamingModel(raw_frame_artifact)
    assert model.takes_raw_frames and model.frame_shape == (*FRAME, 3)
    assert model.manifest.frame.dtype == "uint8"


def test_compiled_preprocessing_matches_numpy_path_and_pytorch(raw_frame_artifact, small_artifact, small_checkpoint):
    report = verify_artifact(raw_frame_artifact, small_checkpoint, frames=6)
    assert report.passed, report.table()
    raw, numpy_path = StreamingModel(raw_frame_artifact), StreamingModel(small_artifact)
    rng = np.random.default_rng(5)
    for _ in range(4):
        frame = rng.integers(0, 256, (*FRAME, 3), dtype=np.uint8)
        a, b = raw.step(frame).logits, numpy_path.step(frame).logits
        assert np.max(np.abs(a - b)) <= 1e-4


def test_frame_of_another_size_is_one_clear_line(raw_frame_artifact):
    model = StreamingModel(raw_frame_artifact)
    with pytest.raises(TsmDeployError, match="takes 160x120 uint8 RGB frames") as info:
        model.step(np.zeros((240, 320, 3), np.uint8))
    assert "\n" not in str(info.value)
