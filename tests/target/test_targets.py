"""Target files: every committed one loads; a bad one, or an unknown name, is one clear line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tsm_deploy.target import targets as targets_module
from tsm_deploy.cli import main
from tsm_deploy.errors import TsmDeployError
from tsm_deploy.target.targets import DEVICES, available_targets, load_target

COMMITTED = available_targets()
GOOD = {
    "name": "my-board",
    "description": "a board",
    "device": "cpu",
    "arch": "x86_64",
    "tvm_target": {"kind": "llvm"},
}


def _one_error_line(result) -> str:
    """The CLI's whole answer to a bad input: exactly one line, 'error: ...', no traceback."""
    text = result.output.strip()  # click's CliRunner mixes stderr into output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith("error: "), text
    return lines[0]


def test_committed_targets_exist() -> None:
    assert {"x86", "x86-avx2", "x86-avx512", "rasp4", "rasp4-armv7", "cuda", "jetson-nano"} <= set(COMMITTED)


@pytest.mark.parametrize("name", COMMITTED)
def test_every_committed_target_loads(name: str) -> None:
    target = load_target(name)
    assert target.name == name
    assert target.device in DEVICES
    target.tvm()  # TVM accepts it (load_target checked it too)


def test_targets_command_lists_all() -> None:
    result = CliRunner().invoke(main, ["targets"])
    assert result.exit_code == 0, result.output
    for name in COMMITTED:
        assert any(line.startswith(f"{name}  [") for line in result.output.splitlines()), name
    assert "run here" in result.output and "tuning" in result.output


def test_targets_command_json() -> None:
    result = CliRunner().invoke(main, ["targets", "--json", "-"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    by_name = {t["name"]: t for t in data}
    assert set(by_name) == set(COMMITTED)
    assert by_name["x86"]["runs_here"] is True
    assert by_name["jetson-nano"]["cross_compiler"]["compiler"] == "aarch64-linux-gnu-g++"
    assert by_name["jetson-nano"]["runs_here"] is False  # an aarch64 GPU is never this machine
    assert by_name["rasp4"]["emulator"]["program"] == "qemu-aarch64-static"
    for entry in data:
        assert set(entry["tuning_records"]) == {"path", "present", "kernels", "models", "fallbacks"}
        assert isinstance(entry["tuning_records"]["present"], bool)
    assert by_name["x86-avx512"]["tuning_records"]["fallbacks"] == ["x86-avx2"]
    assert by_name["jetson-nano-cpu"]["tuning_records"]["fallbacks"] == ["rasp4"]
    assert by_name["cuda"]["gpu"] is None or by_name["cuda"]["gpu"].startswith("sm_")


def test_unknown_target_library() -> None:
    with pytest.raises(TsmDeployError, match="unknown target 'nope'"):
        load_target("nope")


def test_unknown_target_cli() -> None:
    result = CliRunner().invoke(main, ["targets", "nope"])
    assert result.exit_code == 2
    line = _one_error_line(result)
    assert "unknown target 'nope'" in line and "x86" in line


def test_unknown_target_compile_cli(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["compile", "--target", "nope", "--output", str(tmp_path / "a")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "unknown target 'nope'" in lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"device": "tpu"}, "field 'device' must be one of cpu, cuda"),
        ({"tvm_target": None}, "missing field 'tvm_target'"),
        ({"arch": "riscv64"}, "field 'arch' must be one of"),
        ({"tvm_target": {"kind": "nosuchkind"}}, "TVM rejects tvm_target"),
        ({"tvm_target": {"kind": "llvm", "num-cores": "four"}}, "TVM rejects tvm_target"),
        ({"tvm_target": {"mcpu": "x86-64-v3"}}, "field 'tvm_target' needs a 'kind'"),
        ({"tvm_target": "llvm -mcpu=x86-64-v3"}, "field 'tvm_target' must be a dict"),
        ({"colour": "red"}, "unknown field 'colour'"),
        ({"detect": ["gpu-count"]}, "unknown detector 'gpu-count'"),
        ({"shift_merge": "fused"}, "field 'shift_merge' must be one of copy, inline"),
        ({"shift_merge": True}, "field 'shift_merge' has the wrong type"),
    ],
)
def test_bad_target_file(tmp_path: Path, change: dict, expected: str) -> None:
    data = {**GOOD, **change}
    data = {k: v for k, v in data.items() if v is not None}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(TsmDeployError, match="target file"):
        load_target(str(path))
    result = CliRunner().invoke(main, ["targets", str(path)])
    assert result.exit_code == 2
    line = _one_error_line(result)
    assert expected in line and str(path) in line


def test_target_file_not_json(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"name": "x",')
    result = CliRunner().invoke(main, ["targets", str(path)])
    assert result.exit_code == 2
    assert "invalid JSON" in _one_error_line(result)


def test_good_target_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(GOOD))
    result = CliRunner().invoke(main, ["targets", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("my-board  [cpu, x86_64]")


def test_bad_committed_file_fails_the_listing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A broken file among the targets is an error of the listing too (exit 2), not a skipped line."""
    (tmp_path / "good.json").write_text(json.dumps({**GOOD, "name": "good"}))
    (tmp_path / "worse.json").write_text(json.dumps({**GOOD, "name": "worse", "device": "tpu"}))
    monkeypatch.setattr(targets_module, "TARGETS_DIR", tmp_path)
    result = CliRunner().invoke(main, ["targets"])
    assert result.exit_code == 2
    assert "worse.json" in _one_error_line(result)


def test_detected_x86_uses_the_tuning_records_of_its_instruction_set():
    from tsm_deploy.target.targets import load_target

    flags = set()
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags:
        expected = "x86-avx512"
    elif {"avx2", "fma"} <= flags:
        expected = "x86-avx2"
    else:
        expected = None
    assert load_target("x86").tuning_logs == expected
