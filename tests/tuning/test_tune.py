"""MetaSchedule tuning on a small model, real components only: a TVM RPC tracker and server on
loopback, the persistent builder, a run killed mid-way and resumed, compile with the records.

One database is carried through the module (RPC tune -> killed run -> resume -> compile), so the
builder's one-time warm-up and the small model's export are paid a few times, not per check.
"""

from __future__ import annotations

import json
import re
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tsm_deploy.cli import main
from tsm_deploy.compiler.artifact import compile_artifact
from tsm_deploy.target.library import DATABASE_FILES, compact_database, database_prepack, read_metadata
from tsm_deploy.target.library import METADATA_FILE as TUNING_METADATA
from tsm_deploy.errors import TsmDeployError
from tsm_deploy.target.targets import load_target
from tsm_deploy.tuning.loop import REMEASURE_TOP_K, tune_model
from tsm_deploy.evaluate.place import RPC, Place
from tsm_deploy.tuning.rpc import RpcConfig, check_tracker, parse_tracker
from tsm_deploy.evaluate.verify import verify_artifact

from ..conftest import CROSS_TOOLS, require_tools, tracked_rpc_server

TARGET = "x86"
RPC_KEY = "tsm-test"
FAST = {"population_size": 64}  # a smaller evolutionary search: seconds per batch instead of tens


def _records(db: Path) -> list[str]:
    return [line for line in (db / DATABASE_FILES[1]).read_text().splitlines() if line.strip()]


def _workloads(db: Path) -> list[str]:
    return [line for line in (db / DATABASE_FILES[0]).read_text().splitlines() if line.strip()]


def _trials(db: Path) -> dict[str, int]:
    return {v["name"]: v["trials"] for v in read_metadata(db).get("tasks", {}).values()}


def _assert_valid_database(db: Path) -> None:
    """Every line parses, and every record points at a workload the workload file holds."""
    workloads = _workloads(db)
    for line in workloads:
        json.loads(line)
    for line in _records(db):
        index = json.loads(line)[0]
        assert 0 <= index < len(workloads)


@pytest.fixture(scope="module")
def rpc_tracker():
    """A real tracker and one RPC server registered under RPC_KEY, on loopback (subprocesses)."""
    with tracked_rpc_server(RPC_KEY) as port:
        yield port


@pytest.fixture(scope="module")
def rpc_database(tmp_path_factory, rpc_tracker, small_checkpoint):
    db = tmp_path_factory.mktemp("tune") / "db"
    seen = []
    summary = tune_model(
        small_checkpoint,
        load_target(TARGET),
        trials_per_task=4,
        database_dir=db,
        place=Place(RPC, address=f"127.0.0.1:{rpc_tracker}", key=RPC_KEY),
        max_tasks=2,
        progress=lambda *args: seen.append(args),
        **FAST,
    )
    return db, summary, seen


@pytest.fixture(scope="module")
def local_database(tmp_path_factory, small_checkpoint):
    """Two tasks tuned on this host (what the tests of records need; the RPC path is rpc_database's)."""
    db = tmp_path_factory.mktemp("tune-local") / "db"
    summary = tune_model(small_checkpoint, load_target(TARGET), trials_per_task=4, database_dir=db, max_tasks=2, **FAST)
    return db, summary


@pytest.mark.slow
@pytest.mark.heavy  # 5.6 min on the 2-core machine (measured 2026-11-22): make test-all
@pytest.mark.rpc
def test_tune_two_tasks_through_rpc_tracker(rpc_database):
    db, summary, seen = rpc_database
    assert summary.tuned_tasks == 2 and summary.tasks > 10
    assert summary.trials == 8 and summary.build_failures == 0
    assert summary.estimated_ms is not None and summary.estimated_ms > 0
    assert len(_workloads(db)) == 2 and len(_records(db)) == summary.records >= 8
    _assert_valid_database(db)
    meta = read_metadata(db)
    assert meta["prepack"] is True and meta["target"] == TARGET and meta["measured_by"] == "rpc"
    (model,) = meta["models"].values()
    assert model["machine_cpu"] == f"RPC key {RPC_KEY}" and model["runs"] == 1
    assert sorted(_trials(db).values()) == [4, 4]
    assert [args[1] for args in seen] == [4, 4] and all(args[3] > 0 for args in seen)
    assert not list(db.parent.glob(".*work*")), "the working copy was not cleaned up"


