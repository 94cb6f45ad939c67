"""The README's "Current figures" block is what scripts/readme_tables.py writes from benchmarks/*.json
(fast: reads JSON and text, compiles nothing)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "readme_tables.py"


def _module():
    spec = importlib.util.spec_from_file_location("readme_tables", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_figures_match_the_committed_benchmarks():
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]


def test_every_committed_benchmark_has_a_table():
    block = _module().tables(ROOT / "benchmarks")
    for path in (ROOT / "benchmarks").glob("*.json"):
        assert f"`benchmarks/{path.name}`" in block, path.name


def test_files_are_read_by_kind_not_name(tmp_path):
    bench = tmp_path / "benchmarks"
    bench.mkdir()
    shutil.copy(ROOT / "benchmarks" / "x86-avx2.json", bench / "some-new-host-run.json")
    shutil.copy(ROOT / "benchmarks" / "rasp4-emulated.json", bench / "another-count.json")
    (bench / "not-a-bench.json").write_text(json.dumps({"hello": 1}))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- figures:begin -->\n<!-- figures:end -->\nafter\n")
    args = ["--readme", str(readme), "--benchmarks", str(bench)]
    module = _module()
    assert module.main(args + ["--check"]) == 1  # the empty block is stale
    assert module.main(args) == 0
    text = readme.read_text()
    assert "`benchmarks/some-new-host-run.json`" in text and "median ms / frame" in text
    assert "`benchmarks/another-count.json`" in text and "M instructions / frame" in text
    assert "not-a-bench" not in text
    assert text.startswith("intro\n") and text.endswith("<!-- figures:end -->\nafter\n")
    assert module.main(args + ["--check"]) == 0
    readme.write_text(text.replace("| 1.00x |", "| 1.01x |", 1))  # a hand edit of a figure
    assert module.main(args + ["--check"]) == 1


def test_the_readme_is_a_short_guide():
    assert len((ROOT / "README.md").read_text().splitlines()) < 300


def test_no_file_numbers_work_periods():
    """The project speaks of itself: no "session 12", "work period 3" or "attempt 2" numbering its
    work in its files (figures are dated and name a commit)."""
    import re

    pattern = re.compile(r"\b(session|work period|period|attempt|sprint|iteration)\s+#?\d+\b", re.IGNORECASE)
    hits = []
    for path in [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "benchmarks").glob("*.md"),
                 *(ROOT / "tsm_deploy").rglob("*.py"), *(ROOT / "scripts").glob("*.py"), *(ROOT / "tests").rglob("*.py")]:
        if path.name == "test_readme.py":
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:80]}")
    assert not hits, "\n".join(hits)
