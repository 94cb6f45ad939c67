"""Shared fixtures. Small models (64x64, width 0.5) keep real TVM compiles to seconds."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tsm_deploy.checkpoint import LoadedCheckpoint, default_checkpoint, save_checkpoint
from tsm_deploy.models import ModelConfig

SMALL_CONFIG = ModelConfig(n_class=10, input_size=64, width_mult=0.5)


@pytest.fixture(autouse=True)
def _quiet_tvm_logs():
    logging.getLogger("tsm_deploy").setLevel(logging.INFO)
    yield


@pytest.fixture(scope="session")
def small_checkpoint() -> LoadedCheckpoint:
    return default_checkpoint(SMALL_CONFIG, seed=3)


@pytest.fixture(scope="session")
def small_checkpoint_file(tmp_path_factory, small_checkpoint) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "small.pth"
    save_checkpoint(small_checkpoint, path)
    return path


@pytest.fixture(scope="session")
def small_artifact(tmp_path_factory, small_checkpoint) -> Path:
    """The small model compiled for this machine once per session (real export, import, build)."""
    from tsm_deploy.compile import compile_artifact
    from tsm_deploy.targets import load_target

    out = tmp_path_factory.mktemp("artifacts") / "small-x86"
    compile_artifact(small_checkpoint, load_target("x86"), out, database=None)
    return out


SMALL_CLIP_CONFIG = ModelConfig(arch="tsm_mobilenet_v2", n_class=10, input_size=64, width_mult=0.5, n_segment=4)


@pytest.fixture(scope="session")
def small_clip_checkpoint() -> LoadedCheckpoint:
    """An offline (bi-directional) TSM-MobileNetV2 over clips of 4 segments, small."""
    return default_checkpoint(SMALL_CLIP_CONFIG, seed=4)