@pytest.mark.slow
@pytest.mark.heavy  # 5.7 min on the 2-core machine (a tune killed, then two resumes): make test-all
@pytest.mark.rpc
def test_killed_run_leaves_a_valid_database_and_resume_adds_up(rpc_database, small_checkpoint, small_checkpoint_file,
                                                                 tmp_path):
    first, _, _ = rpc_database
    db = tmp_path / "db"
    shutil.copytree(first, db)
    before_records, before_trials = _records(db), _trials(db)

    # a real run in a subprocess, killed (SIGKILL: no cleanup) right after its first checkpoint
    cmd = [sys.executable, "-m", "tsm_deploy.cli", "tune", "--target", TARGET, "--trials", "8", "--max-tasks", "3",
           "--checkpoint", str(small_checkpoint_file), "--input-size", "64", "--tuning-db", str(db)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while _trials(db) == before_trials:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    _assert_valid_database(db)
    killed_records = _records(db)
    assert killed_records[: len(before_records)] == before_records  # appended, never rewritten
    assert len(killed_records) > len(before_records)
    assert sum(_trials(db).values()) > sum(before_trials.values())

    summary = tune_model(small_checkpoint, load_target(TARGET), trials_per_task=8, database_dir=db, max_tasks=3, **FAST)
    _assert_valid_database(db)
    records = _records(db)
    assert records[: len(killed_records)] == killed_records
    assert summary.tuned_tasks == 3 and len(_workloads(db)) == 3
    assert sorted(_trials(db).values()) == [8, 8, 8]  # the trials of all runs add up to the budget
    (model,) = read_metadata(db)["models"].values()
    assert model["runs"] == 3
    # a run with nothing left to do measures nothing and keeps everything
    again = tune_model(small_checkpoint, load_target(TARGET), trials_per_task=8, database_dir=db, max_tasks=3, **FAST)
    assert again.trials == 0 and _records(db) == records


@pytest.mark.slow
def test_compile_applies_tuned_records_and_keeps_parity(local_database, small_checkpoint, tmp_path):
    db, summary = local_database
    assert database_prepack(db)
    result = compile_artifact(small_checkpoint, load_target(TARGET), tmp_path / "art", database=db)
    cov = result.coverage
    assert cov.database == str(db) and cov.tuned == summary.tuned_tasks == 2
    assert cov.tasks == summary.tasks and len(cov.untuned) == cov.tasks - cov.tuned
    assert result.manifest.tuning["tuned"] == 2
    report = verify_artifact(tmp_path / "art", small_checkpoint, frames=4)
    assert report.passed, report.table()


@pytest.mark.slow
def test_compact_keeps_the_best_records(local_database, small_checkpoint, tmp_path):
    first, summary = local_database
    db = tmp_path / "db"
    shutil.copytree(first, db)

    def best(lines):
        out = {}
        for line in lines:
            workload, record = json.loads(line)
            out[workload] = min(out.get(workload, float("inf")), sum(record[1]) / len(record[1]))
        return out

    before = _records(db)
    assert compact_database(db, keep=1) == (len(before), 2)
    _assert_valid_database(db)
    assert best(_records(db)) == best(before)
    result = compile_artifact(small_checkpoint, load_target(TARGET), tmp_path / "art", database=db)
    assert result.coverage.tuned == 2


@pytest.mark.slow
def test_remeasure_replaces_costs_timed_elsewhere(local_database, small_checkpoint, tmp_path):
    """Records whose costs came from a faster machine (here: forged to 1 ns) are re-timed here and the
    stale copies dropped, so a schedule measured here can compete with them."""
    first, _ = local_database
    db = tmp_path / "db"
    shutil.copytree(first, db)
    forged = []
    for line in _records(db):
        workload, record = json.loads(line)
        record[1] = [1e-9]
        forged.append(json.dumps([workload, record]))
    (db / DATABASE_FILES[1]).write_text("".join(line + "\n" for line in forged))

    tune_model(small_checkpoint, load_target(TARGET), trials_per_task=4, database_dir=db, max_tasks=2,
               remeasure=True, **FAST)  # every task already has its 4 trials: re-timing only
    _assert_valid_database(db)
    after = [json.loads(line) for line in _records(db)]
    assert after and all(sum(r[1]) / len(r[1]) > 1e-7 for _, r in after)  # no forged cost left
    per_workload = {}
    for workload, _ in after:
        per_workload[workload] = per_workload.get(workload, 0) + 1
    assert len(per_workload) == 2 and max(per_workload.values()) <= REMEASURE_TOP_K
    tasks = read_metadata(db)["tasks"].values()
    assert all(t["best_us"] > 0.1 and len(t["measured_on"]) == 1 for t in tasks if t.get("best_us"))
    result = compile_artifact(small_checkpoint, load_target(TARGET), tmp_path / "art", database=db)
    assert result.coverage.tuned == 2


@pytest.mark.slow
def test_cli_compile_reports_coverage(local_database, small_checkpoint_file, tmp_path):
    db, _ = local_database
    result = CliRunner().invoke(
        main, ["compile", "--target", TARGET, "--checkpoint", str(small_checkpoint_file), "--input-size", "64",
               "--tuning-db", str(db), "--output", str(tmp_path / "art")]
    )
    assert result.exit_code == 0, result.output
    assert re.search(r"tuned: [\d.]+ % of the model's multiply-accumulates, 2 of \d+ kernels", result.stdout), result.stdout


def test_cpu_fusion_is_channels_last_with_clip_fused(small_checkpoint):
    import tvm

    from tsm_deploy.compiler.pipeline import fuse
    from tsm_deploy.frontend.export import export_onnx
    from tsm_deploy.frontend.relax import import_onnx

    mod = fuse(import_onnx(export_onnx(small_checkpoint.model(), check_ort=False).model), load_target(TARGET).tvm())
    prims = {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)}
    assert not [n for n in prims if n.startswith(("maximum", "minimum", "tir_clip"))]  # ReLU6 fused into the convs
    assert sum("conv2d" in n and "relu" in n and "minimum" in n for n in prims) >= 10
    assert 'R.Tensor((1, 64, 64, 3), dtype="float32")' in mod["main"].script()  # the frame, channels-last


