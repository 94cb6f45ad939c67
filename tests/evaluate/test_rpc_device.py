"""verify/bench on a device through TVM RPC, against a real RPC server started on loopback."""

import pytest
from click.testing import CliRunner

from tsm_deploy.cli import main
from tsm_deploy.errors import TsmDeployError
from tsm_deploy.evaluate.runners.rpc import RemoteArtifact, RpcRunner, parse_address
from tsm_deploy.evaluate.verify import verify_artifact

from ..conftest import tracked_rpc_server

pytestmark = [pytest.mark.rpc]


@pytest.fixture(scope="module")
def rpc_server():
    from tvm.rpc.server import Server

    server = Server(host="127.0.0.1", port=9390, port_end=9490)
    yield f"127.0.0.1:{server.port}"
    server.terminate()


def test_verify_over_rpc(rpc_server, small_artifact, small_checkpoint):
    report = verify_artifact(small_artifact, small_checkpoint, frames=3, runner=RpcRunner(small_artifact, rpc_server))
    assert report.passed, report.table()
    assert report.runner == f"rpc {rpc_server}"


def test_verify_a_clip_artifact_over_rpc(rpc_server, tmp_path, small_clip_checkpoint):
    """Offline TSM: whole clips go to the device, logits come back; same report as on the host."""
    from tsm_deploy.compiler.artifact import compile_artifact
    from tsm_deploy.target.targets import load_target

    out = tmp_path / "clip-x86"
    compile_artifact(small_clip_checkpoint, load_target("x86"), out, database=None)
    report = verify_artifact(out, small_clip_checkpoint, frames=2, runner=RpcRunner(out, rpc_server))
    assert report.kind == "clip" and report.passed, report.table()
    assert report.runner == f"rpc {rpc_server}" and report.top1_agreement == 1.0


def test_latency_over_rpc(rpc_server, small_artifact):
    with RemoteArtifact(small_artifact, rpc_server) as remote:
        times = remote.latencies_ms(frames=5, warmup=1)
    assert len(times) == 5 and all(t > 0 for t in times)


def test_rpc_server_that_does_not_answer(small_artifact, small_checkpoint_file):
    result = CliRunner().invoke(
        main, ["verify", str(small_artifact), "--checkpoint", str(small_checkpoint_file), "--rpc", "127.0.0.1:1"]
    )
    assert result.exit_code == 2 and "RPC server at 127.0.0.1:1 does not answer" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("address", ["pi", "pi:", ":9090", "pi:http", "pi:70000"])
def test_bad_rpc_address(address):
    with pytest.raises(TsmDeployError, match="HOST:PORT"):
        parse_address(address)


def test_bench_over_rpc(rpc_server, small_artifact, tmp_path):
    import json

    out = tmp_path / "bench.json"
    result = CliRunner().invoke(
        main, ["bench", str(small_artifact), "--rpc", rpc_server, "--frames", "5", "--warmup", "1", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["tvm"]["frames"] == 5 and data["tvm"]["median_ms"] > 0 and data["device"] == f"rpc {rpc_server}"


def test_verify_without_checkpoint_rebuilds_the_default_model_at_the_compiled_configuration(small_artifact):
    """No --checkpoint: the reference is the default model at the artifact's configuration (10 classes,
    width 0.5, 64x64), not the 27-class full-width one, so the comparison runs (exit 1: the small
    artifact was compiled from other seeded weights) instead of refusing the shapes (exit 2)."""
    result = CliRunner().invoke(main, ["verify", str(small_artifact), "--frames", "2"])
    assert result.exit_code == 1 and "FAIL" in result.stdout, result.output


def test_verify_on_a_device_the_tracker_hands_out(small_artifact, small_checkpoint_file):
    """--rpc-tracker/--rpc-key on verify: the session is requested from a tracker by key."""
    with tracked_rpc_server("board", ports=9890) as port:
        result = CliRunner().invoke(main, ["verify", str(small_artifact), "--checkpoint", str(small_checkpoint_file),
                                           "--frames", "2", "--rpc-tracker", f"127.0.0.1:{port}", "--rpc-key", "board"])
    assert result.exit_code == 0, result.output
    assert f"rpc 127.0.0.1:{port} key board" in result.output
