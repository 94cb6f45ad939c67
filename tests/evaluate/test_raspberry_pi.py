"""Raspberry Pi 4 without a Pi: cross-compiled artifacts, the deploy bundle, emulated parity (QEMU as a
Cortex-A72), and the errors a user meets on the way. Needs scripts/install_system_deps.sh (make does it)."""

import json
import shutil
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from tsm_deploy.checkpoint import default_checkpoint
from tsm_deploy.cli import main
from tsm_deploy.compiler.artifact import compile_artifact
from tsm_deploy.evaluate.runners.emulated import EmulatedRunner
from tsm_deploy.errors import CheckFailed, TsmDeployError
from tsm_deploy.target.targets import load_target
from tsm_deploy.evaluate.verify import verify_artifact

pytestmark = [pytest.mark.slow, pytest.mark.emulation]

ELF_MACHINE = {"aarch64": 183, "arm": 40, "x86_64": 62}
TARGETS = Path(__file__).resolve().parents[2] / "targets"


def elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF"
    return int.from_bytes(header[18:20], "little")


@pytest.fixture(scope="module")
def default_model():
    return default_checkpoint()


@pytest.fixture(scope="module")
def rasp4_artifact(tmp_path_factory, default_model) -> Path:
    """The full-size default online TSM-MobileNetV2 (224x224), cross-compiled for the Pi 4."""
    out = tmp_path_factory.mktemp("rasp4") / "default-rasp4"
    compile_artifact(default_model, load_target("rasp4"), out, database=None)
    return out


def test_rasp4_module_is_an_aarch64_elf(rasp4_artifact):
    assert elf_machine(rasp4_artifact / "module.so") == ELF_MACHINE["aarch64"]


def test_emulated_pi4_parity_of_default_model(rasp4_artifact, default_model):
    """The issue's bar: >= 4 streamed frames, buffers fed back, logits max abs <= 1e-4, on a Cortex-A72."""
    report = verify_artifact(rasp4_artifact, default_model, frames=4, runner=EmulatedRunner(rasp4_artifact))
    assert report.runner == "qemu cortex-a72"
    assert report.passed, report.table()
    assert report.max_abs_error <= 1e-4 and report.top1_agreement == 1.0


def test_emulated_pi4_parity_of_a_clip_artifact(tmp_path, small_clip_checkpoint):
    """Offline TSM on the Pi: a clip artifact (4 segments at once) verified on an emulated Cortex-A72."""
    out = tmp_path / "clip-rasp4"
    compile_artifact(small_clip_checkpoint, load_target("rasp4"), out, database=None)
    assert elf_machine(out / "module.so") == ELF_MACHINE["aarch64"]
    report = verify_artifact(out, small_clip_checkpoint, frames=2, runner=EmulatedRunner(out))
    assert report.kind == "clip" and report.passed, report.table()
    assert report.runner.startswith("qemu cortex-a72") and report.top1_agreement == 1.0


@pytest.mark.heavy  # 44 s in CI; make test-all runs it
def test_instructions_the_cortex_a72_lacks_are_caught(tmp_path, small_checkpoint, small_checkpoint_file):
    """A build with SVE (which the Pi 4 lacks) runs on QEMU's 'max' CPU but dies as a Cortex-A72.

    (Under 'max' it runs but its logits are wrong: TVM 0.27's SVE code for this model is not right,
    one more reason the target must say exactly what the device has.)"""
    target = json.loads((TARGETS / "rasp4.json").read_text())
    target.update(name="rasp4-sve", tvm_target={**target["tvm_target"], "mattr": ["+neon", "+sve"]})
    target_file = tmp_path / "rasp4-sve.json"
    target_file.write_text(json.dumps(target))
    out = tmp_path / "sve"
    compile_artifact(small_checkpoint, load_target(str(target_file)), out, database=None)
    with pytest.raises(CheckFailed, match="SIGILL on an emulated cortex-a72"):
        verify_artifact(out, small_checkpoint, frames=1, runner=EmulatedRunner(out))
    assert verify_artifact(out, small_checkpoint, frames=1, runner=EmulatedRunner(out, qemu_cpu="max")).frames == 1
    result = CliRunner().invoke(main, ["verify", str(out), "--checkpoint", str(small_checkpoint_file), "--frames", "1", "--emulate"])
    assert result.exit_code == 1 and "SIGILL" in result.stderr