def test_unreachable_tracker_is_one_clear_error(small_checkpoint, tmp_path):
    place = Place(RPC, address="127.0.0.1:1", key=RPC_KEY)
    with pytest.raises(TsmDeployError, match=r"RPC tracker at 127.0.0.1:1 does not answer"):
        tune_model(small_checkpoint, load_target(TARGET), 4, database_dir=tmp_path / "db", place=place)
    assert not (tmp_path / "db").exists()


def test_cli_unreachable_tracker_exits_2(small_checkpoint_file, tmp_path):
    result = CliRunner().invoke(
        main, ["tune", "--target", TARGET, "--trials", "4", "--checkpoint", str(small_checkpoint_file),
               "--rpc-tracker", "127.0.0.1:1", "--rpc-key", RPC_KEY, "--tuning-db", str(tmp_path / "db")]
    )
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == "error: RPC tracker at 127.0.0.1:1 does not answer (Connection refused)"
    assert "Traceback" not in result.output


@pytest.mark.rpc
def test_tracker_without_the_key(rpc_tracker):
    with pytest.raises(TsmDeployError, match="no device registered under key 'no-such-board'"):
        check_tracker(RpcConfig("127.0.0.1", rpc_tracker, "no-such-board"))


@pytest.mark.parametrize("args, message", [
    (["--target", "no-such-target"], "unknown target 'no-such-target'"),
    (["--target", "x86", "--rpc-tracker", "pi"], "--rpc-tracker must be HOST:PORT"),
    (["--target", "x86", "--rpc-key", "k"], "--rpc-key needs --rpc-tracker"),
])
def test_cli_bad_input_exits_2(args, message):
    result = CliRunner().invoke(main, ["tune", "--trials", "4", *args])
    assert result.exit_code == 2 and message in result.stderr


def test_cross_target_needs_a_tracker(small_checkpoint, tmp_path):
    require_tools(*CROSS_TOOLS)
    target = load_target("rasp4")
    with pytest.raises(TsmDeployError, match="RPC tracker"):
        tune_model(small_checkpoint, target, 4, database_dir=tmp_path / "db")


@pytest.mark.parametrize("value", ["pi", "pi:", ":9190", "pi:x", "pi:70000"])
def test_parse_tracker_rejects(value):
    with pytest.raises(TsmDeployError, match="HOST:PORT"):
        parse_tracker(value)


def test_parse_tracker():
    assert parse_tracker("10.0.0.2:9190") == ("10.0.0.2", 9190)


