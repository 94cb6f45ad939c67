"""Where verify, bench and tune run a model: this host, an emulated ARM CPU, or a device over TVM RPC.

The three commands take the same options (``--emulate [--qemu-cpu CPU]``, ``--rpc HOST:PORT``,
``--rpc-tracker HOST:PORT [--rpc-key KEY]``) and :func:`resolve_place` validates them once, against
the target the model is compiled for, so a conflict or a place the target cannot run in is one line
before any work starts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import TsmDeployError
from ..target.arch import QEMU_CORTEX_CPUS, emulated_cpu, require_emulatable
from .runners.rpc import parse_address

HOST, EMULATED, RPC = "host", "emulated", "rpc"


@dataclass(frozen=True)
class Place:
    kind: str  # HOST | EMULATED | RPC
    qemu_cpu: str | None = None  # EMULATED: the core QEMU emulates
    address: str | None = None  # RPC: HOST:PORT of a device's RPC server, or of a tracker when ``key`` is set
    key: str | None = None  # RPC through a tracker: the device key requested from it

    @property
    def tracker(self) -> bool:
        return self.kind == RPC and self.key is not None

    def describe(self) -> str:
        if self.kind == EMULATED:
            return f"an emulated {self.qemu_cpu}"
        if self.kind == RPC:
            return f"RPC tracker {self.address} (key {self.key})" if self.tracker else f"RPC server {self.address}"
        return "this host"


def resolve_place(
    target: Mapping[str, Any],
    *,
    emulate: bool = False,
    qemu_cpu: str | None = None,
    rpc: str | None = None,
    rpc_tracker: str | None = None,
    rpc_key: str | None = None,
    tracker_only: bool = False,
) -> Place:
    """The place the options name, for a model compiled for ``target`` (a manifest's target section or
    ``DeployTarget.to_manifest()``). ``tracker_only``: the caller measures through a tracker only (tune:
    MetaSchedule asks the tracker for devices), so a bare ``--rpc`` server is refused."""
    given = [name for name, on in (("--emulate", emulate), ("--rpc", rpc), ("--rpc-tracker", rpc_tracker)) if on]
    if len(given) > 1:
        raise TsmDeployError(f"{' and '.join(given)} exclude each other: the model runs in one place")
    if qemu_cpu is not None and not emulate:
        raise TsmDeployError("--qemu-cpu needs --emulate")
    if rpc_key is not None and rpc_tracker is None:
        raise TsmDeployError("--rpc-key needs --rpc-tracker HOST:PORT")
    if emulate:
        require_emulatable(target, "--emulate")
        if qemu_cpu is not None and qemu_cpu not in QEMU_CORTEX_CPUS + ("max",):
            raise TsmDeployError(f"--qemu-cpu must be one of {', '.join(QEMU_CORTEX_CPUS + ('max',))}, got {qemu_cpu!r}")
        return Place(EMULATED, qemu_cpu=qemu_cpu or emulated_cpu(target))
    if rpc is not None:
        if tracker_only:
            raise TsmDeployError("tuning measures through an RPC tracker, which hands out devices: "
                                 "use --rpc-tracker HOST:PORT [--rpc-key KEY] instead of --rpc")
        parse_address(rpc, "--rpc")
        return Place(RPC, address=rpc)
    if rpc_tracker is not None:
        parse_address(rpc_tracker, "--rpc-tracker")
        key = rpc_key or target.get("rpc_key")
        if not key:
            raise TsmDeployError(f"target {target.get('name')} has no rpc_key: pass --rpc-key")
        return Place(RPC, address=rpc_tracker, key=key)
    return Place(HOST)
