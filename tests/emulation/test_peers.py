"""Peer runtimes (ONNX Runtime, PyTorch) in the emulated Pi 4 guest: they import on a Cortex-A72,
compute what PyTorch computes on the host, and mark each frame with the meter's syscall."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tsm_deploy.emulation.peers import (
    DEFAULT_VERSIONS,
    PeerEnv,
    export_peer_model,
    peer_parity,
    prepare_peer,
    run_peer_under_qemu,
)
from tsm_deploy.emulation.rootfs import run_under_qemu
from tsm_deploy.errors import TsmDeployError

TOLERANCE = 1e-4
HWCAP_SVE = 1 << 22  # arm64 AT_HWCAP bit: set under QEMU's "max" CPU, never on a Cortex-A72
MARKER_NR = 4321  # not a Linux syscall: qemu-user answers -ENOSYS and its strace names the number

# Runs in the guest: the peer's import, what the guest's /proc/cpuinfo says, and the CPU's HWCAP.
PROBE = """
import ctypes, sys
name = sys.argv[1]
module = __import__(name)
libc = ctypes.CDLL(None)
libc.getauxval.restype = ctypes.c_ulong
parts = sorted({l.split(":")[1].strip() for l in open("/proc/cpuinfo") if l.startswith("CPU part")})
print(module.__version__, ",".join(parts), libc.getauxval(16))
"""


@pytest.fixture(scope="module")
def ort_peer() -> PeerEnv:
    return prepare_peer("onnxruntime")


def _probe(peer: PeerEnv) -> tuple[str, str, int]:
    proc = run_under_qemu(peer.root, ["/usr/bin/python3.11", "-c", PROBE, peer.name],
                          env=peer.guest_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    version, parts, hwcap = proc.stdout.split()
    return version, parts, int(hwcap)


def _reference(model, frames: np.ndarray) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    buffers, out = model.zero_buffers(), []
    with torch.no_grad():
        for frame in frames:
            logits, *buffers = model(torch.from_numpy(frame), *buffers)
            out.append((logits.numpy().reshape(-1), [b.numpy() for b in buffers]))
    return out


@pytest.mark.slow
@pytest.mark.emulation
def test_onnxruntime_imports_on_emulated_cortex_a72(ort_peer):
    version, parts, hwcap = _probe(ort_peer)
    assert version == DEFAULT_VERSIONS["onnxruntime"]
    assert parts == "0xd08"  # the guest sees the Pi 4's cores, not the x86 host's /proc/cpuinfo
    assert ort_peer.qemu_cpu == "cortex-a72" and not hwcap & HWCAP_SVE


@pytest.mark.slow
@pytest.mark.emulation
def test_onnxruntime_streams_like_pytorch_with_frame_markers(ort_peer, small_checkpoint, tmp_path):
    model = small_checkpoint.model().eval()
    frames = np.random.default_rng(7).standard_normal((2, *model.input_shapes()["frame"])).astype(np.float32)
    path = export_peer_model(ort_peer, model, tmp_path)
    run = run_peer_under_qemu(ort_peer, path, frames, {"QEMU_STRACE": "1"}, marker_nr=MARKER_NR)

    assert run.runtime == "onnxruntime" and run.version == DEFAULT_VERSIONS["onnxruntime"]
    assert len(run.logits) == 2 and len(run.frame_wall_s) == 2
    for (want_logits, want_buffers), logits, buffers in zip(_reference(model, frames), run.logits, run.buffers):
        assert np.abs(logits.reshape(-1) - want_logits).max() < TOLERANCE
        assert len(buffers) == len(want_buffers) == 10
        for got, want in zip(buffers, want_buffers):
            assert got.shape == want.shape and np.abs(got - want).max() < TOLERANCE
    # begin + end marker around each frame, nothing else uses the number
    assert run.stderr.count(f"Unknown syscall {MARKER_NR}\n") == 2 * len(frames)


@pytest.mark.slow
@pytest.mark.heavy  # a 104 MB wheel, and ~90 s of emulated import
@pytest.mark.emulation
def test_torch_peer_matches_host_pytorch(small_checkpoint):
    peer = prepare_peer("torch")
    result = peer_parity(peer, small_checkpoint, frames=2, seed=5)
    assert result.version.startswith(DEFAULT_VERSIONS["torch"])
    assert result.frames == 2 and len(result.frame_wall_s) == 2
    assert result.logits_max_abs_error < TOLERANCE
    assert result.buffers_max_abs_error < TOLERANCE


def test_unknown_peer_is_refused():
    with pytest.raises(TsmDeployError, match="unknown peer runtime 'tflite'"):
        prepare_peer("tflite")


def test_bad_frames_are_refused(tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not used")
    peer = PeerEnv("onnxruntime", "1.31.1", tmp_path, tmp_path)
    with pytest.raises(TsmDeployError, match=r"frames must be \(N, 1, 3, S, S\)"):
        run_peer_under_qemu(peer, model, np.zeros((2, 3, 64, 64), np.float32))
    with pytest.raises(TsmDeployError, match="peer model not found"):
        run_peer_under_qemu(peer, tmp_path / "missing.onnx", np.zeros((1, 1, 3, 64, 64), np.float32))