def test_a_record_filed_under_a_renamed_workload_is_dropped_not_fatal(tmp_path):
    """MetaSchedule files a record under the structurally equal workload already stored, though its
    trace names the blocks of the module it was tuned on; such a database no longer loads. The
    records that do not replay are found and left out, the rest still load."""
    import tvm
    from tvm import te
    from tvm.s_tir import Schedule
    from tvm.s_tir import meta_schedule as ms

    from tsm_deploy.target.library import DATABASE_FILES, loadable_database, unreplayable_records

    def row_sum(name: str) -> tvm.IRModule:
        a = te.placeholder((4, 64), name=name)
        k = te.reduce_axis((0, 64), "k")
        return tvm.IRModule({"main": te.create_prim_func([a, te.compute((4,), lambda i: te.sum(a[i, k], axis=k), name=f"{name}_red")])})

    def record(db: object, mod: tvm.IRModule, block: str, factor: int) -> None:
        workload = db.commit_workload(mod)
        sch = Schedule(mod)
        sch.split(sch.get_loops(sch.get_sblock(block))[1], [None, factor])
        db.commit_tuning_record(ms.database.TuningRecord(sch.trace, workload, [1e-6], tvm.target.Target("llvm")))

    files = [str(tmp_path / name) for name in DATABASE_FILES]
    db = ms.database.JSONDatabase(*files, module_equality="structural")
    record(db, row_sum("lv1"), "lv1_red", 8)
    record(db, row_sum("lv2"), "lv2_red", 4)  # same workload, other names: filed under lv1's
    del db
    with pytest.raises(Exception):
        ms.database.JSONDatabase(*files, allow_missing=False, module_equality="structural")
    assert unreplayable_records(tmp_path) == [1]
    # the answer is kept by content: asked again, the same; the files changed, asked afresh
    checks = list((Path(os.environ.get("TSM_DEPLOY_CACHE", Path.home() / ".cache/tsm-deploy")) / "replay-checks").glob("*.json"))
    assert checks and unreplayable_records(tmp_path) == [1]
    usable = loadable_database(tmp_path, tmp_path / "usable")
    assert usable == tmp_path / "usable"
    db = ms.database.JSONDatabase(*(str(usable / n) for n in DATABASE_FILES), allow_missing=False, module_equality="structural")
    assert len(db) == 1
    assert unreplayable_records(usable) == []


def test_small_copies_are_tuned_without_thread_parallelism():
    """A shift's slices + concatenation move ~1e3 elements: a parallel launch costs more than the
    copy, so their search space has no parallel loops; arithmetic and large copies keep the default."""
    import tvm
    from tvm import te
    from tvm.s_tir import meta_schedule as ms

    from tsm_deploy.tuning.loop import _is_small_copy, _serial_rules

    def copy(rows: int) -> tvm.IRModule:
        a = te.placeholder((rows, 64), name="a")
        return tvm.IRModule({"main": te.create_prim_func([a, te.compute((rows, 64), lambda i, j: a[i, j], name="b")])})

    assert _is_small_copy(copy(16), flops=0.0)
    assert not _is_small_copy(copy(16), flops=1e3) and not _is_small_copy(copy(4096), flops=0.0)
    rules = _serial_rules(tvm.target.Target("llvm"))
    pvu = [r for r in rules if isinstance(r, ms.schedule_rule.ParallelizeVectorizeUnroll)]
    assert len(pvu) == 1 and len(rules) == len(ms.schedule_rule.ScheduleRule.create("llvm"))
    space = ms.space_generator.PostOrderApply(sch_rules=rules)
    context = ms.TuneContext(mod=copy(16), target=tvm.target.Target({"kind": "llvm", "num-cores": 2}), space_generator=space)
    for sch in context.generate_design_space():
        assert "meta_schedule.parallel" not in str(sch.mod)


@pytest.mark.heavy
def test_int8_tune_records_integer_kernels_that_compile_finds(tmp_path, small_checkpoint):
    """tune --precision int8 tunes the int8 network's kernels (integer convolutions) into the library, under
    the model's -int8 key, and compile with another calibration of the same model finds them."""
    from tsm_deploy.quantize import calibrate_checkpoint

    db = tmp_path / "db"
    spec = calibrate_checkpoint(small_checkpoint, None, 4)
    tune_model(small_checkpoint, load_target(TARGET), trials_per_task=2, database_dir=db, max_tasks=1, quant=spec,
               **FAST)
    metadata = json.loads((db / "tuning.json").read_text())
    assert any(key.endswith("-int8") for key in metadata["models"])
    assert all("cast" in task["name"] for task in metadata["tasks"].values())  # int32 accumulators cast
    other = calibrate_checkpoint(small_checkpoint, None, 6)  # other scales: the same kernels
    assert other != spec
    result = compile_artifact(small_checkpoint, load_target(TARGET), tmp_path / "art", database=db, quant=other)
    assert result.coverage.tuned >= 1
