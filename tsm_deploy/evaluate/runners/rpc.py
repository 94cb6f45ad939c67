"""Run an artifact on a real device through a TVM RPC server (``python -m tvm.exec.rpc_server`` on the Pi).

The module is uploaded, loaded remotely, and the Relax VM is driven over RPC with
``set_input`` / ``invoke_stateful`` / ``get_outputs``; the shift buffers stay on the device between
steps (the outputs' remote handles are fed back as the next inputs).
"""

from __future__ import annotations

import gc
import logging
import socket
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import TsmDeployError, one_line
from ...runtime.manifest import Manifest, StreamIO, read_manifest
from ...runtime.stream import buffers_nchw
from . import StepOutput

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
SESSION_TIMEOUT_S = 600


def parse_address(address: str, what: str = "RPC address") -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port), with a clear error."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise TsmDeployError(f"{what} must be HOST:PORT, got {address!r}")
    return host, int(port)


def check_reachable(host: str, port: int, what: str) -> None:
    """A plain TCP connect first: TVM's own connect retries for a long time and then raises a traceback."""
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise TsmDeployError(f"{what} at {host}:{port} does not answer ({reason})") from None


def connect(address: str, session_timeout: int = SESSION_TIMEOUT_S, key: str | None = None) -> Any:
    """A session with the RPC server at ``address``; with ``key``, ``address`` is a tracker and the
    session is with a device it hands out under that key."""
    from tvm import rpc

    host, port = parse_address(address)
    what = "RPC tracker" if key else "RPC server"
    check_reachable(host, port, what)
    try:
        if key:
            return rpc.connect_tracker(host, port).request(key, session_timeout=session_timeout)
        return rpc.connect(host, port, session_timeout=session_timeout)
    except Exception as exc:  # the server answered TCP but not the RPC handshake, or no device
        first = one_line(exc)
        raise TsmDeployError(f"{what} at {address} refused the session ({first})") from None


class RemoteArtifact:
    """An artifact uploaded to, and loaded on, an RPC server."""

    def __init__(self, artifact_dir: Path, address: str, key: str | None = None) -> None:
        import tvm

        self.manifest: Manifest = read_manifest(artifact_dir)
        self.session = connect(address, key=key)
        self.address = address
        module_path = Path(artifact_dir) / self.manifest.module_file
        remote_name = f"tsm_{self.manifest.module_sha256[:16]}.so"
        log.info("uploading %s to %s", module_path, address)
        self.session.upload(str(module_path), target=remote_name)
        try:
            module = self.session.load_module(remote_name)
        except Exception as exc:
            first = one_line(exc)
            raise TsmDeployError(
                f"the device at {address} cannot load a module built for {self.manifest.target.name} "
                f"({self.manifest.target.arch}): {first}"
            ) from None
        self.device = self.session.cuda(0) if self.manifest.target.device == "cuda" else self.session.cpu(0)
        self.vm = tvm.runtime.vm.VirtualMachine(module, self.device)

    def close(self) -> None:
        """End the RPC session. TVM has no close(): a session ends when the last reference to it (and
        to its module, device and VM) is gone, and a plain RPC server serves one session at a time."""
        self.vm = self.device = self.session = None
        gc.collect()

    def __enter__(self) -> "RemoteArtifact":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def zero_buffers(self) -> list[Any]:
        import tvm

        return [tvm.runtime.tensor(np.zeros(s.shape, s.dtype), device=self.device) for s in self.manifest.buffers]

    def buffers_nchw(self, buffers: list[Any]) -> list[np.ndarray]:
        """The remote state tensors as numpy arrays, NCHW like the PyTorch model's."""
        if not isinstance(self.manifest.io, StreamIO):
            return [b.numpy() for b in buffers]
        return buffers_nchw(self.manifest.io, [b.numpy() for b in buffers])

    def step(self, x: np.ndarray, buffers: list[Any]) -> tuple[Any, list[Any]]:
        """One call: ``x`` is the frame (stream) or clip; ``buffers`` the state inputs in ``io.state``
        order. -> (logits, next state) as remote tensors, which stay on the device."""
        import tvm

        m = self.manifest
        by_name = dict(zip((i for _, i in m.state), buffers))
        by_name[m.frame.name] = tvm.runtime.tensor(x, device=self.device)
        args = [by_name[spec.name] for spec in m.inputs]
        if isinstance(m.io, StreamIO) and m.io.state_in_place:
            # the call writes the next state into its state inputs: call main on the remote tensors
            # themselves (set_input would hand the VM copies) and keep them; main returns the logits only
            return self.vm["main"](*args), [by_name[i] for _, i in m.state]
        self.vm.set_input("main", *args)
        self.vm.invoke_stateful("main")
        outputs = self.vm.get_outputs("main")
        outputs = [outputs] if hasattr(outputs, "numpy") else list(outputs)
        return outputs[m.output_index(m.io.logits)], [outputs[m.output_index(o)] for o, _ in m.state]

    def latencies_ms(self, frames: int, warmup: int = 5) -> list[float]:
        """Per-frame latency measured on the device by TVM's time evaluator (one run per sample)."""
        import tvm

        m = self.manifest
        by_name = dict(zip((i for _, i in m.state), self.zero_buffers()))
        by_name[m.frame.name] = tvm.runtime.tensor(np.zeros(m.frame.shape, dtype=m.frame.dtype), device=self.device)
        self.vm.set_input("main", *(by_name[spec.name] for spec in m.inputs))
        timer = self.vm.time_evaluator("invoke_stateful", self.device, number=1, repeat=frames, min_repeat_ms=0)
        for _ in range(warmup):
            self.vm.invoke_stateful("main")
        return [t * 1000.0 for t in timer("main").results]


class RpcRunner:
    """The artifact on a real device (a :class:`~tsm_deploy.evaluate.runners.Runner`): same inputs, same
    report as on the host."""

    def __init__(self, artifact_dir: Path, address: str, key: str | None = None) -> None:
        self.name = f"rpc {address}" + (f" key {key}" if key else "")
        self.remote = RemoteArtifact(artifact_dir, address, key)

    def run(self, frames: np.ndarray) -> list[StepOutput]:
        with self.remote:  # one run per runner: the session is released for the next client
            buffers = self.remote.zero_buffers()
            logits, results = None, []
            for i, frame in enumerate(frames):
                logits, buffers = self.remote.step(np.ascontiguousarray(frame), buffers)
                results.append(StepOutput(logits.numpy().reshape(-1), self.remote.buffers_nchw(buffers)))
                log.info("rpc frame %d/%d", i + 1, len(frames))
            del logits, buffers  # remote tensors hold the session too
        return results
