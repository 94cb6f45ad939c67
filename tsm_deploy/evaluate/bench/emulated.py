"""``bench --emulate``: exact instruction counts per frame on an emulated Cortex-A72, side by side.

The artifact (through the thin runtime, as on a Pi) and the peer runtimes a Pi user would pick
(ONNX Runtime for aarch64 on the ONNX export; ncnn on pnnx's conversion; ExecuTorch with its XNNPACK
delegate) stream the same prepared frames in the same emulated CPU, one guest thread each, fp32,
with marker system calls around every frame; the QEMU plugin counts the guest instructions between
markers. A peer that cannot run, or computes something else than PyTorch, is left out of the counts
with its reason in the report. The figures are **emulated instruction counts** (QEMU TCG, Cortex-A72
ISA): exact and repeatable, blind to caches, pipelines and the Pi's 4 cores. Never a latency.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ...checkpoint import LoadedCheckpoint
from ...errors import CheckFailed, TsmDeployError
from ...runtime.manifest import read_manifest
from ...support.atomic import atomic_write_text
from ...target.arch import emulated_cpu, require_emulatable
from ..inputs import seeded_inputs

log = logging.getLogger(__name__)

# Peers that count clip artifacts too (ncnn's and ExecuTorch's converters take the stream form)
CLIP_PEERS = ("onnxruntime", "torch")
DEFAULT_EMULATED_FRAMES = 3  # each frame is an exact count: the first is not steady, two more agree

DEFAULT_PEERS = ("onnxruntime", "ncnn", "executorch")
# A peer's logits against PyTorch's on the counted frames: fp32 runtimes differ by summation order
# (~1e-6 relative on these models); more means it runs another model, and its count says nothing.
PEER_PARITY_RTOL = 1e-3
PEER_LABELS = {"onnxruntime": "ONNX Runtime", "ncnn": "ncnn", "executorch": "ExecuTorch + XNNPACK", "torch": "PyTorch"}


@dataclass
class EmulatedCount:
    runner: str
    per_frame: list[int]  # instructions of each frame
    per_function: dict[str, int] | None = None

    @property
    def steady(self) -> int:
        """Median over the frames after the first (which pays lazy binding and first allocations)."""
        rest = sorted(self.per_frame[1:] or self.per_frame)
        return rest[len(rest) // 2]


@dataclass
class EmulatedBenchReport:
    artifact: str
    target: str
    model: dict[str, Any]
    macs: int | None  # multiply-accumulates of one frame of the model
    counts: dict[str, EmulatedCount]
    qemu_cpu: str
    notes: list[str] = field(default_factory=list)
    peers: dict[str, dict[str, Any]] = field(default_factory=dict)  # per peer: version, ran, reason, model
    step: str = "frame"  # what one count is: a stream artifact's frame, a clip artifact's clip

    def strongest_peer(self) -> str | None:
        """The peer that ran with the fewest instructions per frame (the network with its shifts)."""
        ran = [name for name in self.peers if name in self.counts]
        return min(ran, key=lambda name: self.counts[name].steady) if ran else None

    def _ratio(self, name: str, base: str | None) -> float | None:
        if name not in self.counts or base not in self.counts:
            return None
        return self.counts[name].steady / self.counts[base].steady

    def shift_overhead(self) -> dict[str, float]:
        """Per runtime: instructions with the shifts / without them - 1 (same target and records)."""
        out = {}
        for name in self.counts:
            ratio = self._ratio(name, f"{name}_noshift")
            if not name.endswith(("_noshift", "_untuned")) and ratio is not None:
                out[name] = ratio - 1.0
        return out

    def to_dict(self) -> dict[str, Any]:
        from ...emulation.meter import INSTRUCTIONS_LABEL

        base = self.counts["tvm"].steady
        strongest = self.strongest_peer()
        return {
            "label": INSTRUCTIONS_LABEL,
            "unit": f"guest instructions per {self.step} (steady state: median after the first {self.step})",
            "step": self.step,
            "artifact": self.artifact,
            "target": self.target,
            "qemu_cpu": self.qemu_cpu,
            "model": self.model,
            "macs_per_frame": self.macs,
            "runners": {
                name: {
                    "instructions_per_frame": c.steady,
                    "per_frame": c.per_frame,
                    "vs_tvm": c.steady / base,
                    "instructions_per_mac": (c.steady / self.macs) if self.macs else None,
                    "per_function": c.per_function,
                }
                for name, c in self.counts.items()
            },
            "tuned_vs_untuned": self._ratio("tvm", "tvm_untuned"),
            "shift_overhead": self.shift_overhead(),
            "peers": self.peers,
            "strongest_peer": strongest,
            "tvm_vs_strongest_peer": self._ratio("tvm", strongest),
            "notes": self.notes,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def table(self) -> str:
        from ...emulation.meter import INSTRUCTIONS_LABEL

        lines = [f"{'runner':<22} {'M instr/' + self.step:>14} {'vs tvm':>8} {'instr/MAC':>10}"]
        base = self.counts["tvm"].steady
        for name, c in self.counts.items():
            per_mac = f"{c.steady / self.macs:.3f}" if self.macs else "n/a"
            lines.append(f"{name:<22} {c.steady / 1e6:>14.2f} {c.steady / base:>7.2f}x {per_mac:>10}")
        for name, overhead in self.shift_overhead().items():
            lines.append(f"shift overhead {name}: {overhead:+.1%} instructions (vs the same network without shifts)")
        if self._ratio("tvm", "tvm_untuned") is not None:
            lines.append(f"tuned / untuned module: {self._ratio('tvm', 'tvm_untuned'):.3f}")
        strongest = self.strongest_peer()
        if strongest:
            lines.append(f"TVM / the strongest peer that ran ({strongest}): {self._ratio('tvm', strongest):.3f}")
        for name, info in self.peers.items():
            if not info["ran"]:
                lines.append(f"{name} did not run: {info['reason']}")
            elif "parity_vs_pytorch" in info:
                p = info["parity_vs_pytorch"]
                lines.append(f"{name} vs PyTorch on these frames: logits max abs {p['logits_max_abs_error']:.2e} "
                             f"(rel {p['logits_max_rel_error']:.2e}), buffers {p['buffers_max_abs_error']:.2e}, "
                             f"top-1 {p['top1_agreement']:.0%}")
        lines.append(f"{INSTRUCTIONS_LABEL}, 1 guest thread, {self.target} ({self.qemu_cpu}): counts, not latency")
        return "\n".join(lines)

    def plot(self, path: Path) -> None:
        raise TsmDeployError("--plot is not available with --emulate (the JSON holds the counts)")


def model_macs(checkpoint: LoadedCheckpoint) -> int:
    """Multiply-accumulates of one step of the model (convolutions and linear layers), by hooks."""
    import torch

    model = checkpoint.model()
    total = 0

    def conv_hook(module: Any, inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        kernel = module.weight.shape[1] * module.weight.shape[2] * module.weight.shape[3]  # (Cin/groups) kh kw
        total += int(output.numel() * kernel)

    def linear_hook(module: Any, inputs: Any, output: torch.Tensor) -> None:
        nonlocal total
        total += int(output.numel() * module.in_features)

    hooks = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    hooks += [m.register_forward_hook(linear_hook) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        shapes = model.input_shapes()
        model(*(torch.zeros(s) for s in shapes.values()))
    for h in hooks:
        h.remove()
    return total


def _peer_counts(peer_name: str, checkpoint: LoadedCheckpoint, frames: np.ndarray, qemu_cpu: str,
                 progress: Callable[[str], None], step: str = "frame") -> tuple[EmulatedCount, dict[str, Any]]:
    """The peer's count per frame and what it ran (version, the converted model's description)."""
    from ...emulation.converters import io_path, read_io
    from ...emulation.meter import MARKER_SYSCALL, run_metered
    from ...emulation.peers import compare_with_pytorch, export_peer_model, prepare_peer, read_peer_output

    peer = replace(prepare_peer(peer_name, progress=progress), qemu_cpu=qemu_cpu)
    model = checkpoint.model().eval()
    with tempfile.TemporaryDirectory(prefix="tsm-emu-peer-") as tmp:
        model_path = export_peer_model(peer, model, Path(tmp))
        io = read_io(model_path) if io_path(model_path).is_file() else {}
        model_info = {k: io[k] for k in ("converter", "precision", "delegation") if k in io}
        np.save(Path(tmp) / "frames.npy", frames)
        argv = peer.guest_argv(model_path, Path(tmp) / "frames.npy", Path(tmp) / "out.npz", marker_nr=MARKER_SYSCALL)
        progress(f"counting {peer_name} {peer.version} on the emulated CPU ({len(frames)} {step}s)")
        run = run_metered(peer.root, argv, env=peer.guest_env(), timeout=1800)
        if run.returncode != 0 or not (Path(tmp) / "out.npz").is_file():
            last = (run.stderr or "").strip().splitlines()[-1:] or [f"exit code {run.returncode}"]
            raise CheckFailed(f"{peer_name} {peer.version} failed on the emulated CPU (exit code {run.returncode}): "
                              f"{last[0]}")
        parity = compare_with_pytorch(model, frames, read_peer_output(Path(tmp) / "out.npz"))
    # markers: tag 1 before a frame, tag 2 after it; the delta at tag 2 is the frame's count
    per_frame = [m.delta for m in run.marks if m.tag == "2"]
    if len(per_frame) != len(frames):
        raise CheckFailed(f"{peer_name}: {len(per_frame)} frame markers for {len(frames)} frames")
    if not parity.logits_max_rel_error <= PEER_PARITY_RTOL:  # a peer that computes something else is no peer
        raise CheckFailed(f"{peer_name} {peer.version} does not compute what PyTorch computes: logits max rel "
                          f"error {parity.logits_max_rel_error:.2e} > {PEER_PARITY_RTOL:.0e}")
    return EmulatedCount(f"{peer_name} {peer.version}", per_frame), \
        {"version": peer.version, **model_info, "parity_vs_pytorch": parity.summary()}


def _baseline_artifacts(artifact_dir: Path, checkpoint: LoadedCheckpoint, noshift: LoadedCheckpoint, out: Path,
                        progress: Callable[[str], None]) -> dict[str, Path]:
    """The same model compiled for the same target without records (``tvm_untuned``) and, with the
    artifact's records, without its shifts (``tvm_noshift``)."""
    from ...compiler.artifact import compile_artifact
    from ...target.targets import load_target
    from . import _target_from_manifest

    manifest = read_manifest(artifact_dir)
    target = _target_from_manifest(manifest)
    try:  # the manifest keeps the TVM target; the cross compiler is the named target's
        target = replace(target, cross_compiler=load_target(target.name).cross_compiler)
    except TsmDeployError:
        pass
    database = (manifest.tuning or {}).get("database")
    database = Path(database) if database and Path(database).is_dir() else None
    progress("compiling the baselines: untuned, and without shifts" + (" (tuned)" if database else " (no records)"))
    compile_artifact(checkpoint, target, out / "untuned", database=None)
    compile_artifact(noshift, target, out / "noshift", database=database)
    return {"tvm_untuned": out / "untuned", "tvm_noshift": out / "noshift"}


