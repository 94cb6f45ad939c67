"""Peer runtimes (ONNX Runtime, ncnn, ExecuTorch + XNNPACK, PyTorch) in the emulated Pi 4 guest: they
import on a Cortex-A72, compute what PyTorch computes on the host, and mark each frame with the meter's
syscall. ncnn's and ExecuTorch's models are converted for real on the host (cached by content)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tsm_deploy.emulation.converters import read_io
from tsm_deploy.emulation.peers import (
    DEFAULT_VERSIONS,
    PeerEnv,
    PeerRun,
    compare_with_pytorch,
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


def _assert_streams_like_pytorch(peer: PeerEnv, model, tmp_path, seed: int) -> None:
    """Two frames through `peer` in the guest, state fed back, frame markers counted by QEMU's strace."""
    frames = np.random.default_rng(seed).standard_normal((2, *model.input_shapes()["frame"])).astype(np.float32)
    path = export_peer_model(peer, model, tmp_path)
    run = run_peer_under_qemu(peer, path, frames, {"QEMU_STRACE": "1"}, marker_nr=MARKER_NR)
    assert run.runtime == peer.name and run.version == DEFAULT_VERSIONS[peer.name]
    assert len(run.logits) == 2 and len(run.frame_wall_s) == 2
    for (want_logits, want_buffers), logits, buffers in zip(_reference(model, frames), run.logits, run.buffers):
        assert np.abs(logits.reshape(-1) - want_logits).max() < TOLERANCE
        assert int(np.argmax(logits)) == int(np.argmax(want_logits))
        assert len(buffers) == len(want_buffers) == 10
        for got, want in zip(buffers, want_buffers):
            assert got.shape == want.shape and np.abs(got - want).max() < TOLERANCE
    # begin + end marker around each frame, nothing else uses the number
    assert run.stderr.count(f"Unknown syscall {MARKER_NR}\n") == 2 * len(frames)


@pytest.mark.slow
@pytest.mark.emulation
def test_onnxruntime_streams_like_pytorch_with_frame_markers(ort_peer, small_checkpoint, tmp_path):
    _assert_streams_like_pytorch(ort_peer, small_checkpoint.model().eval(), tmp_path, seed=7)


@pytest.mark.slow
@pytest.mark.emulation
@pytest.mark.requires_tool("qemu-aarch64-static")
def test_ncnn_streams_like_pytorch_with_frame_markers(small_checkpoint, tmp_path):
    """pnnx converts the traced stream model (state in, next state out) to ncnn; one thread, fp32."""
    peer = prepare_peer("ncnn")
    model = small_checkpoint.model().eval()
    _assert_streams_like_pytorch(peer, model, tmp_path, seed=11)
    io = read_io(export_peer_model(peer, model, tmp_path))
    assert [name for name, _, _ in io["inputs"]] == list(model.input_shapes())
    assert io["outputs"] == model.output_names() and io["converter"].startswith("pnnx")


@pytest.mark.slow
@pytest.mark.heavy  # 74 s from a cold cache (two ExecuTorch wheels, the runner's cross-build, the lowering): make test-all
@pytest.mark.emulation
@pytest.mark.requires_tool("qemu-aarch64-static", "aarch64-linux-gnu-g++")
def test_executorch_xnnpack_streams_like_pytorch_with_frame_markers(small_checkpoint, tmp_path):
    """ExecuTorch lowers the exported stream model to XNNPACK on the host; the guest runs the .pte with
    the runner cross-built against the aarch64 wheel's C++ runtime (no torch in the guest)."""
    peer = prepare_peer("executorch")
    model = small_checkpoint.model().eval()
    _assert_streams_like_pytorch(peer, model, tmp_path, seed=12)
    delegation = read_io(export_peer_model(peer, model, tmp_path))["delegation"]
    # every convolution, batch norm, clamp, shift slice and concatenation, the residual adds and the
    # classifier run in XNNPACK; only the global average pool (mean over W, then H) stays outside
    assert delegation["delegated"]["aten.convolution.default"] == 52
    assert delegation["delegated"]["aten.slice_copy.Tensor"] == 20 and delegation["delegated"]["aten.cat.default"] == 10
    assert delegation["not_delegated"] == {"aten.mean.dim": 2}


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


def test_parity_against_pytorch_sees_a_wrong_logit_and_a_wrong_buffer(small_checkpoint):
    """The check bench --emulate applies to every peer's counted frames: errors are measured on the
    logits and on every fed-back buffer, relative to the largest logit, and the arg-max is compared."""
    model = small_checkpoint.model().eval()
    frames = np.random.default_rng(3).standard_normal((2, *model.input_shapes()["frame"])).astype(np.float32)
    reference = _reference(model, frames)

    def copied() -> PeerRun:
        return PeerRun("onnxruntime", "1", [lg.copy() for lg, _ in reference],
                       [[b.copy() for b in bs] for _, bs in reference], [0.0, 0.0], 0.0)

    same = compare_with_pytorch(model, frames, copied())
    assert same.logits_max_abs_error == 0 and same.buffers_max_abs_error == 0 and same.top1_agreement == 1.0
    wrong = copied()
    scale = max(float(np.abs(lg).max()) for lg, _ in reference)
    top = int(np.argmax(reference[1][0]))
    wrong.logits[1][(top + 1) % len(wrong.logits[1])] += 10 * scale  # another class wins frame 1
    wrong.buffers[0][3] += 0.5
    got = compare_with_pytorch(model, frames, wrong)
    assert got.logits_max_abs_error == pytest.approx(10 * scale, rel=1e-5)
    assert got.logits_max_rel_error == pytest.approx(10, rel=1e-5)
    assert got.buffers_max_abs_error == pytest.approx(0.5, rel=1e-5) and got.top1_agreement == 0.5
    assert set(got.summary()) == {"frames", "logits_max_abs_error", "logits_max_rel_error", "buffers_max_abs_error",
                                  "top1_agreement"}


def test_unknown_peer_is_refused():
    with pytest.raises(TsmDeployError, match="unknown peer runtime 'tflite'; known: onnxruntime, ncnn, executorch, torch"):
        prepare_peer("tflite")


def test_bad_frames_are_refused(tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not used")
    peer = PeerEnv("onnxruntime", "1.31.1", tmp_path, tmp_path)
    with pytest.raises(TsmDeployError, match=r"frames must be \(N, 1, 3, S, S\)"):
        run_peer_under_qemu(peer, model, np.zeros((2, 3, 64, 64), np.float32))
    with pytest.raises(TsmDeployError, match="peer model not found"):
        run_peer_under_qemu(peer, tmp_path / "missing.onnx", np.zeros((1, 1, 3, 64, 64), np.float32))
