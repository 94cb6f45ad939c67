"""Benchmark results: per-runner statistics, the report (table, JSON, PNG), the remote variant."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import TsmDeployError
from ...support.atomic import atomic_write_bytes, atomic_write_text

RUNNERS = ("tvm", "onnxruntime", "pytorch")


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


PAIRED_DEFINITION = (
    "paired: per round, median of the round's frames with shift / median of the twin's frames of the "
    "same round (run back to back); (median of those ratios - 1) * 100; ci95: bootstrap over rounds "
    "(2000 resamples, seed 0), 2.5th-97.5th percentile"
)


def paired_overhead(with_shift: list[float], without_shift: list[float], round_size: int,
                    resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The shift overhead read round by round: the two samples lists hold ``round_size`` frames per
    round, in round order, timed back to back in each round (:mod:`.measure`). A slow spell of the
    machine hits both members of a round alike, so the ratio of a round cancels it; the median over
    rounds and a bootstrap interval say how sure the figure is."""
    if len(with_shift) != len(without_shift) or not with_shift or round_size < 1:
        raise TsmDeployError("paired overhead needs two equally long, non-empty sample lists")
    a, b = np.asarray(with_shift, np.float64), np.asarray(without_shift, np.float64)
    bounds = range(0, a.size, round_size)
    ratios = np.array([np.median(a[i:i + round_size]) / np.median(b[i:i + round_size]) for i in bounds])
    rng = np.random.default_rng(seed)
    boot = np.median(rng.choice(ratios, size=(resamples, ratios.size)), axis=1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return {
        "paired_overhead_pct": float((np.median(ratios) - 1.0) * 100.0),
        "paired_ci95_pct": [float((low - 1.0) * 100.0), float((high - 1.0) * 100.0)],
        "rounds": int(ratios.size),
    }


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
    paired: dict[str, dict[str, Any]] | None = None  # runner -> paired_overhead(...), with noshift
    paired_runners: dict[str, RunnerStats] | None = None  # each runner again, timed with its no-shift twin

    @property
    def shift_overhead(self) -> dict[str, Any] | None:
        if self.noshift is None:
            return None
        result: dict[str, Any] = {}
        with_shift = self.paired_runners or self.runners
        for name in RUNNERS:
            shift, base = with_shift[name].median_ms, self.noshift[name].median_ms
            result[name] = {
                "shift_median_ms": shift,
                "noshift_median_ms": base,
                "overhead_pct": overhead_pct(shift, base),
                **((self.paired or {}).get(name) or {}),
            }
        result["noshift_runners"] = {name: stats.to_dict() for name, stats in self.noshift.items()}
        if self.paired_runners:
            result["shift_runners"] = {name: stats.to_dict() for name, stats in self.paired_runners.items()}
        result["definition"] = "(median with shift / median of the same network without shift - 1) * 100"
        if self.paired:
            result["paired_definition"] = PAIRED_DEFINITION
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
            lines.append("shift overhead (same network and weights without the shifts; TVM: same tuning records; "
                         "each runtime timed with its twin):")
            for name in RUNNERS:
                o = overhead[name]
                paired = ""
                if "paired_overhead_pct" in o:
                    low, high = o["paired_ci95_pct"]
                    paired = f"   paired rounds {o['paired_overhead_pct']:+6.2f} % (95 % CI {low:+.2f} .. {high:+.2f})"
                lines.append(
                    f"  {name:<12} {o['shift_median_ms']:>7.2f} ms vs {o['noshift_median_ms']:>7.2f} ms  "
                    f"{o['overhead_pct']:+6.1f} %{paired}"
                )
        shift_cov = self.tuning.get("shift") or {}
        noshift_cov = self.tuning.get("noshift")
        tuning = _coverage_text(shift_cov)
        if noshift_cov is not None:
            tuning += f"; without shift: {_coverage_text(noshift_cov)}"
        lines.append(f"tuning records: {tuning}")
        m, st = self.machine, self.settings
        lines.append(
            f"ms per {st.get('step', 'frame')} ({st.get('input', 'prepared float tensors')}); "
            f"{self.target} on {m.get('cpu')} ({m.get('logical_cores')} cores), {st['threads']} threads; "
            f"{st['frames']} frames per runner after {st['warmup']} warm-up, interleaved in rounds of {st['round_size']}; "
            f"load average {m.get('load_average_start', 0):.2f} -> {m.get('load_average_end', 0):.2f}"
        )
        return "\n".join(lines)

    def plot(self, path: Path) -> None:
        """Bar chart of the medians with p10-p90 whiskers (written with the Agg canvas, no GUI)."""
        groups = [("with shift", self.runners, "#3b6ea8")]
        if self.noshift is not None:
            groups.append(("without shift", self.noshift, "#b0b0b0"))
        plot_medians(Path(path), RUNNERS, groups,
                     f"{self.model.get('arch', 'model')} {self.model.get('input_size')}px on {self.target}: "
                     f"{self.machine.get('cpu', '')}, {self.settings['threads']} threads")


def plot_medians(path: Path, names: tuple[str, ...], groups: list[tuple[str | None, dict[str, RunnerStats], str]],
                 title: str, value_format: str = ".1f") -> None:
    """A PNG bar chart of each runner's median, p10-p90 whiskers, one bar per group (label, stats by
    runner name, colour) side by side (Agg canvas, no GUI; written atomically)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(names))
    width = 0.8 / len(groups)
    for i, (label, stats, color) in enumerate(groups):
        med = np.array([stats[n].median_ms for n in names])
        lo = med - np.array([stats[n].p10_ms for n in names])
        hi = np.array([stats[n].p90_ms for n in names]) - med
        pos = x + (i - (len(groups) - 1) / 2) * width
        bars = ax.bar(pos, med, width, yerr=[lo, hi], capsize=4, color=color, label=label)
        for bar, value in zip(bars, med):
            ax.annotate(
                f"{value:{value_format}}", (bar.get_x() + bar.get_width() / 2, value), xytext=(0, 2),
                textcoords="offset points", ha="center", va="bottom", fontsize=8,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
            )
    ax.set_xticks(x, list(names))
    ax.set_ylabel("ms per frame (median; whiskers p10-p90)")
    ax.set_title(title, fontsize=9)
    if any(label for label, _, _ in groups):
        ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(Path(path), buffer.getvalue())


def _coverage_text(cov: dict[str, Any]) -> str:
    if not cov or not cov.get("database"):
        return f"none ({cov.get('tasks', '?')} kernels without records)" if cov else "unknown"
    share = f"{100 * cov['tuned_fraction']:.1f} % of the multiply-accumulates, " if "tuned_fraction" in cov else ""
    scheduled = f", {len(cov['derived'])} scheduled like the nearest tuned kernel" if cov.get("derived") else ""
    if cov.get("data_movement"):
        scheduled += f", {len(cov['data_movement'])} data-movement kernels run in parallel"
    return f"{share}{cov['tuned']}/{cov['tasks']} kernels{scheduled} ({', '.join(cov.get('libraries') or [cov['database']])})"


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


def write_report(report: Any, json_path: Path | None = None, plot_path: Path | None = None) -> None:
    if json_path is not None:
        atomic_write_text(Path(json_path), report.to_json())
    if plot_path is not None:
        report.plot(Path(plot_path))
