"""Per-frame latency of a compiled artifact next to ONNX Runtime and PyTorch, in one process.

What is measured: one streaming step (one prepared frame in, logits out, shift buffers fed back as
the next step's inputs) for

* ``tvm``: the artifact through :class:`tsm_deploy.runtime.StreamingModel` (``run_prepared``);
* ``onnxruntime``: the same model exported by :func:`tsm_deploy.frontend.export.export_onnx`, CPU provider,
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
the same schedules; the coverage of both is reported). After the side-by-side run, each runtime is
timed again alone with its no-shift twin, the two back to back in every round (:mod:`.measure`; the
other runtimes' thread pools, still spinning after their turn, made the side-by-side rounds too noisy
for a 1 % question): ``overhead % = (median with shift / median without - 1) * 100`` over that pair
run, for TVM, ORT and PyTorch alike, and
read round by round (``paired_overhead_pct`` with a bootstrap 95 % interval,
:func:`.report.paired_overhead`): the twins of a round share the machine's state of that moment, so
the paired figure resolves what a pooled median on a shared machine cannot (on the 2-core VM here an
artifact timed against itself this way reads within +-0.6 %).

Speed claims live in ``benchmarks/*.json`` (measured by ``scripts/bench.py``), never in tests.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from ...checkpoint import LoadedCheckpoint
from ...errors import TsmDeployError
from ...runtime.manifest import Manifest, check_runs_here, read_manifest
from ...target.targets import DeployTarget
from ..inputs import reference_preparation, seeded_inputs
from ..runners import SteppingRunner
from ..runners.local import ArtifactRunner, OnnxRuntimeRunner, TorchRunner
from .machine import _load_average, measured_machine
from .measure import measure
from .memory import _PeakRss
from .report import RUNNERS, BenchReport, RemoteBenchReport, RunnerStats, overhead_pct, paired_overhead, write_report

log = logging.getLogger(__name__)

DEFAULT_FRAMES = 200
DEFAULT_WARMUP = 20
DEFAULT_ROUND_SIZE = 10
DEFAULT_SETTLE = 2  # untimed frames at the start of each runner's block (see .measure)
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


def _set_threads(threads: int) -> None:
    import torch

    from ...runtime.loader import set_threads

    torch.set_num_threads(threads)
    set_threads(threads)


def _target_from_manifest(manifest: Manifest) -> DeployTarget:
    """The exact TVM target the artifact was built with (detection already applied), runnable here."""
    t = manifest.target
    return DeployTarget(
        name=t.name,
        description=f"{t.name} (from the artifact's manifest)",
        device=t.device,
        arch=t.arch,
        tvm_target=t.tvm_target,
        host=t.host,
        cross_compiler=None,
        tuning_logs=None,
    )


def _check_runs_here(manifest: Manifest, artifact_dir: Path) -> None:
    target = manifest.target
    if target.device != "cpu":
        raise TsmDeployError(
            f"bench compares CPU runtimes on this machine; {artifact_dir} is built for {target.device} ({target.name})"
        )
    check_runs_here(manifest, artifact_dir, "time it on the device with `tsm-deploy bench --rpc HOST:PORT`")


def _noshift_checkpoint(checkpoint: LoadedCheckpoint) -> LoadedCheckpoint:
    config = replace(checkpoint.config, shift=False)
    return replace(
        checkpoint, config=config, source=f"{checkpoint.source} without the temporal shifts", layout="noshift"
    )


class _Runners:
    """The runners of one benchmark, each created with its set-up RSS growth noted."""

    def __init__(self) -> None:
        self.peak = _PeakRss()
        self.setup_rss: dict[str, int] = {}
        self.by_name: dict[str, SteppingRunner] = {}

    def add(self, make: Callable[[], SteppingRunner], name: str) -> None:
        before = self.peak.rss_bytes()
        runner = make()
        self.setup_rss[name] = max(0, self.peak.rss_bytes() - before)
        self.by_name[name] = runner

    def clear(self) -> None:
        self.by_name.clear()  # unloads the modules (the baseline's before its directory goes)


def _check_settings(frames: int, warmup: int, round_size: int, threads: int | None) -> int:
    """-> the thread count."""
    if frames < 1:
        raise TsmDeployError(f"--frames must be >= 1, got {frames}")
    if warmup < 0:
        raise TsmDeployError(f"--warmup must be >= 0, got {warmup}")
    if round_size < 1:
        raise TsmDeployError(f"round size must be >= 1, got {round_size}")
    if threads is not None and threads < 1:
        raise TsmDeployError(f"--threads must be >= 1, got {threads}")
    return threads or os.cpu_count() or 1


def _add_runtimes(runners: _Runners, artifact: Path, checkpoint: LoadedCheckpoint, threads: int, prepare: Any,
                  suffix: str = "") -> None:
    """The artifact, ONNX Runtime and PyTorch eager on ``checkpoint``'s model, named with ``suffix``."""
    from ...frontend.export import export_onnx

    model = checkpoint.model()
    runners.add(lambda: ArtifactRunner(artifact, f"tvm{suffix}"), f"tvm{suffix}")
    runners.add(lambda: OnnxRuntimeRunner(model, export_onnx(model, check_ort=False).model, threads,
                                          f"onnxruntime{suffix}", prepare=prepare), f"onnxruntime{suffix}")
    runners.add(lambda: TorchRunner(model, f"pytorch{suffix}", prepare=prepare), f"pytorch{suffix}")


