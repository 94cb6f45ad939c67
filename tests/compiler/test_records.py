"""The record libraries: merged by workload, looked up per kernel with fallbacks between compatible
targets, and schedules carried over from the nearest tuned kernel where no record exists."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import tvm
from tvm import te
from tvm.s_tir import Schedule
from tvm.s_tir import meta_schedule as ms

from tsm_deploy.target import targets
from tsm_deploy.compiler.derived import derive_schedules, kernel_shape, refit_tiles
from tsm_deploy.compiler.kernels import is_scheduled, tir_functions
from tsm_deploy.target.targets import load_target
from tsm_deploy.target.library import (
    DATABASE_FILES,
    METADATA_FILE,
    merge_databases,
    open_database,
    read_metadata,
    target_libraries,
    write_metadata,
)

LLVM = tvm.target.Target({"kind": "llvm", "num-cores": 2})


# ------------------------------------------------------------------------------- tile refitting


@pytest.mark.parametrize("extent", [1, 7, 12, 16, 64, 96, 97, 150, 224])
@pytest.mark.parametrize("factors", [[2, 4, 8], [1, 16], [4, 1, 2, 32], [64]])
def test_refit_tiles_covers_the_new_extent_and_keeps_the_vector_limit(extent, factors):
    new = refit_tiles(extent, factors, 16)
    assert len(new) == len(factors) and math.prod(new) == extent and all(f >= 1 for f in new)
    if len(factors) > 1:
        assert new[-1] <= 16


def test_refit_tiles_keeps_what_still_fits():
    assert refit_tiles(64, [2, 4, 8], 16) == [2, 4, 8]  # the extent it was tuned for: unchanged
    assert refit_tiles(96, [2, 4, 8], 16)[1:] == [4, 8]  # inner factors divide: kept
    assert refit_tiles(48, [1, 2, 32], 16)[-1] == 16  # innermost within the rule's limit


# ------------------------------------------------------------------------------- fallbacks


@pytest.mark.parametrize("mcpu,expected", [("znver4", ["x86-avx512", "x86-avx2"]), ("znver3", ["x86-avx2"]),
                                           ("skylake-avx512", ["x86-avx512", "x86-avx2"]), ("haswell", ["x86-avx2"])])
def test_x86_records_valid_on_each_cpu_kind(mcpu, expected):
    assert targets._x86_tuning_logs({"kind": "llvm", "mcpu": mcpu}) == expected


@pytest.mark.parametrize("cpu,own,fallbacks", [("znver4", "x86-avx512", ("x86-avx2",)), ("znver3", "x86-avx2", ())])
def test_detected_x86_uses_its_level_then_the_lower_ones(monkeypatch, cpu, own, fallbacks):
    from tvm.target import codegen

    monkeypatch.setattr(codegen, "llvm_get_system_cpu", lambda: cpu)
    target = load_target("x86")
    assert (target.tuning_logs, target.record_fallbacks) == (own, fallbacks)


def test_target_files_name_their_fallbacks():
    assert load_target("x86-avx512").record_fallbacks == ("x86-avx2",)
    assert load_target("jetson-nano-cpu").record_fallbacks == ("rasp4",)
    assert load_target("x86-avx2").record_fallbacks == ()


def test_libraries_in_order_and_only_those_present(tmp_path):
    for folder in ("x86-avx2", "x86-avx512"):
        (tmp_path / folder).mkdir()
        for name in DATABASE_FILES:
            (tmp_path / folder / name).touch()
    assert [lib.name for lib in target_libraries(load_target("x86-avx512"), root=tmp_path)] == ["x86-avx512", "x86-avx2"]
    (tmp_path / "x86-avx512" / DATABASE_FILES[1]).unlink()
    assert [lib.name for lib in target_libraries(load_target("x86-avx512"), root=tmp_path)] == ["x86-avx2"]


def test_a_fallback_naming_an_unknown_target_is_one_line(tmp_path, monkeypatch):
    spec = json.loads((targets.TARGETS_DIR / "x86-avx512.json").read_text())
    spec["record_fallbacks"] = ["no-such-target"]
    path = tmp_path / "t.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(targets.TsmDeployError, match="record_fallbacks names 'no-such-target'"):
        load_target(str(path))


# ------------------------------------------------------------------------------- merging


def _row_sum(rows: int, cols: int, name: str = "a") -> tvm.IRModule:
    a = te.placeholder((rows, cols), name=name)
    k = te.reduce_axis((0, cols), "k")
    red = te.compute((rows,), lambda i: te.sum(a[i, k], axis=k), name=f"{name}_red")
    return tvm.IRModule({"main": te.create_prim_func([a, red]).with_attr("global_symbol", "main")})


def _tuned(db, mod: tvm.IRModule, factor: int, cost: float) -> None:
    """A record as tuning leaves one: the split factor sampled (a decision), a measured cost."""
    sch = Schedule(mod)
    block = sch.get_sblock(next(b for b in ("a_red", "b_red")))
    loop = sch.get_loops(block)[0]
    outer, inner = sch.split(loop, sch.sample_perfect_tile(loop, n=2, max_innermost_factor=64, decision=[
        int(mod["main"].params[1].shape[0]) // factor, factor]))
    sch.parallel(outer)
    db.commit_tuning_record(ms.database.TuningRecord(sch.trace, db.commit_workload(mod), [cost], LLVM))


def _database(path, records, model=None, prepack=True):
    path.mkdir()
    db = ms.database.JSONDatabase(*(str(path / n) for n in DATABASE_FILES), module_equality="structural")
    for mod, factor, cost in records:
        _tuned(db, mod, factor, cost)
    del db
    meta = {"prepack": prepack, "measured_by": "local", "machine_cpu": "test CPU", "runs": 1,
            "tasks": {"1": {"name": "row_sum", "trials": 8, "weight": 1, "best_us": 2.0}}}
    if model:
        meta["model"] = model
    write_metadata(path, meta)
    return path


def test_merge_files_records_by_workload_and_adds_up_trials(tmp_path):
    small, large = _row_sum(32, 64), _row_sum(64, 64)
    first = _database(tmp_path / "a", [(small, 8, 3e-6), (small, 4, 2e-6)], model={"arch": "tsm_mobilenet_v2_online", "n_class": 11})
    second = _database(tmp_path / "b", [(small, 16, 1e-6), (large, 8, 5e-6)], model={"arch": "tsm_mobilenet_v2_online", "n_class": 27})
    library = tmp_path / "lib"
    summary = merge_databases([first, second], library, keep=2)
    assert (summary.records_added, summary.workloads, summary.records) == (4, 2, 3)
    db = open_database(library)
    best = db.get_top_k(db.commit_workload(small), 5)
    assert [float(r.run_secs[0]) for r in best] == [1e-6, 2e-6]  # the two best of three, from both sources
    meta = read_metadata(library)
    assert sorted(meta["models"]) == ["tsm_mobilenet_v2_online-s224-w1-f8-c11", "tsm_mobilenet_v2_online-s224-w1-f8-c27"]
    assert meta["tasks"]["1"]["trials"] == 16 and meta["prepack"] is True
    assert meta["tasks"]["1"]["models"] == sorted(meta["models"])
    merge_databases([second], library, keep=2)  # merging again keeps the library loadable and bounded
    assert len(open_database(library)) <= 4


def test_merge_refuses_databases_that_do_not_mix(tmp_path):
    lib = _database(tmp_path / "lib", [(_row_sum(8, 8), 2, 1e-6)])
    other = _database(tmp_path / "other", [(_row_sum(8, 8), 4, 1e-6)], prepack=False)
    with pytest.raises(targets.TsmDeployError, match="prepack"):
        merge_databases([other], lib)
    counts = _database(tmp_path / "counts", [(_row_sum(8, 8), 4, 1e-6)])
    meta = read_metadata(counts)
    write_metadata(counts, {**meta, "measured_by": "emulated-instructions"})
    with pytest.raises(targets.TsmDeployError, match="do not mix"):
        merge_databases([counts], lib)
    assert (lib / METADATA_FILE).is_file()


# ------------------------------------------------------------------------------- derived schedules


def test_a_kernel_without_a_record_takes_the_nearest_tuned_schedule_and_computes_the_same(tmp_path):
    tuned_near, tuned_far, new = _row_sum(64, 128), _row_sum(8, 8), _row_sum(96, 128)
    db = ms.database.MemoryDatabase(module_equality="structural")
    _tuned(db, tuned_near, 16, 1e-6)
    _tuned(db, tuned_far, 2, 1e-6)
    mod = tvm.IRModule({"row_sum_96": new["main"].with_attr("global_symbol", "row_sum_96")})
    assert kernel_shape(new).signature == kernel_shape(tuned_near).signature
    scheduled, derived = derive_schedules(mod, LLVM, ["row_sum_96"], [("lib", db, {})])
    assert len(derived) == 1 and derived[0][0] == "row_sum_96"
    func = tir_functions(scheduled)["row_sum_96"]
    assert is_scheduled(func)
    text = func.script()
    assert "T.parallel" in text  # the tuned structure came along
    lib = tvm.tirx.build(func.with_attr("global_symbol", "row_sum_96"), target="llvm")
    data = np.random.default_rng(0).standard_normal((96, 128)).astype("float32")
    out = tvm.runtime.tensor(np.zeros(96, "float32"))
    lib(tvm.runtime.tensor(data), out)
    np.testing.assert_allclose(out.numpy(), data.sum(axis=1), rtol=1e-5, atol=1e-5)


def test_no_kernel_of_the_same_kind_leaves_the_default_schedule():
    a = te.placeholder((16, 16), name="a")
    doubled = te.compute((16, 16), lambda i, j: a[i, j] * 2, name="doubled")
    mod = tvm.IRModule({"double": te.create_prim_func([a, doubled]).with_attr("global_symbol", "double")})
    db = ms.database.MemoryDatabase(module_equality="structural")
    _tuned(db, _row_sum(64, 64), 8, 1e-6)
    scheduled, derived = derive_schedules(mod, LLVM, ["double"], [("lib", db, {})])
    assert derived == [] and not is_scheduled(tir_functions(scheduled)["double"])


# ------------------------------------------------------------------------------- whole models


@pytest.mark.slow
@pytest.mark.heavy  # 168 s on the loaded 2-core machine (2026-12-03); test_wheel covers the lookup in CI
def test_a_class_count_never_tuned_compiles_from_the_library_and_keeps_parity(tmp_path, small_checkpoint_file):
    """The small test model differs from the default model only in its class count (10, not 11): every
    convolution is a kernel the x86-avx2 library holds; only the classifier is new."""
    from click.testing import CliRunner

    from tsm_deploy.checkpoint import load_checkpoint
    from tsm_deploy.cli import main
    from tsm_deploy.evaluate.verify import verify_artifact
    from tsm_deploy.runtime.manifest import read_manifest

    art = tmp_path / "art"
    result = CliRunner().invoke(main, ["compile", "--checkpoint", str(small_checkpoint_file), "--target", "x86-avx2",
                                       "--output", str(art)])
    assert result.exit_code == 0, result.output
    tuning = read_manifest(art).tuning
    assert tuning["tuned_fraction"] >= 0.95 and tuning["by_library"]["x86-avx2"] >= tuning["tasks"] - 3, tuning
    assert re.search(r"tuned: 9\d\.\d % of the model's multiply-accumulates, \d+ of \d+ kernels \(x86-avx2 library\)",
                     result.stdout), result.stdout
    if tuning["untuned"]:  # the classifier: named, with the command that tunes exactly it
        assert "to tune exactly those: tsm-deploy tune --target x86-avx2 --checkpoint" in result.stdout
    report = verify_artifact(art, load_checkpoint(small_checkpoint_file), frames=4)
    assert report.passed and report.top1_agreement == 1.0, report.table()


@pytest.mark.slow
@pytest.mark.heavy  # tunes (never in CI): make test-all
def test_tune_fills_only_what_the_library_is_missing(tmp_path, small_checkpoint):
    from tsm_deploy.tuning.loop import tune_model

    library = tmp_path / "lib"
    fast = {"population_size": 64, "trials_per_iter": 4}
    first = tune_model(small_checkpoint, load_target("x86"), 4, database_dir=library, max_tasks=2, **fast)
    before = read_metadata(library)["tasks"]
    tuned_first = {k for k, v in before.items() if v.get("best_us")}
    assert len(tuned_first) == 2, first
    second = tune_model(small_checkpoint, load_target("x86"), 4, database_dir=library, max_tasks=4,
                        missing_only=True, **fast)
    after = read_metadata(library)["tasks"]
    for key in tuned_first:  # what the library had was not tuned again
        assert after[key]["trials"] == before[key]["trials"]
    assert len({k for k, v in after.items() if v.get("best_us")}) > len(tuned_first)
    assert second.tuned_fraction > first.tuned_fraction
