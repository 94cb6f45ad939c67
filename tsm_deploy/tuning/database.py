"""The tuning database on disk: one folder per (target, model), and ``tuning.json`` beside it.

Layout: ``tuning_logs/<target tuning_logs>/<model key>/`` holding MetaSchedule's two JSON-lines files
(``database_workload.json``, ``database_tuning_record.json``) and ``tuning.json`` (how the records
were made: target, prepacking, trials per task, machine or meter, TVM version). This module is the
only one that knows these names; compile, tune, bench and ``targets`` ask it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..models import ModelConfig, model_spec
from ..resources import tuning_logs_dir

log = logging.getLogger(__name__)

DATABASE_FILES = ("database_workload.json", "database_tuning_record.json")
METADATA_FILE = "tuning.json"


def model_key(config: ModelConfig) -> str:
    """Folder name of a model's records: everything that changes the tuned kernels.

    Architecture (which fixes the shift direction: ``*_online`` is uni-directional), input size,
    width, fold, classes; for clip models the segments and temporal pooling; a non-default
    placement; no shift. float32 is the only dtype so far (a quantized model adds ``-int8``).
    Defaults add nothing, so the committed folders' names stay stable.
    """
    key = f"{config.arch}-s{config.input_size}-w{config.width_mult:g}-f{config.fold_div}-c{config.n_class}"
    if model_spec(config.arch).io_kind == "clip":
        key += f"-t{config.n_segment}" + ("-tpool" if config.temporal_pool else "")
    if config.placement != "residual":
        key += f"-{config.placement}"
    return key if config.shift else key + "-noshift"


def database_dir(tuning_logs: str | None, config: ModelConfig, root: Path | None = None) -> Path | None:
    """Where the records of ``config`` for a target whose ``tuning_logs`` folder is given live."""
    if tuning_logs is None:
        return None
    return (root or tuning_logs_dir()) / tuning_logs / model_key(config)


def has_database(path: Path | None) -> bool:
    return path is not None and all((Path(path) / name).is_file() for name in DATABASE_FILES)


def read_metadata(path: Path | None) -> dict[str, Any]:
    """``tuning.json`` of a database folder; ``{}`` when absent or unreadable."""
    if path is None:
        return {}
    try:
        data = json.loads((Path(path) / METADATA_FILE).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def write_metadata(path: Path, metadata: dict[str, Any]) -> None:
    atomic_write_text(Path(path) / METADATA_FILE, json.dumps(metadata, indent=1, sort_keys=True) + "\n")


def database_prepack(path: Path | None) -> bool:
    """Whether the database was tuned with weight prepacking (its ``tuning.json`` says so)."""
    return bool(read_metadata(path).get("prepack", False))


def compact_database(path: Path, keep: int = 16) -> tuple[int, int]:
    """Keep only the ``keep`` fastest records of each workload (a committed database of every trial
    grows by ~14 KB a trial). Never called by tuning itself, which only ever appends; a compacted
    database still resumes (the search restarts from the best records it keeps). -> (before, after)."""
    records = Path(path) / DATABASE_FILES[1]
    lines = [line for line in records.read_text().splitlines() if line.strip()]
    by_workload: dict[int, list[tuple[float, int]]] = {}
    for n, line in enumerate(lines):
        workload, record = json.loads(line)
        secs = record[1] if len(record) > 1 and record[1] else None
        cost = sum(float(s) for s in secs) / len(secs) if secs else float("inf")
        by_workload.setdefault(workload, []).append((cost, n))
    kept = sorted(n for recs in by_workload.values() for _, n in sorted(recs)[:keep])
    atomic_write_text(records, "".join(lines[n] + "\n" for n in kept))
    return len(lines), len(kept)


def unreplayable_records(path: Path) -> list[int]:
    """Line numbers of the records whose schedule trace does not replay on the workload they are filed
    under. MetaSchedule files a record under the structurally equal workload already in the database,
    but its trace names blocks by the names of the module it was tuned on; one such record makes the
    whole database fail to load. (Tuning here tunes the stored module, so it writes none.)"""
    from tvm.s_tir import meta_schedule as ms

    path = Path(path)
    workloads: list[Any] = []
    for line in (path / DATABASE_FILES[0]).read_text().splitlines():
        workloads.append(ms.database.Workload.from_json(json.loads(line)) if line.strip() else None)
    bad = []
    for n, line in enumerate((path / DATABASE_FILES[1]).read_text().splitlines()):
        if not line.strip():
            continue
        index, record = json.loads(line)
        try:
            ms.database.TuningRecord.from_json(record, workloads[index])
        except Exception:  # noqa: BLE001 - TVM raises ScheduleError/ValueError/IndexError alike
            bad.append(n)
    return bad


def drop_records(path: Path, lines: list[int], dest: Path | None = None) -> None:
    """Write the database at ``path`` (or a copy at ``dest``) without the record ``lines``."""
    dest = Path(dest or path)
    dest.mkdir(parents=True, exist_ok=True)
    drop = set(lines)
    kept = [line for n, line in enumerate((Path(path) / DATABASE_FILES[1]).read_text().splitlines()) if n not in drop]
    if dest != Path(path):
        atomic_write_text(dest / DATABASE_FILES[0], (Path(path) / DATABASE_FILES[0]).read_text())
    atomic_write_text(dest / DATABASE_FILES[1], "".join(line + "\n" for line in kept))


def loadable_database(path: Path, scratch: Path) -> Path:
    """``path`` if all its records replay, else a copy in ``scratch`` (``path`` itself: in place)
    without those that do not, with a warning: a stale record must not stop a compile or a resume."""
    bad = unreplayable_records(path)
    if not bad:
        return Path(path)
    log.warning("tuning database %s: %d records do not replay on their workloads; using the others", path, len(bad))
    drop_records(path, bad, Path(scratch))
    return Path(scratch)


class WorkingCopy:
    """The database being tuned: a working copy in the system temp dir (a killed run leaves no litter
    in tuning_logs/), copied over the committed files by rename at every :meth:`commit`: workloads
    first, then records (records only ever refer to committed workloads), then ``tuning.json``."""

    def __init__(self, path: Path, metadata: dict[str, Any]) -> None:
        import shutil
        import tempfile

        self.dir = Path(path)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix=f"tsm-tune-{self.dir.name}-"))
        for name in DATABASE_FILES:
            src = self.dir / name
            if src.is_file():
                shutil.copyfile(src, self.work / name)
            else:
                (self.work / name).touch()
        self.metadata = metadata
        try:
            self.database = self._open()
        except Exception:  # noqa: BLE001 - resume past records that do not replay (unreplayable_records)
            loadable_database(self.work, self.work)
            self.database = self._open()

    def _open(self) -> Any:
        from tvm.s_tir import meta_schedule as ms

        return ms.database.JSONDatabase(
            path_workload=str(self.work / DATABASE_FILES[0]),
            path_tuning_record=str(self.work / DATABASE_FILES[1]),
            module_equality="structural",
        )

    def commit(self) -> None:
        import datetime

        from ..atomic import atomic_write_bytes

        for name in DATABASE_FILES:
            atomic_write_bytes(self.dir / name, (self.work / name).read_bytes())
        self.metadata["updated"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        write_metadata(self.dir, self.metadata)

    def records(self) -> int:
        with open(self.work / DATABASE_FILES[1], "rb") as f:
            return sum(1 for line in f if line.strip())

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.work, ignore_errors=True)
