"""Peer runtimes on the emulated Raspberry Pi 4: the same model run by ONNX Runtime, ncnn, ExecuTorch
with its XNNPACK delegate, or PyTorch.

A peer runs in the same guest as tsm-deploy's own artifacts (Debian bookworm arm64, python3.11 +
numpy 1.24, qemu-user as a Cortex-A72), so guest instruction counts or parity can be compared side
by side. PyPI's aarch64 wheels are unpacked into a site directory put on the guest's PYTHONPATH
(never into the host's environment); ``guest_peer.py`` streams frames through the peer. ncnn and
ExecuTorch load models converted on the host (converters.py).

ExecuTorch runs without its Python bindings: they link libtorch, and no torch on PyPI both loads
them and runs on a Cortex-A72 (torch 2.9.1, the last CPU-only aarch64 wheel before 2.10, lacks
``c10::TensorImpl::decref_pyobject()`` that ExecuTorch 1.5.1's ``_C`` module needs; 2.10.0's libc10
executes an ARMv8.1 LSE atomic, ``ldaddal`` in its bundled mimalloc's ``_mi_options_init``, at
``import torch``: SIGILL on the ARMv8.0 A72; 2.11 and later are CUDA builds). So
``executorch_runner.cpp``, cross-built here against the C++ headers and libraries in ExecuTorch's
aarch64 wheel (runtime, XNNPACK backend, optimized CPU kernels, thread pool), is loaded by the
guest script through ctypes.

Why the guest gets its own root (``PeerEnv.root``): qemu-user 7.2 does not emulate
``/proc/cpuinfo`` for aarch64, so the guest reads the x86 host's. The cpuinfo library inside
ONNX Runtime >= 1.28 (cpuinfo commit 7607ca5, "Report correct L2 cache size on ARM") then finds
no ARM core (MIDR 0, so no L2 size of its own) while the host's sysfs reports a per-core L2: the
first pass over the cores counts zero L2 caches and allocates none, the second writes L2 entry 0
through the NULL array, and ``import onnxruntime`` dies with SIGSEGV at address 0 inside dlopen's
static initialisers. The root is the Debian rootfs seen through symlinks plus a ``/proc/cpuinfo``
and MIDR_EL1 sysfs files of a Pi 4's Cortex-A72 (r0p3), one entry per host CPU (the guest
sees the host's CPU count through /sys). qemu's ``-L`` prefix serves a file from the root when it
exists there, else from the host, so only those files change.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CheckFailed, TsmDeployError
from ..support.tools import Progress, atomic_cache_entry, report, require_tool, resolve_cache_dir, run_logged
from ..target.arch import GUEST_PYTHON, arch_spec
from .converters import fetch_wheel, io_path, lower_executorch, ncnn_model
from .guest_peer import RUNNER_LIBRARY
from .rootfs import DEFAULT_QEMU_CPU, build_arm64_rootfs, run_under_qemu

__all__ = [
    "DEFAULT_VERSIONS",
    "MARKER_FRAME_BEGIN",
    "MARKER_FRAME_END",
    "PEERS",
    "PeerEnv",
    "PeerParity",
    "PeerRun",
    "compare_with_pytorch",
    "export_peer_model",
    "peer_parity",
    "prepare_peer",
    "read_peer_output",
    "run_peer_under_qemu",
]

log = logging.getLogger(__name__)

GUEST_SCRIPT = Path(__file__).resolve().with_name("guest_peer.py")
# Tags of the marker syscall guest_peer.py issues before and after each frame (its FRAME_BEGIN/END).
MARKER_FRAME_BEGIN, MARKER_FRAME_END = 1, 2
PEERS = ("onnxruntime", "ncnn", "executorch", "torch")
# onnxruntime: the host's pin (requirements.lock), so host and guest run the same version.
# torch: PyPI's 2.13.0 aarch64 wheel is a CUDA build (427 MB plus CUDA 13 wheels); 2.9.1's is
# CPU-only (104 MB), and loads TorchScript traced by the host's torch 2.13.
# ncnn and executorch: the versions of the host-side converters (converters.py) and their runtimes.
DEFAULT_VERSIONS = {"onnxruntime": "1.31.1", "ncnn": "1.0.20261020", "executorch": "1.5.1", "torch": "2.9.1"}
# What the guest takes from ExecuTorch's aarch64 wheel: its C++ runtime, not its Python package.
_EXECUTORCH_PARTS = ("executorch/lib/", "executorch/include/")
_EXECUTORCH_LIBS = ("executorch", "executorch_backend_xnnpack", "executorch_kernels_optimized", "executorch_threadpool")
RUNNER_SOURCE = Path(__file__).resolve().with_name("executorch_runner.cpp")
# What `import torch` needs besides numpy (torch's Requires-Dist for aarch64), pinned so the
# cached site directory is reproducible. ONNX Runtime's own dependencies are only for its tools.
_TORCH_SUPPORT = ("typing-extensions==4.16.0", "sympy==1.14.0", "mpmath==1.3.0", "filelock==4.2.11",
                  "networkx==3.6.1", "jinja2==3.1.6", "markupsafe==3.0.4", "fsspec==2026.9.0")
PYTHON_VERSION = "3.11"
ARCH = "aarch64"
# Raspberry Pi 4: Cortex-A72 r0p3 (implementer 0x41 ARM, part 0xd08); MIDR_EL1 as sysfs shows it.
_PI4_MIDR = 0x410FD083
# Seconds allowed under emulation: torch's import alone takes ~1 min on a loaded 2-core host.
STARTUP_TIMEOUT_S, FRAME_TIMEOUT_S = 300.0, 120.0


@dataclass(frozen=True)
class PeerEnv:
    """A peer runtime ready to run in the emulated guest.

    ``root``: pass as qemu's ``-L`` (Debian rootfs + a Pi 4 /proc/cpuinfo); ``site_dir``: the guest's
    PYTHONPATH; ``script``: guest_peer.py (run it with ``python3.11 -P``).
    """

    name: str
    version: str
    site_dir: Path
    root: Path
    script: Path = GUEST_SCRIPT
    qemu_cpu: str = DEFAULT_QEMU_CPU

    def guest_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """Guest environment: no .pyc writes (they would add instructions to a first run only),
        one thread for every pool the peer might start."""
        env = {"PYTHONPATH": str(self.site_dir), "PYTHONDONTWRITEBYTECODE": "1", "QEMU_CPU": self.qemu_cpu,
               "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        env.update(extra or {})
        return env

    def guest_argv(self, model: Path, frames: Path, out: Path, *, marker_nr: int | None = None,
                   threads: int = 1) -> list[str]:
        """The guest command line (program path as seen inside the guest)."""
        argv = [GUEST_PYTHON, "-P", str(self.script), "--runtime", self.name, "--model", str(model),
                "--frames", str(frames), "--out", str(out), "--threads", str(threads)]
        if self.name in ("torch", "ncnn", "executorch"):
            argv += ["--io", str(io_path(Path(model)))]
        if self.name == "executorch":
            argv += ["--version", self.version]
        if marker_nr is not None:
            argv += ["--marker-nr", str(marker_nr)]
        return argv


@dataclass
class PeerRun:
    """What one guest run produced: per frame the logits and the next-state buffers."""

    runtime: str
    version: str
    logits: list[np.ndarray]
    buffers: list[list[np.ndarray]]
    frame_wall_s: list[float]  # emulated wall time: meaningless as device latency
    total_wall_s: float  # the whole qemu process, Python start-up and imports included
    stderr: str = field(repr=False, default="")


def prepare_peer(name: str, version: str | None = None, cache_dir: Path | None = None,
                 progress: Progress | None = None) -> PeerEnv:
    """Download (cached) the aarch64 cp311 wheels of peer `name` and unpack them for the guest."""
    if name not in PEERS:
        raise TsmDeployError(f"unknown peer runtime {name!r}; known: {', '.join(PEERS)}")
    version = version or DEFAULT_VERSIONS[name]
    if not re.fullmatch(r"[0-9][0-9A-Za-z.+-]*", version):
        raise TsmDeployError(f"bad {name} version {version!r}")
    cache = resolve_cache_dir(cache_dir) / "peers"
    rootfs = build_arm64_rootfs(cache_dir, progress)
    root = _pi4_root(rootfs, cache, progress)
    site = cache / f"{name}-{version}-cp{PYTHON_VERSION.replace('.', '')}-{ARCH}"
    ready = site / "site" / name
    if name == "executorch":  # the runner is built into the site: a new source is a new entry
        site = site.with_name(f"{site.name}-runner{hashlib.sha256(RUNNER_SOURCE.read_bytes()).hexdigest()[:10]}")
        ready = site / "site" / RUNNER_LIBRARY
    if not ready.exists():
        requirements = [f"{name}=={version}", *(_TORCH_SUPPORT if name == "torch" else ())]
        wheels = [_fetch_wheel(req, cache / "wheels", progress) for req in requirements]
        with atomic_cache_entry(site) as tmp:
            for wheel in wheels:
                report(progress, f"unpacking {wheel.name}")
                with zipfile.ZipFile(wheel) as zf:
                    members = [m for m in zf.namelist() if name != "executorch" or m.startswith(_EXECUTORCH_PARTS)]
                    zf.extractall(tmp / "site", members)
            for lib in (tmp / "site").rglob("*.so*"):
                lib.chmod(0o755)  # zipfile drops the mode bits pip would keep
            if name == "executorch":
                _build_executorch_runner(tmp / "site", progress)
            else:
                _precompile(tmp / "site", progress)
    return PeerEnv(name=name, version=version, site_dir=site / "site", root=root)


def _build_executorch_runner(site: Path, progress: Progress | None) -> Path:
    """Cross-build executorch_runner.cpp against the wheel's headers and libraries, into the site."""
    spec = arch_spec(ARCH)
    gxx = require_tool(spec.cross_gxx, spec.cross_gxx_package)
    out = site / RUNNER_LIBRARY
    out.parent.mkdir(parents=True)
    include, lib = site / "executorch" / "include", site / "executorch" / "lib"
    report(progress, "building the ExecuTorch runner (aarch64) against the wheel's C++ runtime")
    # C10_USING_CUSTOM_GENERATED_MACROS: the wheel's c10 headers come without the generated cmake_macros.h
    run_logged([gxx, "-std=c++17", "-O2", "-fPIC", "-shared", "-Wall", "-DC10_USING_CUSTOM_GENERATED_MACROS",
                f"-I{include}", f"-I{include / 'executorch/runtime/core/portable_type/c10'}", "-o", out, RUNNER_SOURCE,
                f"-L{lib}", "-Wl,--no-as-needed", *(f"-l{name}" for name in _EXECUTORCH_LIBS), "-Wl,--as-needed",
                "-Wl,-rpath,$ORIGIN/../executorch/lib"])
    return out


