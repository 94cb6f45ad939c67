"""The reshaped pipeline's contracts: one prepare function, the spec-driven shift check, manifest
format 2 (and format 1 still read), the runtime package self-contained in a bundle."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tsm_deploy.errors import CheckFailed, TsmDeployError
from tsm_deploy.models import ModelConfig, build_model, model_spec
from tsm_deploy.runtime import StreamingModel, load_model
from tsm_deploy.runtime.manifest import Manifest, read_manifest
from tsm_deploy.target.targets import load_target
from tsm_deploy.target.library import model_key


def test_shift_check_fails_a_model_whose_shift_was_removed(small_checkpoint, monkeypatch):
    """The spec says ten shifts; a model whose shift was replaced by identity has none in its graph."""
    from tsm_deploy.compiler import pipeline
    from tsm_deploy.models import mobilenet_v2

    pipeline.prepare_module(small_checkpoint, load_target("x86"), check_ort=False)  # the real one passes
    monkeypatch.setattr(mobilenet_v2, "online_shift", lambda x, buffer, fold_div: (x, buffer))
    # the packed state adds 10 slices and 1 concatenation of its own (CPU targets): they do not count
    with pytest.raises(CheckFailed, match=r"expected >= 30 strided_slice and >= 11 concatenate for 10 "
                                          r"unidirectional shifts \(\+ 10 and 1 of the packed state\), found 10 and 1"):
        pipeline.prepare_module(small_checkpoint, load_target("x86"), check_ort=False)


def test_model_key_names_everything_that_changes_kernels():
    base = ModelConfig(n_class=10, input_size=64, width_mult=0.5)
    keys = {model_key(base)}
    for change in ({"n_class": 11}, {"input_size": 96}, {"width_mult": 0.75}, {"fold_div": 4},
                   {"placement": "inplace"}, {"shift": False}):
        key = model_key(ModelConfig(**{**base.to_dict(), **change}))
        assert key not in keys, change
        keys.add(key)
    # the committed folders keep their names
    assert model_key(ModelConfig()) == "tsm_mobilenet_v2_online-s224-w1-f8-c27"


def test_spec_says_io_kind_and_shift_count():
    spec = model_spec("tsm_mobilenet_v2_online")
    model = build_model(ModelConfig(input_size=64, width_mult=0.5))
    assert spec.io_kind == model.io_kind == "stream" and model.n_shifts == 10
    assert model.state_pairs()[0] == ("next_shift_buffer_0", "shift_buffer_0")


def _as_format_1(manifest_json: dict) -> dict:
    data = dict(manifest_json)
    io = data.pop("io")
    data.pop("task", None)
    data["format_version"] = 1
    data["state"] = io["state"]
    return data


def test_manifest_2_round_trips_and_format_1_still_loads(tmp_path, small_artifact, small_checkpoint, monkeypatch):
    manifest = read_manifest(small_artifact)
    assert manifest.format_version == 2 and manifest.kind == "stream"
    assert Manifest.from_json(manifest.to_json()) == manifest
    # format 1 (before fa70496, 2026-11-22) had no io section: its modules returned the next state. Compile one that
    # does (the state packed by a kernel and returned, the fallback when the in-place rewrite does
    # not apply) and describe it in format 1.
    import tsm_deploy.compiler.pipeline
    from tsm_deploy.compiler.artifact import compile_artifact
    from tsm_deploy.target.targets import load_target

    monkeypatch.setattr(tsm_deploy.compiler.pipeline, "shifts_write_state", lambda mod: mod)
    returned = compile_artifact(small_checkpoint, load_target("x86"), tmp_path / "returned", database=None)
    assert not returned.manifest.io.state_in_place and len(returned.manifest.outputs) == 2
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "returned", old)
    (old / "manifest.json").write_text(json.dumps(_as_format_1(json.loads(returned.manifest.to_json()))))
    frame = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    new_model, old_model = StreamingModel(small_artifact), load_model(old)
    assert isinstance(old_model, StreamingModel) and old_model.manifest.format_version == 1
    for _ in range(3):
        np.testing.assert_array_equal(new_model.step(frame).logits, old_model.step(frame).logits)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["inputs"][0].__setitem__("shape", [1, -3, 64, 64]), "positive integer"),
        (lambda d: d["inputs"][0].__setitem__("shape", [1, 3.5, 64, 64]), "positive integer"),
        (lambda d: d["inputs"][1].__setitem__("dtype", "float128"), "dtype"),
        (lambda d: d["io"].__setitem__("kind", "batch"), "io.kind"),
        (lambda d: d["io"]["state"][0].__setitem__("input", "nope"), "unknown tensor"),
        (lambda d: d["io"].__setitem__("state_in_place", "yes"), "true or false"),
        (lambda d: d["io"].__setitem__("state_in_place", False), "unknown tensor"),  # no state output
        (lambda d: d["outputs"].append({"name": "next_shift_state", "shape": [1, 10]}), "is returned"),
        (lambda d: d.__setitem__("format_version", 3), "not supported"),
    ],
)
def test_manifest_reader_refuses_bad_values(tmp_path, small_artifact, mutate, message):
    art = tmp_path / "art"
    shutil.copytree(small_artifact, art)
    data = json.loads((art / "manifest.json").read_text())
    mutate(data)
    (art / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(TsmDeployError, match=message) as info:
        read_manifest(art)
    assert "\n" not in str(info.value)


def test_bundled_runtime_imports_alone(tmp_path, small_artifact):
    """The bundle's runtime package (found by import, copied whole) runs the artifact with only numpy
    and TVM's runtime importable: no torch, onnx, click or the compiler side of tsm_deploy."""
    from tsm_deploy.deploy.bundle import stage_bundle

    root = stage_bundle(small_artifact, tmp_path)
    site = tmp_path / "site"
    site.mkdir()
    import numpy
    import tvm
    import tvm_ffi
    import typing_extensions

    for module in (numpy, tvm, tvm_ffi):
        os.symlink(Path(module.__file__).parent, site / Path(module.__file__).parent.name)
    os.symlink(typing_extensions.__file__, site / "typing_extensions.py")
    for libs in Path(numpy.__file__).parent.parent.glob("numpy.libs"):
        os.symlink(libs, site / libs.name)
    script = (
        "import json, sys\n"
        "from tsm_deploy.runtime import StreamingModel\n"
        "import numpy as np\n"
        "m = StreamingModel(sys.argv[1])\n"
        "r = m.step(np.zeros((120, 160, 3), np.uint8))\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('torch', 'onnx', 'onnxruntime', 'click'))\n"
        "extra = sorted(n for n in sys.modules if n.startswith('tsm_deploy') and not n.startswith('tsm_deploy.runtime') and n != 'tsm_deploy')\n"
        "print(json.dumps({'top1': r.top1, 'bad': bad, 'extra': extra}))\n"
    )
    env = {"PYTHONPATH": f"{root / 'python'}:{site}", "PATH": os.environ.get("PATH", ""), "PYTHONNOUSERSITE": "1"}
    proc = subprocess.run([sys.executable, "-S", "-c", script, str(root / "artifact")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["bad"] == [] and result["extra"] == [], result
    assert isinstance(result["top1"], int)
    assert (root / "python" / "tsm_deploy" / "runtime" / "clip.py").exists()
