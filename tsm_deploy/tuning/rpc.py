"""Measuring candidates on real devices through a TVM RPC tracker (one board or a farm)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tvm.s_tir import meta_schedule as ms

from ..errors import TsmDeployError
from ..evaluate.runners.rpc import check_reachable, parse_address


@dataclass(frozen=True)
class RpcConfig:
    tracker_host: str
    tracker_port: int
    key: str
    session_timeout: int = 60

    def ms_config(self) -> ms.runner.RPCConfig:
        return ms.runner.RPCConfig(
            tracker_host=self.tracker_host,
            tracker_port=self.tracker_port,
            tracker_key=self.key,
            session_timeout_sec=self.session_timeout,
        )


def parse_tracker(value: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port), with a clear error."""
    return parse_address(value, what="--rpc-tracker")


def rpc_config(place: Any) -> RpcConfig:
    """The tracker and device key of an RPC :class:`~tsm_deploy.evaluate.place.Place` with a tracker."""
    host, port = parse_tracker(place.address)
    return RpcConfig(host, port, place.key)


def check_tracker(rpc: RpcConfig, timeout: float = 5.0) -> int:
    """Fail fast, in one line, if the tracker is unreachable or has no device under ``rpc.key``.

    Returns the number of devices (free + busy) registered under the key.
    """
    where = f"{rpc.tracker_host}:{rpc.tracker_port}"
    check_reachable(rpc.tracker_host, rpc.tracker_port, "RPC tracker")
    try:
        from tvm import rpc as tvm_rpc

        summary = tvm_rpc.connect_tracker(rpc.tracker_host, rpc.tracker_port).summary()
    except Exception as exc:  # a port that answers but does not speak the tracker protocol
        raise TsmDeployError(f"{where} does not answer as a TVM RPC tracker ({type(exc).__name__})") from None
    queue = summary.get("queue_info", {}).get(rpc.key)
    devices = sum(1 for s in summary.get("server_info", []) if str(s.get("key", "")).split(":")[-1] == rpc.key)
    if queue is None and devices == 0:
        known = ", ".join(sorted(summary.get("queue_info", {}))) or "none"
        raise TsmDeployError(f"RPC tracker {where} has no device registered under key '{rpc.key}' (keys: {known})")
    return max(devices, int(queue.get("free", 0)) if queue else 0)