def benchmark_emulated(
    artifact_dir: Path,
    checkpoint: LoadedCheckpoint,
    frames: int = DEFAULT_EMULATED_FRAMES,
    peers: tuple[str, ...] = DEFAULT_PEERS,
    per_function: bool = True,
    baselines: bool = True,
    progress: Callable[[str], None] = lambda message: None,
    qemu_cpu: str | None = None,
) -> EmulatedBenchReport:
    """Instructions per frame of an aarch64 stream artifact (per clip of a clip artifact) and of
    ``peers`` on the emulated CPU; with ``baselines``, also of the untuned module and of the network
    without shifts (TVM and peers), for the tuning gain and the shift overhead. ``qemu_cpu``: the core
    emulated (default: the target's)."""
    from ...emulation.meter import count_artifact
    from ...emulation.peers import DEFAULT_VERSIONS

    if frames < 2:
        raise TsmDeployError(f"--frames must be >= 2 with --emulate (the first frame is not steady), got {frames}")
    artifact_dir = Path(artifact_dir)
    manifest = read_manifest(artifact_dir)
    require_emulatable(manifest.target, "--emulate")
    qemu_cpu = qemu_cpu or emulated_cpu(manifest.target)
    step = "frame" if manifest.kind == "stream" else "clip"
    skipped = [p for p in peers if p not in CLIP_PEERS] if step == "clip" else []
    peers = tuple(p for p in peers if p not in skipped)
    progress(f"counting the artifact's instructions on an emulated CPU ({frames} {step}s, 1 thread)")
    art = count_artifact(artifact_dir, frames=frames, per_function=per_function, qemu_cpu=qemu_cpu)
    counts = {"tvm": EmulatedCount("tvm", list(art.per_frame), art.per_function)}
    prepared = seeded_inputs(manifest, frames, seed=0)
    notes = [f"each peer runs the same model ({', '.join(PEER_LABELS.get(p, p) for p in peers)}), fp32, "
             f"{frames} seeded {step}s" + (", buffers fed back" if step == "frame" else "") + ", one guest thread"]
    if skipped:
        notes.append(f"not counted on clips: {', '.join(skipped)} (their converters take stream models)")
    peer_info: dict[str, dict[str, Any]] = {}
    models = [("", checkpoint)]
    if baselines:
        from . import _noshift_checkpoint

        noshift = _noshift_checkpoint(checkpoint)
        models.append(("_noshift", noshift))
        with tempfile.TemporaryDirectory(prefix="tsm-emu-base-") as tmp:
            for name, path in _baseline_artifacts(artifact_dir, checkpoint, noshift, Path(tmp), progress).items():
                progress(f"counting {name} on the emulated CPU")
                base = count_artifact(path, frames=frames, per_function=per_function, qemu_cpu=qemu_cpu)
                counts[name] = EmulatedCount(name, list(base.per_frame), base.per_function)
    for name in peers:
        for suffix, model in models:
            try:
                counts[name + suffix], info = _peer_counts(name, model, prepared, qemu_cpu, progress, step)
                if not suffix:
                    peer_info[name] = {"label": PEER_LABELS.get(name, name), "ran": True, "reason": None, **info}
            except (CheckFailed, TsmDeployError) as exc:
                log.warning("%s%s did not run on the emulated CPU: %s", name, suffix, exc)
                if not suffix:
                    peer_info[name] = {"label": PEER_LABELS.get(name, name), "ran": False, "reason": str(exc),
                                       "version": DEFAULT_VERSIONS.get(name)}
                    break  # its network without shifts would fail the same way
                notes.append(f"{name}{suffix} did not run: {exc}")
    return EmulatedBenchReport(
        artifact=str(artifact_dir), target=manifest.target.name,
        model={**{k: v for k, v in manifest.model.items() if k != "source"}, "precision": manifest.precision},
        macs=model_macs(checkpoint),
        counts=counts, qemu_cpu=art.qemu_cpu, notes=notes, peers=peer_info, step=step,
    )


def write_emulated_report(report: EmulatedBenchReport, json_path: Path | None) -> None:
    if json_path is not None:
        atomic_write_text(Path(json_path), report.to_json())