def export_peer_model(peer: PeerEnv, model, dest_dir: Path) -> Path:
    """Write `model` (a stream nn.Module) in the form `peer` loads; returns the model file.

    onnxruntime: tsm-deploy's ONNX export (checked against ONNX Runtime on the host);
    torch: a TorchScript trace plus ``<file>.io.json`` naming inputs (with shapes) and outputs;
    ncnn, executorch: converted on the host and cached (converters.py; the file is in the cache).
    """
    import torch

    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    if peer.name == "onnxruntime":
        from ..frontend.export import export_onnx

        path = dest_dir / "model.onnx"
        export_onnx(model, path)
        return path
    if peer.name == "ncnn":
        return ncnn_model(model)
    if peer.name == "executorch":
        return lower_executorch(model)
    from ..support.atomic import atomic_output_file, atomic_write_text

    model = model.eval()
    shapes = model.input_shapes()
    path = dest_dir / "model.ts"
    # TorchScript on purpose, though torch 2.13 deprecates it: the guest's torch 2.9.1 loads it,
    # while torch.export archives are not readable across those versions.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(model, tuple(torch.zeros(shape) for shape in shapes.values()))
        with atomic_output_file(path) as tmp:
            torch.jit.save(traced, str(tmp))
    io = {"inputs": [[n, list(s), "float32"] for n, s in shapes.items()], "outputs": model.output_names()}
    atomic_write_text(io_path(path), json.dumps(io, indent=1))
    return path


