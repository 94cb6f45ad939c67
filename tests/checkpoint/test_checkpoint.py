"""Checkpoint layouts of the original code and tsm-deploy, and every way a file can be wrong."""

import os

import pytest
import torch

from tsm_deploy.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from tsm_deploy.errors import TsmDeployError

from ..conftest import SMALL_CONFIG


def test_tsm_deploy_layout_roundtrip(small_checkpoint, small_checkpoint_file):
    loaded = load_checkpoint(small_checkpoint_file)
    assert loaded.config == SMALL_CONFIG and loaded.layout == "tsm-deploy"
    torch.testing.assert_close(loaded.model().state_dict(), small_checkpoint.model().state_dict())


def test_original_online_demo_layout(tmp_path, small_checkpoint):
    path = tmp_path / "mobilenetv2_online.pth.tar"
    torch.save(small_checkpoint.state_dict, path)  # a bare state dict, as the online demo's file
    loaded = load_checkpoint(path, {"input_size": 64})
    assert loaded.layout == "state-dict"
    assert (loaded.config.n_class, loaded.config.width_mult) == (10, 0.5)  # read off the tensor shapes


def test_original_training_layout_with_dataparallel_prefix(tmp_path, small_checkpoint):
    path = tmp_path / "ckpt.best.pth.tar"
    state = {f"module.{k}": v for k, v in small_checkpoint.state_dict.items()}
    torch.save({"epoch": 7, "arch": "mobilenetv2", "state_dict": state, "best_prec1": 50.0}, path)
    loaded = load_checkpoint(path, {"input_size": 64})
    assert loaded.layout == "tsm-training" and loaded.config.n_class == 10


def test_default_model_is_deterministic():
    a, b = resolve_checkpoint(None, {"input_size": 64}), resolve_checkpoint(None, {"input_size": 64})
    assert a.sha256 == b.sha256 and a.layout == "default"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p, ck: None, "checkpoint not found"),
        (lambda p, ck: p.write_bytes(b"definitely not a checkpoint"), "not a PyTorch checkpoint or truncated"),
        (lambda p, ck: p.write_bytes(_saved_bytes(ck)[:5000]), "not a PyTorch checkpoint or truncated"),
        (lambda p, ck: torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}, p),
         "does not look like an online TSM-MobileNetV2"),
        (lambda p, ck: torch.save({"base_model.conv1.weight": torch.zeros(1), "new_fc.weight": torch.zeros(1)}, p),
         "offline TSN-wrapped"),
        (lambda p, ck: torch.save({**ck.state_dict, "classifier.weight": torch.zeros(10, 7)}, p), "expected"),
        (lambda p, ck: torch.save([1, 2, 3], p), "not a state dict"),
    ],
    ids=["missing", "garbage", "truncated", "resnet", "tsn", "wrong-shape", "list"],
)
def test_bad_checkpoints_raise_one_clear_error(tmp_path, small_checkpoint, make, message):
    path = tmp_path / "bad.pth"
    make(path, small_checkpoint)
    with pytest.raises(TsmDeployError, match=message) as info:
        load_checkpoint(path, {"input_size": 64})
    assert "\n" not in str(info.value)


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {_RunsCode.marker}",))


def test_checkpoint_that_would_run_code_runs_none(tmp_path, small_checkpoint):
    _RunsCode.marker = str(tmp_path / "pwned")
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": small_checkpoint.state_dict, "payload": _RunsCode()}, path)
    assert load_checkpoint(path, {"input_size": 64}).config == small_checkpoint.config  # payload left out
    torch.save({"state_dict": {**small_checkpoint.state_dict, "payload": _RunsCode()}}, path)
    with pytest.raises(TsmDeployError, match="refusing to load"):  # in the weights: refused
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, small_checkpoint):
    save_checkpoint(small_checkpoint, tmp_path / "a.pth")
    assert [p.name for p in tmp_path.iterdir()] == ["a.pth"]


def _saved_bytes(checkpoint) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(checkpoint.state_dict, buffer)
    return buffer.getvalue()
