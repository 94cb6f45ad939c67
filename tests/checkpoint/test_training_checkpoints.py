"""Training checkpoints as users hold them: mmengine's runner files (MMAction2 ``work_dirs``), the
original code's training files with optimizer state; nothing in them outside the weights is run."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from tsm_deploy.checkpoint import load_checkpoint
from tsm_deploy.checkpoint.offline import parse_mmaction2_config
from tsm_deploy.checkpoint.reader import StandIn, TolerantUnpickler, read_checkpoint_file
from tsm_deploy.errors import TsmDeployError

from ..models.test_offline_models import seeded_model, to_mmaction2

MMENGINE_MODULES = ("mmengine", "mmengine.logging", "mmengine.logging.history_buffer")
MARKER = "ran.txt"  # written by the stand-in classes' code if anything of it ever ran


def _history_buffer_class(marker: Path) -> type:
    """A class named as mmengine's HistoryBuffer, stored as it stores itself (``__dict__`` with numpy
    arrays, pickled by ``object.__reduce_ex__``); its ``__setstate__`` writes ``marker``: a load that
    runs code shows."""

    class HistoryBuffer:
        def __init__(self, log_history=(), count_history=(), max_length=1000000):
            self._log_history = np.array(log_history)
            self._count_history = np.array(count_history)
            self.max_length = max_length

        def __getstate__(self):
            return self.__dict__

        def __setstate__(self, state):
            marker.write_text("__setstate__ ran")

    HistoryBuffer.__module__ = MMENGINE_MODULES[-1]
    HistoryBuffer.__qualname__ = "HistoryBuffer"
    return HistoryBuffer


@contextlib.contextmanager
def _mmengine_stand_in(marker: Path):
    """``mmengine.logging.history_buffer.HistoryBuffer`` importable only inside the block (as while the
    runner saves); gone before anything is loaded."""
    modules = [types.ModuleType(name) for name in MMENGINE_MODULES]
    cls = _history_buffer_class(marker)
    modules[-1].HistoryBuffer = cls
    saved = {name: sys.modules.get(name) for name in MMENGINE_MODULES}
    sys.modules.update(dict(zip(MMENGINE_MODULES, modules)))
    try:
        yield cls
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


MBV2_CONFIG = (
    "model = dict(\n    backbone=dict(\n        is_shift=True,\n        num_segments=4,\n        shift_div=8,\n"
    "        non_local=(\n            0,\n            0,\n        ),\n"
    "        type='MobileNetV2TSM'),\n    cls_head=dict(\n        num_classes=10,\n        num_segments=4,\n"
    "        type='TSMHead'),\n    type='Recognizer2D')\n"
)


def _runner_checkpoint(model: torch.nn.Module, history_buffer: type) -> dict:
    """What mmengine 0.10's ``Runner.save_checkpoint`` writes (meta, state_dict, message_hub,
    optimizer, param_schedulers), with MMAction2's key names."""
    state = OrderedDict(to_mmaction2(model.state_dict(), "tsm_mobilenet_v2"))
    state._metadata = OrderedDict({"": {"version": 1}})  # as module.state_dict() carries it
    params = [p for p in model.parameters()]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()
    labels = [f"class {i}" for i in range(10)]
    return {
        "meta": {"epoch": 1, "iter": 40, "cfg": MBV2_CONFIG, "seed": 1234, "experiment_name": "tsm_mbv2_20260101",
                 "time": "20260101_120000", "mmengine_version": "0.10.7", "dataset_meta": {"classes": labels}},
        "state_dict": state,
        "message_hub": {
            "log_scalars": OrderedDict({"train/loss": history_buffer([2.3, 2.1], [1, 1]),
                                        "train/lr": history_buffer([0.01], [1])}),
            "runtime_info": OrderedDict({"epoch": 1, "iter": 40, "max_epochs": 50, "dataset_meta": {"classes": labels}}),
            "resumed_keys": OrderedDict({"train/loss": True, "train/lr": True, "epoch": True}),
        },
        "optimizer": optimizer.state_dict(),
        "param_schedulers": [{"begin": 0, "end": 50, "by_epoch": True, "last_step": 1, "base_values": [0.01],
                              "_last_value": [0.01], "verbose": False, "param_name": "lr"}],
    }


@pytest.fixture(scope="module")
def mbv2():
    return seeded_model(arch="tsm_mobilenet_v2", width_mult=0.5)


@pytest.mark.parametrize("name", ["epoch_1.pth", "best_acc_top1_epoch_1.pth"])
def test_mmengine_runner_checkpoint_loads_without_running_code(tmp_path, mbv2, caplog, name):
    marker = tmp_path / MARKER
    path = tmp_path / "work_dirs" / "tsm_imagenet-pretrained-mobilenetv2_8xb16-1x1x4-50e_kinetics400-rgb" / name
    path.parent.mkdir(parents=True)
    with _mmengine_stand_in(marker) as history_buffer:
        torch.save(_runner_checkpoint(mbv2, history_buffer), path)
    assert MMENGINE_MODULES[-1] not in sys.modules and not marker.exists()
    with pytest.raises(Exception, match="HistoryBuffer"):  # what weights_only says of this file
        torch.load(path, weights_only=True)

    with caplog.at_level(logging.INFO, logger="tsm_deploy"):
        loaded = load_checkpoint(path, {"input_size": 64})
    assert not marker.exists(), marker.read_text()
    assert MMENGINE_MODULES[-1] not in sys.modules  # nothing was imported either
    assert loaded.layout == "mmaction2" and loaded.config.n_segment == 4 and loaded.config.width_mult == 0.5
    assert loaded.labels == tuple(f"class {i}" for i in range(10))
    reference = mbv2.state_dict()
    assert set(loaded.state_dict) == set(reference)
    assert all(torch.equal(loaded.state_dict[k], v) for k, v in reference.items())
    log = caplog.text
    assert "skipped message_hub, optimizer, param_schedulers" in log
    assert "message_hub: 2 x mmengine.logging.history_buffer.HistoryBuffer" in log


