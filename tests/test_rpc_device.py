"""verify/bench on a device through TVM RPC, against a real RPC server started on loopback."""

import pytest
from click.testing import CliRunner

from tsm_deploy.cli import main
from tsm_deploy.errors import TsmDeployError
from tsm_deploy.remote import RemoteArtifact, RpcRunner, parse_address
from tsm_deploy.verify import verify_artifact

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


def test_latency_over_rpc(rpc_server, small_artifact):
    times = RemoteArtifact(small_artifact, rpc_server).latencies_ms(frames=5, warmup=1)
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
