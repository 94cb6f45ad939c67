"""The instruction meter for the emulated Raspberry Pi 4 (QEMU TCG plugin) and the MetaSchedule runner
over it. Real QEMU, real cross-compiled code: a counted loop, TIR candidates, a small model, a mini
tune. Needs scripts/install_system_deps.sh (qemu-user, gcc, the aarch64 cross toolchain)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tsm_deploy.emulation.meter import (
    INSTRUCTIONS_LABEL,
    MARKER_SYSCALL,
    GuestFailure,
    MeasureSession,
    build_meter_plugin,
    count_artifact,
    qemu_user,
    run_metered,
)
from tsm_deploy.errors import TsmDeployError
from tsm_deploy.target.targets import load_target

from ..conftest import METER_TOOLS, require_tools

pytestmark = pytest.mark.emulation

needs_tools = pytest.mark.requires_tool(*METER_TOOLS)

LOOP_C = f"""
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(int argc, char **argv) {{
    long n = atol(argv[1]);
    volatile long sink = 0;
    syscall({MARKER_SYSCALL}, 1);
    for (long i = 0; i < n; i++) sink += i;
    syscall({MARKER_SYSCALL}, 2);
    for (long i = 0; i < 2 * n; i++) sink += i;
    syscall({MARKER_SYSCALL}, 3);
    return 0;
}}
"""


def test_missing_tools_are_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(TsmDeployError, match=r"apt-get install qemu-user\b"):
        qemu_user()
    with pytest.raises(TsmDeployError, match=r"apt-get install gcc\b"):
        build_meter_plugin(cache_dir=tmp_path / "cache")


def test_runner_refuses_a_target_it_cannot_emulate():
    from tsm_deploy.tuning.emulated_runner import make_emulated_runner

    with pytest.raises(TsmDeployError, match="aarch64"):
        make_emulated_runner(load_target("x86"))


# --------------------------------------------------------------------------------------------------
# The plugin on a plain aarch64 program.


@pytest.fixture(scope="module")
def loop_program(tmp_path_factory) -> Path:
    require_tools(*METER_TOOLS)
    d = tmp_path_factory.mktemp("loop")
    (d / "loop.c").write_text(LOOP_C)
    subprocess.run(["aarch64-linux-gnu-gcc", "-O1", "-static", "-o", d / "loop", d / "loop.c"], check=True)
    return d / "loop"


def _deltas(program: Path, n: int, mode: str = "inline") -> dict[str, int]:
    run = run_metered(program.parent, [program, str(n)], mode=mode, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.total is not None and run.total >= run.marks[-2].total
    return {m.tag: m.delta for m in run.marks if m.tag != "exit"}


@needs_tools
def test_counts_are_exact_repeatable_and_linear(loop_program):
    n = 1000
    first, again = _deltas(loop_program, n), _deltas(loop_program, n)
    assert first == again  # the same program counts the same, to the instruction
    double, quadruple = _deltas(loop_program, 2 * n), _deltas(loop_program, 4 * n)
    # between markers 1 and 2: a + k*n; the loop body is a handful of instructions
    k, rest = divmod(double["2"] - first["2"], n)
    assert rest == 0 and 3 <= k <= 12
    assert quadruple["2"] - double["2"] == 2 * n * k
    # markers separate the two loops: the second interval (2n iterations) grows twice as fast
    assert double["3"] - first["3"] == 2 * n * k
    # what comes before the first marker (the C start-up) does not depend on n
    assert first["1"] == double["1"] == quadruple["1"]


@needs_tools
def test_per_thread_mode_counts_the_same_single_thread(loop_program):
    assert _deltas(loop_program, 500, mode="vcpu") == _deltas(loop_program, 500, mode="inline")


# --------------------------------------------------------------------------------------------------
# Candidates in one long-lived guest.


def _matmul_library(path: Path, n: int, tvm_target: dict) -> Path:
    import tvm
    from tvm import te
    from tvm.support import cc

    a = te.placeholder((n, n), "float32", name="A")
    b = te.placeholder((n, n), "float32", name="B")
    k = te.reduce_axis((0, n), "k")
    c = te.compute((n, n), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="C")
    lib = tvm.compile(tvm.IRModule({"main": te.create_prim_func([a, b, c])}), target=tvm.target.Target(tvm_target))
    lib.export_library(str(path), fcompile=cc.cross_compiler("aarch64-linux-gnu-g++"))
    return path


@pytest.fixture(scope="module")
def candidates(tmp_path_factory) -> dict[str, Path]:
    require_tools(*METER_TOOLS)
    d = tmp_path_factory.mktemp("candidates")
    rasp4 = load_target("rasp4").tvm_target
    sve = {**rasp4, "mcpu": "a64fx", "mattr": ["+sve"]}  # instructions a Cortex-A72 lacks
    return {
        "mm16": _matmul_library(d / "mm16.so", 16, rasp4),
        "mm32": _matmul_library(d / "mm32.so", 32, rasp4),
        "sve32": _matmul_library(d / "sve32.so", 32, sve),
    }


def _args(n: int) -> list[list]:
    return [["TENSOR", "float32", [n, n]]] * 3


@pytest.mark.slow
@needs_tools
def test_one_guest_measures_many_candidates_exactly_and_survives_failures(candidates):
    with MeasureSession() as session:
        assert session.marker_overhead is not None and session.marker_overhead < 200
        small = session.measure(candidates["mm16"], _args(16), repeat=3)
        large = session.measure(candidates["mm32"], _args(32), repeat=2)
        assert len(set(small)) == 1 and len(set(large)) == 1  # exact: every call counts the same
        assert session.measure(candidates["mm16"], _args(16)) == small[:1]  # and again, later
        assert large[0] > 4 * small[0]  # 8x the multiply-adds
        with pytest.raises(RuntimeError, match="cannot|No such|not"):
            session.measure(candidates["mm16"].with_name("missing.so"), _args(16))
        assert session.running and session.restarts == 0  # an error answer keeps the guest
        with pytest.raises(GuestFailure, match="SIGILL"):
            session.measure(candidates["sve32"], _args(32))
        assert session.measure(candidates["mm32"], _args(32)) == large[:1]  # restarted
        assert session.restarts == 1


# --------------------------------------------------------------------------------------------------
# MetaSchedule: the runner on a built candidate, and a mini tune.


def _persistent_builder(cross_compiler: str):
    try:
        from tsm_deploy.tuning.builder import PersistentBuilder
    except ImportError:
        from tsm_deploy.tune import PersistentBuilder
    return PersistentBuilder(max_workers=1, cross_compiler=cross_compiler)  # a mini tune needs no more


def _one_conv2d():
    from tvm import relax

    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 16, 14, 14), "float32"))
    w = relax.Var("w", relax.TensorType((16, 16, 3, 3), "float32"))
    with bb.function("main", [x, w]):
        with bb.dataflow():
            out = bb.emit_output(bb.emit(relax.op.nn.conv2d(x, w, padding=1)))
        bb.emit_func_output(out)
    return relax.transform.LegalizeOps()(bb.get())


@pytest.mark.slow
@pytest.mark.heavy  # 3-5 min
@needs_tools
def test_runner_measures_candidates_and_a_mini_tune_records_them(tmp_path):
    from tvm.s_tir import meta_schedule as ms

    from tsm_deploy.tuning.emulated_runner import NOMINAL_INSTRUCTIONS_PER_SECOND, make_emulated_runner

    target = load_target("rasp4")
    runner, close = make_emulated_runner(target)
    builder = _persistent_builder(target.cross_compiler)
    try:
        tasks = ms.relax_integration.extract_tasks(_one_conv2d(), target.tvm())
        assert len(tasks) == 1
        func = tasks[0].dispatched[0]
        # the runner on one built candidate (the unscheduled PrimFunc), and on one that is missing
        built = builder.build([ms.builder.BuilderInput(func, target.tvm())])[0]
        assert built.error_msg is None, built.error_msg
        args_info = ms.arg_info.ArgInfo.from_entry_func(func)
        good, missing = runner.run([
            ms.runner.RunnerInput(built.artifact_path, "llvm", args_info),
            ms.runner.RunnerInput(str(tmp_path / "missing.so"), "llvm", args_info),
        ])
        result = good.result()
        assert result.error_msg is None, result.error_msg
        secs = [float(s) for s in result.run_secs]
        assert runner.instructions[-1] == round(secs[0] * NOMINAL_INSTRUCTIONS_PER_SECOND)
        assert runner.instructions[-1] > 16 * 16 * 14 * 14 * 9  # at least one instruction per multiply-add
        assert missing.result().run_secs is None and "missing.so" in missing.result().error_msg

        # a mini tune of that task: the records land in a JSON database with instruction-based run_secs
        work = tmp_path / "db"
        work.mkdir()
        database = ms.database.JSONDatabase(str(work / "database_workload.json"),
                                            str(work / "database_tuning_record.json"), module_equality="structural")
        context = ms.TuneContext(
            mod=func, target=target.tvm(), space_generator="post-order-apply",
            search_strategy=ms.search_strategy.EvolutionarySearch(population_size=16),
            task_name=tasks[0].task_name, rand_state=7, num_threads=2,
        ).clone()
        measured_before = runner.measured
        ms.tune_tasks(
            tasks=[context], task_weights=[1.0], work_dir=str(work), max_trials_global=6, max_trials_per_task=6,
            num_trials_per_iter=3, builder=builder, runner=runner, database=database,
            cost_model=ms.cost_model.XGBModel(num_tuning_cores=2),
            measure_callbacks=[ms.measure_callback.AddToDatabase(), ms.measure_callback.RemoveBuildArtifact(),
                               ms.measure_callback.UpdateCostModel()],
            task_scheduler="round-robin",
        )
        records = [json.loads(line) for line in (work / "database_tuning_record.json").read_text().splitlines() if line]
        valid = [r for r in database.get_all_tuning_records() if r.run_secs and float(r.run_secs[0]) < 1e9]
        assert len(records) >= 3 and len(valid) >= 3
        assert runner.measured - measured_before >= 3
        counts = {round(float(r.run_secs[0]) * NOMINAL_INSTRUCTIONS_PER_SECOND) for r in valid}
        assert counts <= set(runner.instructions)  # what was recorded is what the guest counted
    finally:
        builder.shutdown()
        close()


# --------------------------------------------------------------------------------------------------
# A whole artifact.


@pytest.mark.slow
@needs_tools
@pytest.mark.parametrize("model", ["small_checkpoint", "small_clip_checkpoint"])
def test_count_artifact_per_step_and_per_function(tmp_path, request, model):
    """A stream artifact is counted frame by frame (run_prepared), a clip artifact clip by clip (predict)."""
    from tsm_deploy.compiler.artifact import compile_artifact

    artifact = tmp_path / "small-rasp4"
    compile_artifact(request.getfixturevalue(model), load_target("rasp4"), artifact, database=None)
    count = count_artifact(artifact, frames=3, per_function=True)
    assert count.label == INSTRUCTIONS_LABEL
    assert len(count.per_frame) == 3 and count.startup > 10 * count.per_frame_instructions
    steady = count.per_frame[1:]
    # steady steps agree: the kernels execute the same instructions every step, but Python and the
    # allocators around them do not (seen: 0.24 % apart on one run, < 0.1 % on most)
    assert abs(steady[0] - steady[1]) <= 1e-2 * steady[0]
    # per function: every fused kernel of one step, exactly; together nearly all of the step
    assert count.per_function and all(n > 0 for n in count.per_function.values())
    assert any(name.startswith("fused_conv2d") for name in count.per_function)
    kernels = sum(count.per_function.values())
    assert 0.8 * count.per_frame_instructions < kernels < count.per_frame_instructions

    with pytest.raises(TsmDeployError, match="frames must be"):
        count_artifact(artifact, frames=0)


@pytest.mark.slow
@pytest.mark.heavy  # ~3 min (build workers' import, guest start, a rasp4 compile): make test-all
@pytest.mark.requires_tool("qemu-aarch64")
def test_tune_emulate_then_compile_applies_the_records(tmp_path, small_checkpoint_file):
    """`tune --emulate` for a few trials on the most expensive task of a small model, then `compile`
    for the Pi with that database: the task is scheduled from the emulated measurements."""
    from click.testing import CliRunner

    from tsm_deploy.cli import main
    from tsm_deploy.target.library import read_metadata

    db = tmp_path / "db"
    common = ["--checkpoint", str(small_checkpoint_file), "--target", "rasp4", "--tuning-db", str(db)]
    result = CliRunner().invoke(main, ["tune", *common, "--emulate", "--trials", "4", "--max-tasks", "1"])
    assert result.exit_code == 0, result.output
    meta = read_metadata(db)
    assert meta["measured_by"] == "emulated-instructions" and "instructions" in meta["machine_cpu"]
    tuned = [t for t in meta["tasks"].values() if t.get("best_us")]
    assert len(tuned) == 1 and tuned[0]["trials"] >= 4
    result = CliRunner().invoke(main, ["compile", *common, "--output", str(tmp_path / "art")])
    assert result.exit_code == 0, result.output
    assert re.search(r"tuned: [\d.]+ % of the model's multiply-accumulates, 1 of \d+ kernels", result.output), result.output


@pytest.mark.slow
@pytest.mark.heavy  # 307 s with the three peers (2026-12-04; 116 s with ONNX Runtime alone): make test-all
@needs_tools
def test_bench_emulate_counts_tvm_its_baselines_and_the_peers(tmp_path, small_checkpoint, small_checkpoint_file):
    """`bench --emulate`: per-frame instruction counts for the artifact, the same module untuned, the
    network without shifts, and ONNX Runtime, ncnn and ExecuTorch + XNNPACK with and without shifts, in one JSON."""
    from click.testing import CliRunner

    from tsm_deploy.cli import main
    from tsm_deploy.compiler.artifact import compile_artifact

    artifact = tmp_path / "small-rasp4"
    compile_artifact(small_checkpoint, load_target("rasp4"), artifact, database=None)
    out = tmp_path / "emulated.json"
    result = CliRunner().invoke(main, ["bench", str(artifact), "--checkpoint", str(small_checkpoint_file),
                                       "--emulate", "--frames", "2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "counts, not latency" in result.output and "shift overhead tvm" in result.output
    report = json.loads(out.read_text())
    runners = report["runners"]
    peers = ("onnxruntime", "ncnn", "executorch")
    assert set(runners) == {"tvm", "tvm_untuned", "tvm_noshift", *peers, *(f"{p}_noshift" for p in peers)}
    assert all(report["peers"][p]["ran"] for p in peers)
    assert report["peers"]["executorch"]["delegation"]["not_delegated"] == {"aten.mean.dim": 2}
    assert report["strongest_peer"] in peers and report["tvm_vs_strongest_peer"] > 0
    assert all(r["instructions_per_frame"] > 1e6 for r in runners.values())
    # the artifact is untuned itself: the same module compiled twice executes the same instructions
    assert abs(report["tuned_vs_untuned"] - 1.0) < 1e-3
    # shifting costs instructions (slices, concatenations, buffers) in both runtimes, but not many
    assert all(0 < report["shift_overhead"][r] < 0.5 for r in ("tvm", *peers))
    assert report["macs_per_frame"] > 0 and runners["tvm"]["instructions_per_mac"] > 0