def test_rasp4_armv7_module_is_a_32bit_arm_elf(tmp_path, small_checkpoint):
    out = tmp_path / "armv7"
    compile_artifact(small_checkpoint, load_target("rasp4-armv7"), out, database=None)
    assert elf_machine(out / "module.so") == ELF_MACHINE["arm"]


def test_bundle_holds_what_the_device_needs_and_nothing_else(tmp_path, rasp4_artifact):
    result = CliRunner().invoke(main, ["bundle", str(rasp4_artifact), "--output", str(tmp_path / "b.tar.gz")])
    assert result.exit_code == 0, result.output
    with tarfile.open(tmp_path / "b.tar.gz") as tar:
        names = set(tar.getnames())
    root = "tsm-rasp4"
    for needed in ("artifact/module.so", "artifact/manifest.json", "README.txt", "python/tsm_deploy/runtime/stream.py",
                   "python/tvm/lib/libtvm_runtime.so", "python/tvm_ffi/__init__.py"):
        assert f"{root}/{needed}" in names
    assert not any(part in name for name in names for part in ("/torch/", "/onnx", "libtvm_compiler", "tsm_deploy/compile"))


def test_emulate_refuses_an_artifact_for_another_target(small_artifact, small_checkpoint_file):
    result = CliRunner().invoke(main, ["verify", str(small_artifact), "--checkpoint", str(small_checkpoint_file), "--emulate"])
    assert result.exit_code == 2 and "--emulate runs aarch64 CPU artifacts" in result.stderr
    assert "Traceback" not in result.output


def test_missing_qemu_is_one_clear_line(tmp_path, rasp4_artifact, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no qemu-aarch64-static on it
    with pytest.raises(TsmDeployError, match="qemu-user-static"):
        EmulatedRunner(rasp4_artifact)


def test_missing_cross_compiler_is_one_clear_line(tmp_path, small_checkpoint_file, monkeypatch):
    python_bin = Path(shutil.which("python3") or "/usr/bin/python3").parent
    monkeypatch.setenv("PATH", f"{tmp_path}:{python_bin}")  # no arm-linux-gnueabihf-g++
    result = CliRunner().invoke(main, ["compile", "--checkpoint", str(small_checkpoint_file), "--target", "rasp4-armv7",
                                       "--output", str(tmp_path / "a")])
    assert result.exit_code == 2 and "g++-arm-linux-gnueabihf" in result.stderr
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("command, hint", [("verify", "--emulate"), ("bench", "bench --rpc")])
def test_host_commands_refuse_an_artifact_for_another_machine(rasp4_artifact, command, hint):
    result = CliRunner().invoke(main, [command, str(rasp4_artifact), "--frames", "1"])
    assert result.exit_code == 2 and "is built for rasp4 (aarch64), not this" in result.stderr and hint in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--emulate", "--peers", "onnxruntime,tflite"], "--peers: unknown peer runtime tflite; known: onnxruntime, ncnn"),
    (["--rpc", "127.0.0.1:9", "--peers", "ncnn"], "--peers: only with --emulate"),
])
def test_bench_peers_bad_input_is_one_line(rasp4_artifact, args, message):
    result = CliRunner().invoke(main, ["bench", str(rasp4_artifact), *args])
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


@pytest.mark.heavy
def test_emulated_pi4_parity_of_an_int8_artifact(tmp_path, small_checkpoint):
    """int8 on the Pi: integer kernels cross-compiled for the Cortex-A72 stream like the fake-quantized
    model on the emulated CPU (the int8 rule: state in steps of its grid)."""
    from tsm_deploy.quantize import calibrate_checkpoint

    out = tmp_path / "int8-rasp4"
    compile_artifact(small_checkpoint, load_target("rasp4"), out, database=None,
                     quant=calibrate_checkpoint(small_checkpoint, None, 8))
    report = verify_artifact(out, small_checkpoint, frames=3, runner=EmulatedRunner(out))
    assert report.precision == "int8" and report.passed, report.table()