def run_peer_under_qemu(peer: PeerEnv, model_path: Path, frames: np.ndarray,
                        extra_env: Mapping[str, str] | None = None, *, marker_nr: int | None = None,
                        threads: int = 1, timeout: float | None = None) -> PeerRun:
    """Stream prepared frames ``(N, 1, 3, S, S)`` float32 through `peer` on the emulated Cortex-A72.

    `model_path` is what export_peer_model wrote (ONNX for onnxruntime, TorchScript for torch).
    Buffers are fed back inside the guest. Raises CheckFailed if the guest fails or times out.
    """
    model_path = Path(model_path).resolve()
    if not model_path.is_file():
        raise TsmDeployError(f"peer model not found: {model_path}")
    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim != 5 or frames.shape[1] != 1:
        raise TsmDeployError(f"frames must be (N, 1, 3, S, S), got shape {frames.shape}")
    timeout = timeout or STARTUP_TIMEOUT_S + FRAME_TIMEOUT_S * len(frames)
    with tempfile.TemporaryDirectory(prefix="tsm-peer-") as tmp:
        frames_path, out_path = Path(tmp) / "frames.npy", Path(tmp) / "out.npz"
        np.save(frames_path, frames)
        argv = peer.guest_argv(model_path, frames_path, out_path, marker_nr=marker_nr, threads=threads)
        log.info("running %s %s on an emulated %s: %d frames", peer.name, peer.version, peer.qemu_cpu, len(frames))
        start = time.perf_counter()
        try:
            proc = run_under_qemu(peer.root, argv, env=peer.guest_env(extra_env), timeout=timeout, cwd=Path(tmp))
        except subprocess.TimeoutExpired:
            raise CheckFailed(f"{peer.name} under emulation did not finish in {timeout:.0f} s") from None
        total = time.perf_counter() - start
        if proc.returncode != 0 or not out_path.exists():
            tail = (proc.stderr or "").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
            raise CheckFailed(
                f"{peer.name} {peer.version} failed under emulation (exit code {proc.returncode}): {tail[0]}"
            )
        return read_peer_output(out_path, total_wall_s=total, stderr=proc.stderr)