class _WritesFile:
    """Unpickled for real, this would write a file in ``__setstate__``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __setstate__(self, state):
        Path(state["path"]).write_text("ran")


class _CallsSystem:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_code_outside_the_weights_is_never_run(tmp_path, small_checkpoint):
    written, touched = tmp_path / "written", tmp_path / "touched"
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": small_checkpoint.state_dict, "optimizer": {"hook": _CallsSystem(str(touched))},
                "extra": [_WritesFile(str(written))], "epoch": 3}, path)
    obj, _ = read_checkpoint_file(path)
    assert not written.exists() and not touched.exists()
    assert set(obj) == {"state_dict", "optimizer", "epoch"} and obj["optimizer"] == {}
    loaded = load_checkpoint(path, {"input_size": 64})
    assert loaded.layout == "tsm-training" and not written.exists() and not touched.exists()


@pytest.mark.parametrize("where", ["value", "bare", "nested"])
def test_weights_that_need_code_are_refused_in_one_line(tmp_path, small_checkpoint, where):
    touched = tmp_path / "touched"
    state = dict(small_checkpoint.state_dict)
    if where == "nested":
        state["classifier.weight"] = [_CallsSystem(str(touched))]
    else:
        state["classifier.bias"] = _CallsSystem(str(touched))
    path = tmp_path / "evil.pth"
    torch.save(state if where == "bare" else {"state_dict": state, "meta": {}}, path)
    with pytest.raises(TsmDeployError, match=r"refusing to load .*reference (posix|os|nt)\.system") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value) and not touched.exists()


def test_file_that_is_an_object_is_refused(tmp_path):
    path = tmp_path / "model.pth"
    torch.save(argparse.Namespace(lr=0.1), path)
    with pytest.raises(TsmDeployError, match="is a argparse.Namespace object"):
        load_checkpoint(path)


def test_stand_ins_record_and_never_call():
    import io
    import pickle

    buffer = io.BytesIO()
    pickle.dump({"a": _CallsSystem("/nonexistent/x"), "b": argparse.Namespace(x=1)}, buffer, protocol=2)
    obj = TolerantUnpickler(io.BytesIO(buffer.getvalue())).load()
    assert isinstance(obj["a"], StandIn) and obj["a"].global_name.endswith(".system")
    assert obj["a"].args == ("touch /nonexistent/x",)
    assert obj["b"].global_name == "argparse.Namespace" and obj["b"].state == {"x": 1}


def _original_training_file(model: torch.nn.Module, prefix: str = "module.") -> dict:
    """What the original code's main.py saves every epoch: epoch, arch, state_dict, optimizer, best_prec1."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.1)
    optimizer.step()
    return {"epoch": 25, "arch": "mobilenetv2", "state_dict": {prefix + k: v for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(), "best_prec1": 41.3}


def test_original_training_file_with_optimizer_state(tmp_path, mbv2, caplog):
    run = tmp_path / "checkpoint" / "TSM_kinetics_RGB_mobilenetv2_shift8_blockres_avg_segment4_e50"
    run.mkdir(parents=True)
    path = run / "ckpt.pth.tar"
    torch.save(_original_training_file(mbv2), path)
    with caplog.at_level(logging.INFO, logger="tsm_deploy"):
        loaded = load_checkpoint(path, {"input_size": 64})
    assert loaded.layout == "tsm-original" and loaded.config.n_segment == 4
    assert all(torch.equal(loaded.state_dict[k], v) for k, v in mbv2.state_dict().items())
    assert "skipped epoch, optimizer, best_prec1" in caplog.text


def test_online_training_file_with_optimizer_state_and_args(tmp_path, small_checkpoint, caplog):
    """The online model's training files as forks of the original save them: the argparse
    Namespace of the run beside the optimizer state."""
    model = small_checkpoint.model()
    obj = _original_training_file(model)
    obj["args"] = argparse.Namespace(lr=0.01, arch="mobilenetv2", num_segments=8)
    path = tmp_path / "ckpt.best.pth.tar"
    torch.save(obj, path)
    with caplog.at_level(logging.INFO, logger="tsm_deploy"):
        loaded = load_checkpoint(path, {"input_size": 64})
    assert loaded.layout == "tsm-training" and loaded.config == small_checkpoint.config
    assert "args: 1 x argparse.Namespace" in caplog.text
    assert "skipped epoch, optimizer, best_prec1" in caplog.text


def test_multi_line_non_local_config_is_refused():
    """mmengine's ``pretty_text`` writes one tuple element per line, nested tuples per stage."""
    multi_line = MBV2_CONFIG.replace("ResNetTSM", "x").replace(
        "non_local=(\n            0,\n            0,\n        ),",
        "non_local=(\n            (\n                0,\n                0,\n                0,\n            ),\n"
        "            (\n                1,\n                0,\n                1,\n                0,\n            ),\n        ),",
    )
    assert "non-local blocks (MMAction2 config)" in parse_mmaction2_config(multi_line).unsupported
    assert parse_mmaction2_config("non_local=((0, 0, 0), (1, 0, 1, 0), (1, 0, 1, 0, 1, 0), (0, 0, 0))").unsupported
    assert not parse_mmaction2_config(MBV2_CONFIG).unsupported  # all zeros, over lines
    assert not parse_mmaction2_config("non_local=((0, 0, 0), (0, 0, 0, 0)), non_local_cfg=dict(sub_sample=True)").unsupported
