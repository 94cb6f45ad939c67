"""Per-frame latency of a compiled artifact next to ONNX Runtime and PyTorch, in one process.

What is measured: one streaming step (one prepared frame in, logits out, shift buffers fed back as
the next step's inputs) for

* ``tvm``: the artifact through :class:`tsm_deploy.runtime.StreamingModel` (``run_prepared``);
* ``onnxruntime``: the same model exported by :func:`tsm_deploy.export.export_onnx`, CPU provider,
  all graph optimisations on;
* ``pytorch``: the eager model under ``torch.no_grad()``.

Fairness: all runners use the same thread count (``threads``, default ``os.cpu_count()``):
``torch.set_num_threads``, ORT ``intra_op_num_threads`` (``inter_op_num_threads=1``), and TVM's
own thread pool resized with ``runtime.config_threadpool`` (the pool that ``TVM_NUM_THREADS`` sizes
at start-up; the environment variable is set too, for pools created later). Each runner is warmed
up, then the runners take turns in rounds of ``round_size`` frames, the order rotating every round,
so background load hits them alike. Reported per runner: median, p10, p90 (ms), fps = 1000/median.

Memory: ``peak_rss_mb`` is the process's resident-set high-water mark while that runner ran (its
setup and its rounds): on Linux the kernel's ``VmHWM``, reset through ``/proc/self/clear_refs``
before each of the runner's blocks; elsewhere the largest ``psutil`` RSS sampled after each step.
All runners live in one process, so this is the whole process's footprint (Python, torch, ORT,
TVM and every loaded model) while that runner ran, not the runner's own; ``setup_rss_mb`` is how
much the RSS grew while the runner was created and warmed up, a rough measure of its own share.

Shift overhead: the same network without its ten temporal shifts (``ModelConfig(shift=False)``,
same weights) is compiled for the same TVM target with the same fusion and the same tuning database
as the artifact (MetaSchedule matches records by workload, so the kernels the two graphs share get
the same schedules; the coverage of both is reported), and benchmarked in the same rounds:
``overhead % = (median with shift / median without - 1) * 100``, for TVM, ORT and PyTorch alike.

Speed claims live in ``benchmarks/*.json`` (measured by ``scripts/bench.py``), never in tests.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from .atomic import atomic_write_bytes, atomic_write_text
from .checkpoint import LoadedCheckpoint
from .errors import TsmDeployError
from .runtime.manifest import Manifest, check_runs_here, read_manifest
from .target_status import cpu_name
from .targets import DeployTarget

log = logging.getLogger(__name__)

DEFAULT_FRAMES = 200
DEFAULT_WARMUP = 20
DEFAULT_ROUND_SIZE = 10
RUNNERS = ("tvm", "onnxruntime", "pytorch")
DISTINCT_FRAMES = 16  # prepared frames cycled through (content does not change a CNN's latency)
PEAK_RSS_NOTE = (
    "peak_rss_mb: process RSS high-water mark while this runner ran (setup + its rounds); all runners "
    "share one process, so it includes Python, torch, ONNX Runtime, TVM and every loaded model. "
    "setup_rss_mb: RSS growth while the runner was created and warmed up (rough own share)."
)
THREADS_NOTE = (
    "same thread count for all: torch.set_num_threads(n); ORT intra_op_num_threads=n, inter_op 1; "
    "TVM runtime thread pool resized to n with runtime.config_threadpool (TVM_NUM_THREADS=n set too)"
)


# ---------------------------------------------------------------------------------------------------
# memory


class _PeakRss:
    """RSS high-water mark of this process over a span: Linux VmHWM (reset via clear_refs), else psutil samples."""

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self._kernel = self._try_reset()
        self._sampled = 0

    @staticmethod
    def _try_reset() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # 5: reset the peak RSS (Linux >= 4.0)
            return True
        except OSError:
            return False

    def reset(self) -> None:
        self._sampled = self._process.memory_info().rss
        if self._kernel:
            self._kernel = self._try_reset()

    def sample(self) -> None:
        if not self._kernel:
            self._sampled = max(self._sampled, self._process.memory_info().rss)

    def peak_bytes(self) -> int:
        if self._kernel:
            try:
                with open("/proc/self/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            return int(line.split()[1]) * 1024
            except OSError:
                pass
        return max(self._sampled, self._process.memory_info().rss)

    @property
    def method(self) -> str:
        return "VmHWM (reset via /proc/self/clear_refs)" if self._kernel else "psutil RSS sampled after each step"

    def rss_bytes(self) -> int:
        return self._process.memory_info().rss


# ---------------------------------------------------------------------------------------------------
# runners


class Runner(Protocol):
    name: str

    def reset(self) -> None: ...

    def step(self, frame: np.ndarray) -> None: ...


class TvmRunner:
    """The artifact through the thin runtime; its buffers stay TVM tensors and are fed back as they are."""

    def __init__(self, artifact_dir: Path, name: str = "tvm") -> None:
        from .runtime.stream import StreamingModel

        self.name = name
        self.model = StreamingModel(artifact_dir, check_module=False)

    def reset(self) -> None:
        self.model.reset()

    def step(self, frame: np.ndarray) -> None:
        self.model.run_prepared(frame)


class OrtRunner:
    """ONNX Runtime, CPU provider, all graph optimisations; output buffers become the next inputs."""

    def __init__(self, proto: Any, threads: int, name: str = "onnxruntime") -> None:
        import onnxruntime as ort

        self.name = name
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self.session.get_inputs()]
        self._shapes = [tuple(i.shape) for i in self.session.get_inputs()]
        self._feeds: dict[str, np.ndarray] = {}
        self.reset()

    def reset(self) -> None:
        self._feeds = {name: np.zeros(shape, np.float32) for name, shape in zip(self._inputs[1:], self._shapes[1:])}

    def step(self, frame: np.ndarray) -> None:
        self._feeds[self._inputs[0]] = frame
        outputs = self.session.run(None, self._feeds)
        for name, value in zip(self._inputs[1:], outputs[1:]):
            self._feeds[name] = value


class TorchRunner:
    """PyTorch eager under no_grad; the returned buffers are the next call's inputs."""

    def __init__(self, model: Any, name: str = "pytorch") -> None:
        self.name = name
        self.model = model.eval()
        self._buffers: list = []
        self.reset()

    def reset(self) -> None:
        self._buffers = self.model.zero_buffers()

    def step(self, frame: np.ndarray) -> None:
        import torch

        with torch.no_grad():
            _, *self._buffers = self.model(torch.from_numpy(frame), *self._buffers)


