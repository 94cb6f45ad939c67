"""Benchmark machinery on a small model: report schema, all runners measured, shift overhead, CLI.

No timing assertions: speed claims live in benchmarks/*.json, measured by scripts/bench.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tsm_deploy.evaluate.bench import (
    RUNNERS,
    BenchReport,
    RunnerStats,
    benchmark,
    overhead_pct,
    paired_overhead,
    write_report,
)
from tsm_deploy.evaluate.bench.measure import round_order
from tsm_deploy.checkpoint import default_checkpoint, save_checkpoint
from tsm_deploy.cli import main
from tsm_deploy.compiler.artifact import compile_artifact
from tsm_deploy.errors import TsmDeployError
from tsm_deploy.models import ModelConfig
from tsm_deploy.target.targets import load_target

# Two compiles of a small model (~25 s in all on 2 cores): not "slow" by the marker's definition.

SMALL = ModelConfig(input_size=64, width_mult=0.5)
STATS_KEYS = {"median_ms", "p10_ms", "p90_ms", "fps", "peak_rss_mb"}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory):
    checkpoint = default_checkpoint(SMALL)
    artifact = tmp_path_factory.mktemp("bench") / "x86"
    compile_artifact(checkpoint, load_target("x86"), artifact, database=None)
    return checkpoint, artifact


@pytest.fixture(scope="module")
def report(small) -> BenchReport:
    checkpoint, artifact = small
    seen: list[tuple[int, int]] = []
    stages: list[str] = []
    result = benchmark(
        artifact, checkpoint, frames=8, warmup=2, threads=1, round_size=3,
        progress=lambda done, total: seen.append((done, total)), stage=stages.append,
    )
    assert seen and seen[-1][0] == seen[-1][1] == 8 * 9  # 3 runners side by side, then each with its twin
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert any("without shifts" in s for s in stages)
    return result


def test_json_schema(report: BenchReport, tmp_path: Path) -> None:
    write_report(report, tmp_path / "b.json", tmp_path / "b.png")
    data = json.loads((tmp_path / "b.json").read_text())
    for name in RUNNERS:
        assert STATS_KEYS <= set(data[name]), name
        for key in STATS_KEYS:
            assert data[name][key] > 0, (name, key)
        assert data[name]["p10_ms"] <= data[name]["median_ms"] <= data[name]["p90_ms"]
        assert data[name]["fps"] == pytest.approx(1000 / data[name]["median_ms"])
        assert data[name]["frames"] == 8
    for key in ("machine", "artifact", "target", "tuning", "settings"):
        assert key in data
    assert data["target"] == "x86"
    assert data["settings"]["threads"] == 1
    machine = data["machine"]
    assert machine["logical_cores"] >= 1 and machine["date"] and machine["cpu"]
    assert {"tvm", "onnxruntime", "torch", "python"} <= set(machine["versions"])
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_shift_overhead(report: BenchReport) -> None:
    data = report.to_dict()
    overhead = data["shift_overhead"]
    for name in RUNNERS:
        o = overhead[name]
        assert o["shift_median_ms"] > 0 and o["noshift_median_ms"] > 0
        assert o["overhead_pct"] == pytest.approx(overhead_pct(o["shift_median_ms"], o["noshift_median_ms"]))
        assert STATS_KEYS <= set(overhead["noshift_runners"][name])
        assert overhead["shift_runners"][name]["median_ms"] == o["shift_median_ms"]  # the pair run's
        low, high = o["paired_ci95_pct"]  # read round by round: 8 frames in rounds of 3 -> 3 rounds
        assert o["rounds"] == 3 and low <= o["paired_overhead_pct"] <= high
    assert "per round" in overhead["paired_definition"]
    # the baseline was compiled "the same way": coverage of both graphs is reported
    tuning = data["tuning"]
    # on CPU targets the shifts run hand-written kernels (nothing to tune): both graphs have the same tasks
    assert tuning["shift"]["tasks"] == tuning["noshift"]["tasks"] > 0
    assert tuning["noshift"]["database"] == tuning["shift"]["database"]  # None here: untuned small model


def test_table(report: BenchReport) -> None:
    table = report.table()
    for name in RUNNERS:
        assert name in table
    assert "shift overhead" in table and "threads" in table


def test_overhead_and_stats_arithmetic() -> None:
    assert overhead_pct(10.3, 10.0) == pytest.approx(3.0)
    stats = RunnerStats.from_samples("x", [0.001 * i for i in range(1, 101)], 2**20 * 100, 0)
    assert stats.median_ms == pytest.approx(50.5)
    assert stats.p10_ms == pytest.approx(10.9) and stats.p90_ms == pytest.approx(90.1)
    assert stats.fps == pytest.approx(1000 / 50.5) and stats.peak_rss_mb == pytest.approx(100)


def test_paired_overhead_cancels_what_a_round_shares() -> None:
    # the machine slows down 1x..4x from round to round; within a round the shift costs 2 % more:
    # the pooled medians mix the slow spells, the paired rounds see the 2 % only
    rounds, size = 40, 5
    slow = [1.0 + 3.0 * ((7 * k) % rounds) / rounds for k in range(rounds)]
    base = [slow[k] * (1.0 + 0.01 * i) for k in range(rounds) for i in range(size)]
    shifted = [t * 1.02 for t in base]
    result = paired_overhead(shifted, base, size)
    assert result["rounds"] == rounds
    assert result["paired_overhead_pct"] == pytest.approx(2.0)
    assert result["paired_ci95_pct"] == pytest.approx([2.0, 2.0])
    noisy = paired_overhead([t * (1.02 if k % 2 else 1.0) for k, t in enumerate(base)], base, size)
    low, high = noisy["paired_ci95_pct"]
    assert 0.0 <= low <= noisy["paired_overhead_pct"] <= high <= 2.0
    with pytest.raises(TsmDeployError):
        paired_overhead(shifted[:-1], base, size)


def test_round_order_keeps_twins_back_to_back() -> None:
    groups = [["tvm", "tvm_noshift"], ["ort", "ort_noshift"], ["pt", "pt_noshift"]]
    seen_first = {"tvm": 0, "tvm_noshift": 0}
    for k in range(6):
        order = round_order(groups, k)
        assert sorted(order) == sorted(n for g in groups for n in g)
        for twin in ("tvm", "ort", "pt"):
            i, j = order.index(twin), order.index(f"{twin}_noshift")
            assert abs(i - j) == 1
        seen_first["tvm" if order.index("tvm") < order.index("tvm_noshift") else "tvm_noshift"] += 1
        assert order[0] in groups[k % 3]  # the groups take turns first
    assert seen_first == {"tvm": 3, "tvm_noshift": 3}  # each twin goes first half the time


def test_bench_cli(small, tmp_path: Path) -> None:
    checkpoint, artifact = small
    path = tmp_path / "small.pth"
    save_checkpoint(checkpoint, path)
    result = CliRunner().invoke(
        main,
        ["bench", str(artifact), "--checkpoint", str(path), "--frames", "4", "--warmup", "1", "--threads", "1",
         "--no-shift-overhead", "--json", str(tmp_path / "r.json"), "--plot", str(tmp_path / "r.png")],
    )
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "r.json").read_text())
    for name in RUNNERS:
        assert STATS_KEYS <= set(data[name])
    assert data["shift_overhead"] is None
    assert (tmp_path / "r.png").exists()
    assert "median ms" in result.output


def test_bench_refuses_foreign_artifact(small, tmp_path: Path) -> None:
    """An artifact built for another machine cannot be timed here: one line, exit 2."""
    checkpoint, artifact = small
    copy = tmp_path / "arm"
    shutil.copytree(artifact, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["target"]["arch"] = "aarch64"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TsmDeployError, match=r"built for x86 \(aarch64\), not this"):
        benchmark(copy, checkpoint, frames=2, warmup=0, shift_overhead=False)
    path = tmp_path / "small.pth"
    save_checkpoint(checkpoint, path)
    result = CliRunner().invoke(main, ["bench", str(copy), "--checkpoint", str(path), "--frames", "2"])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "aarch64" in errors[0] and "Traceback" not in result.output


def test_bench_rejects_bad_counts(small) -> None:
    checkpoint, artifact = small
    with pytest.raises(TsmDeployError, match="--frames"):
        benchmark(artifact, checkpoint, frames=0)
    with pytest.raises(TsmDeployError, match="--threads"):
        benchmark(artifact, checkpoint, threads=0)