def _compile_noshift(manifest: Manifest, checkpoint: LoadedCheckpoint, out: Path, tuning: dict[str, Any]) -> LoadedCheckpoint:
    """The same network without shifts, compiled as the artifact was (same target, fusion and records)."""
    from ...compiler.artifact import compile_artifact

    base = _noshift_checkpoint(checkpoint)
    recorded = manifest.tuning or {}
    database = recorded.get("libraries") or ([recorded["database"]] if recorded.get("database") else [])
    gone = [d for d in database if not Path(d).is_dir()]
    if gone:
        log.warning("the artifact's tuning records %s are gone: the baseline is compiled without them", gone[0])
        tuning["noshift_note"] = f"tuning records {gone[0]} not found: baseline compiled without them"
        database = [d for d in database if d not in gone]
    result = compile_artifact(base, _target_from_manifest(manifest), out, database=database)
    tuning["noshift"] = result.coverage.to_dict()
    return base


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
    from ..verify import check_checkpoint_matches

    threads = _check_settings(frames, warmup, round_size, threads)
    artifact_dir = Path(artifact_dir)
    manifest = read_manifest(artifact_dir)
    _check_runs_here(manifest, artifact_dir)
    check_checkpoint_matches(manifest, checkpoint)
    if not checkpoint.config.shift:
        raise TsmDeployError("bench expects the model with its temporal shifts (it builds the no-shift baseline itself)")

    load_start = _load_average()
    prepared = seeded_inputs(manifest, min(frames + warmup, DISTINCT_FRAMES), seed)
    prepare = reference_preparation(manifest)
    runners = _Runners()
    tuning: dict[str, Any] = {"shift": manifest.tuning, "noshift": None}
    with tempfile.TemporaryDirectory(prefix="tsm-bench-") as tmp:
        stage("loading the artifact and exporting the model for ONNX Runtime")
        _add_runtimes(runners, artifact_dir, checkpoint, threads, prepare)
        if shift_overhead:
            stage("compiling the same network without shifts (same target, fusion and tuning records)")
            base = _compile_noshift(manifest, checkpoint, Path(tmp) / "noshift", tuning)
            _add_runtimes(runners, Path(tmp) / "noshift", base, threads, prepare, suffix="_noshift")
        _set_threads(threads)  # after compiling: constant folding may have started TVM's pool
        by_name = runners.by_name
        total = frames * len(by_name) + (frames * len(RUNNERS) if shift_overhead else 0)  # each twin pair reruns

        def timed(groups: list[list[SteppingRunner]], before: int) -> tuple[dict[str, RunnerStats], dict[str, list[float]]]:
            return measure(groups, runners.setup_rss, prepared, frames, warmup, round_size, runners.peak,
                           lambda done, _: progress(before + done, total), settle=DEFAULT_SETTLE)

        stage(f"timing {frames} frames x {len(RUNNERS)} runners side by side"
              + (", then each with its no-shift twin" if shift_overhead else "")
              + f" ({warmup} warm-up each, rounds of {round_size})")
        stats, _ = timed([[by_name[n]] for n in RUNNERS], 0)  # side by side: the three runtimes take turns
        pairs = {}  # then each runtime alone with its twin (nothing else's thread pool in between)
        if shift_overhead:
            for i, n in enumerate(RUNNERS):
                pairs[n] = timed([[by_name[n], by_name[f"{n}_noshift"]]], frames * (len(RUNNERS) + 2 * i))
        runners.clear()
    settings = {
        "frames": frames,
        "warmup": warmup,
        "threads": threads,
        "round_size": round_size,
        "settle": DEFAULT_SETTLE,
        "distinct_frames": len(prepared),
        "seed": seed,
        "step": "clip" if manifest.kind == "clip" else "frame",  # what one timed sample is
        "input": "uint8 camera frames (preprocessing included)" if manifest.io.frame_format == "rgb_uint8"
        else "prepared float tensors (network only)",
        "checkpoint": checkpoint.source,
    }
    return _report(artifact_dir, manifest, stats, pairs if shift_overhead else None, tuning, load_start,
                   runners.peak.method, round_size, settings)