# ---------------------------------------------------------------------------------------------------
# report


@dataclass(frozen=True)
class RunnerStats:
    name: str
    frames: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    fps: float  # 1000 / median_ms
    peak_rss_mb: float
    setup_rss_mb: float

    @classmethod
    def from_samples(cls, name: str, seconds: list[float], peak_rss: int, setup_rss: int) -> "RunnerStats":
        ms = np.asarray(seconds, dtype=np.float64) * 1e3
        median = float(np.median(ms))
        return cls(
            name=name,
            frames=int(ms.size),
            median_ms=median,
            p10_ms=float(np.percentile(ms, 10)),
            p90_ms=float(np.percentile(ms, 90)),
            mean_ms=float(ms.mean()),
            min_ms=float(ms.min()),
            max_ms=float(ms.max()),
            fps=1000.0 / median if median > 0 else float("inf"),
            peak_rss_mb=peak_rss / 2**20,
            setup_rss_mb=setup_rss / 2**20,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("name")
        return data


def overhead_pct(with_shift_ms: float, without_shift_ms: float) -> float:
    return (with_shift_ms / without_shift_ms - 1.0) * 100.0


@dataclass
class BenchReport:
    artifact: str
    target: str
    model: dict[str, Any]
    runners: dict[str, RunnerStats]  # tvm, onnxruntime, pytorch
    noshift: dict[str, RunnerStats] | None  # the same three on the network without shifts
    tuning: dict[str, Any]  # {"shift": coverage, "noshift": coverage or None}
    machine: dict[str, Any]
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def shift_overhead(self) -> dict[str, Any] | None:
        if self.noshift is None:
            return None
        result: dict[str, Any] = {}
        for name in RUNNERS:
            shift, base = self.runners[name].median_ms, self.noshift[name].median_ms
            result[name] = {
                "shift_median_ms": shift,
                "noshift_median_ms": base,
                "overhead_pct": overhead_pct(shift, base),
            }
        result["noshift_runners"] = {name: stats.to_dict() for name, stats in self.noshift.items()}
        result["definition"] = "(median with shift / median of the same network without shift - 1) * 100"
        return result

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {name: self.runners[name].to_dict() for name in RUNNERS}
        data["shift_overhead"] = self.shift_overhead
        data.update(
            machine=self.machine,
            artifact=self.artifact,
            target=self.target,
            model=self.model,
            tuning=self.tuning,
            settings=self.settings,
            notes=self.notes,
        )
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def table(self) -> str:
        lines = [f"{'runner':<12} {'median ms':>10} {'p10 ms':>8} {'p90 ms':>8} {'fps':>8} {'peak RSS MB':>12}"]
        for name in RUNNERS:
            s = self.runners[name]
            lines.append(
                f"{name:<12} {s.median_ms:>10.2f} {s.p10_ms:>8.2f} {s.p90_ms:>8.2f} {s.fps:>8.1f} {s.peak_rss_mb:>12.0f}"
            )
        overhead = self.shift_overhead
        if overhead:
            lines.append("shift overhead (same network and weights without the shifts; TVM: same tuning records):")
            for name in RUNNERS:
                o = overhead[name]
                lines.append(
                    f"  {name:<12} {o['shift_median_ms']:>7.2f} ms vs {o['noshift_median_ms']:>7.2f} ms  "
                    f"{o['overhead_pct']:+6.1f} %"
                )
        shift_cov = self.tuning.get("shift") or {}
        noshift_cov = self.tuning.get("noshift")
        tuning = _coverage_text(shift_cov)
        if noshift_cov is not None:
            tuning += f"; without shift: {_coverage_text(noshift_cov)}"
        lines.append(f"tuning records: {tuning}")
        m, st = self.machine, self.settings
        lines.append(
            f"{self.target} on {m.get('cpu')} ({m.get('logical_cores')} cores), {st['threads']} threads; "
            f"{st['frames']} frames per runner after {st['warmup']} warm-up, interleaved in rounds of {st['round_size']}; "
            f"load average {m.get('load_average_start', 0):.2f} -> {m.get('load_average_end', 0):.2f}"
        )
        return "\n".join(lines)

    def plot(self, path: Path) -> None:
        """Bar chart of the medians with p10-p90 whiskers (written with the Agg canvas, no GUI)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7.5, 4.2), dpi=120)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        x = np.arange(len(RUNNERS))
        groups = [("with shift", self.runners, "#3b6ea8")]
        if self.noshift is not None:
            groups.append(("without shift", self.noshift, "#b0b0b0"))
        width = 0.8 / len(groups)
        for i, (label, stats, color) in enumerate(groups):
            med = np.array([stats[n].median_ms for n in RUNNERS])
            lo = med - np.array([stats[n].p10_ms for n in RUNNERS])
            hi = np.array([stats[n].p90_ms for n in RUNNERS]) - med
            pos = x + (i - (len(groups) - 1) / 2) * width
            bars = ax.bar(pos, med, width, yerr=[lo, hi], capsize=4, color=color, label=label)
            for bar, value in zip(bars, med):
                ax.annotate(
                    f"{value:.1f}", (bar.get_x() + bar.get_width() / 2, value), xytext=(0, 2),
                    textcoords="offset points", ha="center", va="bottom", fontsize=8,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
                )
        ax.set_xticks(x, list(RUNNERS))
        ax.set_ylabel("ms per frame (median; whiskers p10-p90)")
        ax.set_title(
            f"{self.model.get('arch', 'model')} {self.model.get('input_size')}px on {self.target}: "
            f"{self.machine.get('cpu', '')}, {self.settings['threads']} threads",
            fontsize=9,
        )
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        import io

        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        atomic_write_bytes(Path(path), buffer.getvalue())


def _coverage_text(cov: dict[str, Any]) -> str:
    if not cov or not cov.get("database"):
        return f"none ({cov.get('tasks', '?')} tasks on default schedules)" if cov else "unknown"
    return f"{cov['tuned']}/{cov['tasks']} tasks ({cov['database']})"


@dataclass
class RemoteBenchReport:
    """Latency of the artifact measured on a device through TVM RPC (TVM's time evaluator runs on the
    device; the host only collects the samples). ONNX Runtime and PyTorch are not on the device, so
    there is no side-by-side comparison here: that is what the host benchmark is for."""

    artifact: str
    target: str
    device: str
    tvm: RunnerStats

    def to_json(self) -> str:
        tvm_stats = {**self.tvm.to_dict(), "peak_rss_mb": None}  # the device process's memory: RPC does not say
        tvm_stats.pop("setup_rss_mb")
        return json.dumps({"tvm": tvm_stats, "artifact": self.artifact, "target": self.target, "device": self.device},
                          indent=2) + "\n"

    def table(self) -> str:
        s = self.tvm
        return (
            f"{'runner':<12} {'median ms':>10} {'p10 ms':>8} {'p90 ms':>8} {'fps':>8}\n"
            f"{'tvm (rpc)':<12} {s.median_ms:>10.2f} {s.p10_ms:>8.2f} {s.p90_ms:>8.2f} {s.fps:>8.1f}\n"
            f"measured on {self.device} ({self.target}), {s.frames} frames"
        )

    def plot(self, path: Path) -> None:
        raise TsmDeployError("--plot is not available with --rpc")


def benchmark_remote(artifact_dir: Path, address: str, frames: int = 200, warmup: int = 20) -> RemoteBenchReport:
    """Per-frame latency of ``artifact_dir`` on the device behind a TVM RPC server."""
    from .remote import RemoteArtifact

    if frames < 1:
        raise TsmDeployError(f"--frames must be >= 1, got {frames}")
    with RemoteArtifact(Path(artifact_dir), address) as remote:
        target = remote.manifest.target["name"]
        samples = [ms / 1e3 for ms in remote.latencies_ms(frames, warmup=warmup)]
    # peak RSS is the device process's, which RPC does not report
    stats = RunnerStats.from_samples("tvm", samples, peak_rss=0, setup_rss=0)
    return RemoteBenchReport(str(artifact_dir), target, f"rpc {address}", stats)


def write_report(report: BenchReport | RemoteBenchReport, json_path: Path | None = None, plot_path: Path | None = None) -> None:
    if json_path is not None:
        atomic_write_text(Path(json_path), report.to_json())
    if plot_path is not None:
        report.plot(Path(plot_path))


# ---------------------------------------------------------------------------------------------------
# machine


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def machine_info() -> dict[str, Any]:
    import onnxruntime
    import psutil
    import torch
    import tvm

    from . import __version__

    return {
        "cpu": cpu_name(),
        "arch": platform.machine(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {
            "python": platform.python_version(),
            "tvm": tvm.__version__,
            "onnxruntime": onnxruntime.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "tsm_deploy": __version__,
        },
    }


# ---------------------------------------------------------------------------------------------------
# measurement


def _set_threads(threads: int) -> None:
    import torch

    from .runtime.stream import set_threads

    torch.set_num_threads(threads)
    set_threads(threads)


def _target_from_manifest(manifest: Manifest) -> DeployTarget:
    """The exact TVM target the artifact was built with (detection already applied), runnable here."""
    t = manifest.target
    return DeployTarget(
        name=t["name"],
        description=f"{t['name']} (from the artifact's manifest)",
        device=t["device"],
        arch=t["arch"],
        tvm_target=dict(t["tvm_target"]),
        host=t.get("host"),
        cross_compiler=None,
        tuning_logs=None,
    )


def _check_runs_here(manifest: Manifest, artifact_dir: Path) -> None:
    target = manifest.target
    if target.get("device") != "cpu":
        raise TsmDeployError(
            f"bench compares CPU runtimes on this machine; {artifact_dir} is built for {target.get('device')} "
            f"({target.get('name')})"
        )
    check_runs_here(manifest, artifact_dir, "time it on the device with `tsm-deploy bench --rpc HOST:PORT`")


def _noshift_checkpoint(checkpoint: LoadedCheckpoint) -> LoadedCheckpoint:
    config = replace(checkpoint.config, shift=False)
    return replace(
        checkpoint, config=config, source=f"{checkpoint.source} without the temporal shifts", layout="noshift"
    )


def _measure(
    runners: list[Runner],
    setup_rss: dict[str, int],
    frames: np.ndarray,
    count: int,
    warmup: int,
    round_size: int,
    peak: _PeakRss,
    progress: Callable[[int, int], None],
) -> dict[str, RunnerStats]:
    total = count * len(runners)
    samples: dict[str, list[float]] = {r.name: [] for r in runners}
    peaks: dict[str, int] = {r.name: 0 for r in runners}
    # warm-up: each runner alone, from zero buffers; then every runner continues its own stream
    for runner in runners:
        peak.reset()
        runner.reset()
        for i in range(warmup):
            runner.step(frames[i % len(frames)])
            peak.sample()
        peaks[runner.name] = max(peaks[runner.name], peak.peak_bytes())
    perf = time.perf_counter
    done = 0
    round_index = 0
    position = {r.name: 0 for r in runners}
    while done < total:
        shift = round_index % len(runners)
        order = runners[shift:] + runners[:shift]  # rotate who goes first
        for runner in order:
            left = count - len(samples[runner.name])
            n = min(round_size, left)
            if n <= 0:
                continue
            times = samples[runner.name]
            peak.reset()
            for _ in range(n):
                frame = frames[position[runner.name] % len(frames)]
                position[runner.name] += 1
                start = perf()
                runner.step(frame)
                times.append(perf() - start)
                peak.sample()
            peaks[runner.name] = max(peaks[runner.name], peak.peak_bytes())
            done += n
            progress(done, total)
        round_index += 1
    return {
        r.name: RunnerStats.from_samples(r.name, samples[r.name], peaks[r.name], setup_rss[r.name]) for r in runners
    }


def benchmark(
    artifact_dir: Path,
    checkpoint: LoadedCheckpoint,
    frames: int = DEFAULT_FRAMES,
    warmup: int = DEFAULT_WARMUP,
    threads: int | None = None,
    shift_overhead: bool = True,
    round_size: int = DEFAULT_ROUND_SIZE,
    seed: int = 0,
    progress: Callable[[int, int], None] = lambda done, total: None,
    stage: Callable[[str], None] = lambda message: None,
) -> BenchReport:
    """Measure the artifact, ONNX Runtime and PyTorch (and, with ``shift_overhead``, the same three on
    the network without shifts) side by side in this process. ``progress(done, total)`` counts timed
    frames over all runners; ``stage(message)`` announces the slow set-up steps."""
    from .compile import compile_artifact
    from .export import export_onnx
    from .verify import check_checkpoint_matches, seeded_frames

    if frames < 1:
        raise TsmDeployError(f"--frames must be >= 1, got {frames}")
    if warmup < 0:
        raise TsmDeployError(f"--warmup must be >= 0, got {warmup}")
    if round_size < 1:
        raise TsmDeployError(f"round size must be >= 1, got {round_size}")
    if threads is not None and threads < 1:
        raise TsmDeployError(f"--threads must be >= 1, got {threads}")
    threads = threads or os.cpu_count() or 1
    artifact_dir = Path(artifact_dir)
    manifest = read_manifest(artifact_dir)
    _check_runs_here(manifest, artifact_dir)
    check_checkpoint_matches(manifest, checkpoint)
    if not checkpoint.config.shift:
        raise TsmDeployError("bench expects the model with its temporal shifts (it builds the no-shift baseline itself)")

    peak = _PeakRss()
    load_start = _load_average()
    prepared = seeded_frames(manifest, min(frames + warmup, DISTINCT_FRAMES), seed)
    setup_rss: dict[str, int] = {}
    runners: list[Runner] = []

    def add(make: Callable[[], Runner], name: str) -> None:
        before = peak.rss_bytes()
        runner = make()
        setup_rss[name] = max(0, peak.rss_bytes() - before)
        runners.append(runner)

    tuning: dict[str, Any] = {"shift": manifest.tuning, "noshift": None}
    with tempfile.TemporaryDirectory(prefix="tsm-bench-") as tmp:
        stage("loading the artifact and exporting the model for ONNX Runtime")
        model = checkpoint.model()
        add(lambda: TvmRunner(artifact_dir), "tvm")
        add(lambda: OrtRunner(export_onnx(model, check_ort=False).model, threads), "onnxruntime")
        add(lambda: TorchRunner(model), "pytorch")
        if shift_overhead:
            base = _noshift_checkpoint(checkpoint)
            database = manifest.tuning.get("database") if manifest.tuning else None
            if database and not Path(database).is_dir():
                log.warning("the artifact's tuning database %s is gone: the baseline is compiled without it", database)
                tuning["noshift_note"] = f"tuning database {database} not found: baseline untuned"
                database = None
            stage("compiling the same network without shifts (same target, fusion and tuning records)")
            result = compile_artifact(base, _target_from_manifest(manifest), Path(tmp) / "noshift", database=database)
            tuning["noshift"] = result.coverage.to_dict()
            base_model = base.model()
            add(lambda: TvmRunner(Path(tmp) / "noshift", "tvm_noshift"), "tvm_noshift")
            add(lambda: OrtRunner(export_onnx(base_model, check_ort=False).model, threads, "onnxruntime_noshift"),
                "onnxruntime_noshift")
            add(lambda: TorchRunner(base_model, "pytorch_noshift"), "pytorch_noshift")
        _set_threads(threads)  # after compiling: constant folding may have started TVM's pool
        stage(f"timing {frames} frames x {len(runners)} runners ({warmup} warm-up each, rounds of {round_size})")
        stats = _measure(runners, setup_rss, prepared, frames, warmup, round_size, peak, progress)
        runners.clear()  # unload the baseline's module before its directory goes

    machine = machine_info()
    machine["load_average_start"] = load_start
    machine["load_average_end"] = _load_average()
    notes = [PEAK_RSS_NOTE, THREADS_NOTE, f"peak RSS measured with {peak.method}"]
    if (machine["load_average_start"] or 0) > 0.5 * (os.cpu_count() or 1):
        notes.append(
            f"the machine was busy when the benchmark started (load average {machine['load_average_start']:.2f} "
            f"on {os.cpu_count()} cores): absolute figures are noisy"
        )
    return BenchReport(
        artifact=str(artifact_dir),
        target=manifest.target["name"],
        model={k: v for k, v in manifest.model.items() if k not in ("source",)},
        runners={name: stats[name] for name in RUNNERS},
        noshift={name: stats[f"{name}_noshift"] for name in RUNNERS} if shift_overhead else None,
        tuning=tuning,
        machine=machine,
        settings={
            "frames": frames,
            "warmup": warmup,
            "threads": threads,
            "round_size": round_size,
            "distinct_frames": len(prepared),
            "seed": seed,
            "checkpoint": checkpoint.source,
        },
        notes=notes,
    )