def read_peer_output(out_path: Path, total_wall_s: float = 0.0, stderr: str = "") -> PeerRun:
    """What guest_peer.py wrote: per frame the logits and the fed-back buffers, and its wall times."""
    with np.load(out_path) as out:
        count = int(out["frame_count"])
        n_state = len(out["state_names"])
        return PeerRun(
            runtime=str(out["runtime"]), version=str(out["version"]),
            logits=[out[f"logits_{i}"] for i in range(count)],
            buffers=[[out[f"state_{i}_{j}"] for j in range(n_state)] for i in range(count)],
            frame_wall_s=[float(w) for w in out["wall_s"]], total_wall_s=total_wall_s, stderr=stderr,
        )


@dataclass(frozen=True)
class PeerParity:
    runtime: str
    version: str
    frames: int
    logits_max_abs_error: float
    logits_max_rel_error: float  # the max abs error over the largest |logit| of PyTorch's
    buffers_max_abs_error: float
    top1_agreement: float  # frames whose arg-max matches PyTorch's
    frame_wall_s: list[float]  # emulated

    def summary(self) -> dict[str, float | int]:
        return {"frames": self.frames, "logits_max_abs_error": self.logits_max_abs_error,
                "logits_max_rel_error": self.logits_max_rel_error, "buffers_max_abs_error": self.buffers_max_abs_error,
                "top1_agreement": self.top1_agreement}


def compare_with_pytorch(model, inputs: np.ndarray, run: PeerRun) -> PeerParity:
    """`run` (frames `inputs` streamed through a peer, buffers fed back; or clips, one call each)
    against the same inputs through `model` in PyTorch on the host."""
    import torch

    buffers = model.zero_buffers() if hasattr(model, "zero_buffers") else []
    logit_err = buffer_err = scale = 0.0
    agree = 0
    with torch.no_grad():
        for i, frame in enumerate(inputs):
            out = model(torch.from_numpy(frame), *buffers)
            logits, *buffers = out if isinstance(out, tuple) else (out,)
            want, got = logits.numpy().reshape(-1), run.logits[i].reshape(-1)
            logit_err = max(logit_err, float(np.abs(got - want).max()))
            scale = max(scale, float(np.abs(want).max()))
            agree += int(np.argmax(got) == np.argmax(want))
            for got_b, want_b in zip(run.buffers[i], buffers, strict=True):
                buffer_err = max(buffer_err, float(np.abs(got_b - want_b.numpy()).max()))
    return PeerParity(run.runtime, run.version, len(inputs), logit_err, logit_err / max(scale, 1e-12), buffer_err,
                      agree / len(inputs), run.frame_wall_s)