def _report(artifact_dir: Path, manifest: Manifest, stats: dict[str, RunnerStats], pairs: dict[str, Any] | None,
            tuning: dict[str, Any], load_start: float | None, rss_method: str, round_size: int,
            settings: dict[str, Any]) -> BenchReport:
    paired = {n: paired_overhead(samples[n], samples[f"{n}_noshift"], round_size) for n, (_, samples) in (pairs or {}).items()}
    machine, load_notes = measured_machine(load_start)
    notes = [PEAK_RSS_NOTE, THREADS_NOTE, f"peak RSS measured with {rss_method}", *load_notes]
    return BenchReport(
        artifact=str(artifact_dir),
        target=manifest.target.name,
        model={k: v for k, v in manifest.model.items() if k not in ("source",)},
        runners={name: stats[name] for name in RUNNERS},
        noshift={name: pair[f"{name}_noshift"] for name, (pair, _) in pairs.items()} if pairs is not None else None,
        paired_runners={name: pair[name] for name, (pair, _) in pairs.items()} if pairs is not None else None,
        tuning=tuning,
        machine=machine,
        paired=paired or None,
        settings=settings,
        notes=notes,
    )


def benchmark_remote(artifact_dir: Path, address: str, frames: int = 200, warmup: int = 20,
                     key: str | None = None) -> RemoteBenchReport:
    """Per-frame latency of ``artifact_dir`` on the device behind a TVM RPC server (with ``key``: a
    device the tracker at ``address`` hands out)."""
    from ..runners.rpc import RemoteArtifact

    if frames < 1:
        raise TsmDeployError(f"--frames must be >= 1, got {frames}")
    with RemoteArtifact(Path(artifact_dir), address, key) as remote:
        target = remote.manifest.target.name
        samples = [ms / 1e3 for ms in remote.latencies_ms(frames, warmup=warmup)]
    # peak RSS is the device process's, which RPC does not report
    stats = RunnerStats.from_samples("tvm", samples, peak_rss=0, setup_rss=0)
    return RemoteBenchReport(str(artifact_dir), target, f"rpc {address}", stats)


