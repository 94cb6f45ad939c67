"""Where verify, bench and tune run a model: one set of options, validated in one function."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tsm_deploy.cli import main
from tsm_deploy.errors import TsmDeployError
from tsm_deploy.evaluate.place import EMULATED, HOST, RPC, Place, resolve_place
from tsm_deploy.target.targets import load_target

from ..conftest import EMULATION_TOOLS


def _target(name: str) -> dict:
    target = load_target(name)
    return {**target.to_manifest(), "rpc_key": target.rpc_key}


def test_each_target_is_emulated_as_its_own_core():
    assert resolve_place(_target("rasp4"), emulate=True) == Place(EMULATED, qemu_cpu="cortex-a72")
    assert resolve_place(_target("jetson-nano-cpu"), emulate=True) == Place(EMULATED, qemu_cpu="cortex-a57")
    assert resolve_place(_target("rasp4"), emulate=True, qemu_cpu="cortex-a53").qemu_cpu == "cortex-a53"
    assert resolve_place(_target("rasp4")) == Place(HOST)


def test_rpc_places():
    assert resolve_place(_target("rasp4"), rpc="10.0.0.2:9090") == Place(RPC, address="10.0.0.2:9090")
    tracked = resolve_place(_target("rasp4"), rpc_tracker="10.0.0.1:9190")
    assert tracked.tracker and tracked.key == "rasp4" and "tracker" in tracked.describe()
    assert resolve_place(_target("rasp4"), rpc_tracker="h:1", rpc_key="board").key == "board"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"emulate": True, "rpc": "h:1"}, "--emulate and --rpc exclude each other"),
        ({"emulate": True, "rpc_tracker": "h:1"}, "--emulate and --rpc-tracker exclude each other"),
        ({"rpc": "h:1", "rpc_tracker": "h:2"}, "--rpc and --rpc-tracker exclude each other"),
        ({"qemu_cpu": "cortex-a57"}, "--qemu-cpu needs --emulate"),
        ({"rpc_key": "k"}, "--rpc-key needs --rpc-tracker"),
        ({"emulate": True, "qemu_cpu": "pentium"}, "--qemu-cpu must be one of"),
        ({"rpc": "nohost"}, "--rpc must be HOST:PORT"),
        ({"rpc": "h:1", "tracker_only": True}, "tuning measures through an RPC tracker"),
    ],
)
def test_conflicts_are_one_line(options, message):
    with pytest.raises(TsmDeployError, match=message):
        resolve_place(_target("rasp4"), **options)


def test_only_aarch64_cpu_targets_are_emulated():
    for name in ("x86-avx2", "jetson-nano"):
        with pytest.raises(TsmDeployError, match="--emulate runs aarch64 CPU artifacts"):
            resolve_place(_target(name), emulate=True)
    x86 = {**_target("x86-avx2"), "rpc_key": None}
    with pytest.raises(TsmDeployError, match="has no rpc_key: pass --rpc-key"):
        resolve_place(x86, rpc_tracker="h:1")


@pytest.mark.slow
def test_every_command_refuses_emulate_with_rpc(small_artifact, small_checkpoint_file):
    """The same refusal, one line and exit 2, from verify, bench and tune, before any work."""
    both = ["--emulate", "--rpc", "127.0.0.1:9"]
    ckpt = ["--checkpoint", str(small_checkpoint_file)]
    for argv in (["verify", str(small_artifact), *ckpt, *both], ["bench", str(small_artifact), *ckpt, *both],
                 ["tune", "--target", "rasp4", *ckpt, *both]):
        result = CliRunner().invoke(main, argv)
        assert result.exit_code == 2, (argv, result.output)
        assert result.stderr.strip() == "error: --emulate and --rpc exclude each other: the model runs in one place"


@pytest.mark.slow
def test_bench_refuses_options_its_place_ignores(small_artifact, small_checkpoint_file, tmp_path):
    ckpt = ["--checkpoint", str(small_checkpoint_file)]
    result = CliRunner().invoke(main, ["bench", str(small_artifact), *ckpt, "--rpc", "127.0.0.1:9", "--plot",
                                       str(tmp_path / "p.png"), "--threads", "2"])
    assert result.exit_code == 2
    assert "--threads, --plot: not available when the artifact runs on RPC server 127.0.0.1:9" in result.stderr


@pytest.mark.slow
@pytest.mark.heavy  # 84 s in make test on a clean clone (2026-12-04); rasp4's emulated parity tests stay in it
@pytest.mark.emulation
@pytest.mark.requires_tool(*EMULATION_TOOLS)
def test_a_jetson_nano_cpu_artifact_is_verified_on_an_emulated_cortex_a57(tmp_path, small_checkpoint, small_checkpoint_file):
    from tsm_deploy.compiler.artifact import compile_artifact

    artifact = tmp_path / "nano-cpu"
    compile_artifact(small_checkpoint, load_target("jetson-nano-cpu"), artifact, database=None)
    result = CliRunner().invoke(main, ["verify", str(artifact), "--checkpoint", str(small_checkpoint_file), "--emulate",
                                       "--frames", "2", "--json", str(tmp_path / "v.json")])
    assert result.exit_code == 0, result.output
    assert "qemu cortex-a57" in (tmp_path / "v.json").read_text()