def peer_parity(peer: PeerEnv, checkpoint, frames: int = 3, seed: int = 0,
                workdir: Path | None = None) -> PeerParity:
    """Stream seeded normalised frames through `peer` in the guest and through PyTorch on the host;
    report the errors of the logits and of the fed-back buffers."""
    model = checkpoint.model().eval()
    shape = model.input_shapes()["frame"]
    inputs = np.random.default_rng(seed).standard_normal((frames, *shape)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="tsm-peer-model-") as tmp:
        path = export_peer_model(peer, model, Path(workdir or tmp))
        run = run_peer_under_qemu(peer, path, inputs)
    return compare_with_pytorch(model, inputs, run)


def _precompile(site: Path, progress: Progress | None) -> None:
    """Write the site's .pyc files with the host's Python 3.11 (the guest's bytecode format).

    The guest runs with PYTHONDONTWRITEBYTECODE (so a first run costs the same as later ones);
    without cached bytecode it would compile every imported module on every run under
    emulation: about a minute for `import torch`, and instructions that are not the model's.
    """
    if sys.version_info[:2] != tuple(int(p) for p in PYTHON_VERSION.split(".")):
        log.warning("host Python is not %s: the guest will compile the peer's modules itself", PYTHON_VERSION)
        return
    report(progress, "compiling the peer's Python modules to bytecode for the guest")
    # Not checked: a few files in wheels are templates that are not valid Python; they are never imported.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(site)],
                   capture_output=True, check=False)


def _fetch_wheel(requirement: str, wheel_dir: Path, progress: Progress | None) -> Path:
    """The cp311 aarch64 (or pure-Python) wheel of `requirement` ("name==version"), downloaded once."""
    return fetch_wheel(requirement, wheel_dir, progress, python_version=PYTHON_VERSION,
                       platforms=arch_spec(ARCH).wheel_platforms)


def host_cpu_ids() -> list[int]:
    """The host's present CPUs (what the guest sees through the host's /sys)."""
    try:
        text = Path("/sys/devices/system/cpu/present").read_text().strip()
    except OSError:
        return list(range(os.cpu_count() or 1))
    ids: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        ids += range(int(lo), int(hi or lo) + 1)
    return ids


def pi4_cpuinfo(cpu_ids: Sequence[int]) -> str:
    """/proc/cpuinfo as a Raspberry Pi 4's 64-bit kernel writes it, for the given CPU numbers."""
    implementer, variant = _PI4_MIDR >> 24, (_PI4_MIDR >> 20) & 0xF
    part, revision = (_PI4_MIDR >> 4) & 0xFFF, _PI4_MIDR & 0xF
    blocks = [
        f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
        f"CPU implementer\t: 0x{implementer:02x}\nCPU architecture: 8\nCPU variant\t: 0x{variant:x}\n"
        f"CPU part\t: 0x{part:03x}\nCPU revision\t: {revision}\n"
        for i in cpu_ids
    ]
    return "\n".join(blocks) + "\nHardware\t: BCM2835\nRevision\t: c03111\nModel\t\t: Raspberry Pi 4 Model B Rev 1.1\n"


def _pi4_root(rootfs: Path, cache: Path, progress: Progress | None) -> Path:
    """The rootfs seen through symlinks, plus a Pi 4's /proc/cpuinfo and MIDR_EL1 files; cached."""
    ids = host_cpu_ids()
    cpuinfo = pi4_cpuinfo(ids)
    key = hashlib.sha256(f"{rootfs}\n{cpuinfo}".encode()).hexdigest()[:10]
    final = cache / f"root-pi4-{key}"
    if (final / "proc" / "cpuinfo").is_file():
        return final
    report(progress, f"making the Pi 4 guest root {final.name} over {rootfs.name}")
    with atomic_cache_entry(final) as tmp:
        for entry in sorted(rootfs.iterdir()):
            if entry.name in ("proc", "sys"):
                continue
            # A symlink in the rootfs (merged /usr, say) is copied as is: it stays relative to the root.
            (tmp / entry.name).symlink_to(os.readlink(entry) if entry.is_symlink() else entry)
        (tmp / "proc").mkdir()
        (tmp / "proc" / "cpuinfo").write_text(cpuinfo)
        for i in ids:
            regs = tmp / "sys" / "devices" / "system" / "cpu" / f"cpu{i}" / "regs" / "identification"
            regs.mkdir(parents=True)
            (regs / "midr_el1").write_text(f"0x{_PI4_MIDR:016x}\n")
    return final

