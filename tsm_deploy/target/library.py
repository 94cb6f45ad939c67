"""The record libraries on disk: one MetaSchedule database per target, shared by every model.

Layout: ``tuning_logs/<target tuning_logs>/`` holding MetaSchedule's two JSON-lines files
(``database_workload.json``, ``database_tuning_record.json``) and ``tuning.json``. A record is found
by its kernel's structure (the workload), so a model shares every kernel it has in common with what
was tuned, whatever its class count, checkpoint layout or file name. ``tuning.json`` says how the
records were made: the target, prepacking, the TVM version, per workload (``tasks``, keyed by its
structural hash) its name, trials, best cost, the models it was tuned for and what measured it, and
per model (``models``, keyed by :func:`model_key`) its configuration and tuning runs. This module is
the only one that knows these names; compile, tune, bench and ``targets`` ask it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..errors import TsmDeployError
from ..models import ModelConfig, model_spec
from ..runtime.manifest import sha256_file
from ..support.atomic import atomic_write_text
from ..support.resources import tuning_logs_dir

log = logging.getLogger(__name__)

DATABASE_FILES = ("database_workload.json", "database_tuning_record.json")
METADATA_FILE = "tuning.json"
DEFAULT_KEEP = 16  # records kept per workload by compaction


def model_key(config: ModelConfig, precision: str = "fp32") -> str:
    """A model's name in a library's ``tuning.json``: everything that changes its kernels.

    Architecture (which fixes the shift direction: ``*_online`` is uni-directional), input size,
    width, fold, classes; for clip models the segments and temporal pooling; a non-default
    placement; no shift; ``-int8`` for the quantized network.
    """
    key = f"{config.arch}-s{config.input_size}-w{config.width_mult:g}-f{config.fold_div}-c{config.n_class}"
    if model_spec(config.arch).io_kind == "clip":
        key += f"-t{config.n_segment}" + ("-tpool" if config.temporal_pool else "")
    if config.placement != "residual":
        key += f"-{config.placement}"
    key = key if config.shift else key + "-noshift"
    return key if precision == "fp32" else f"{key}-{precision}"


@dataclass(frozen=True)
class RecordLibrary:
    """A database of tuning records and what to call it in reports (the folder: the target it is for)."""

    name: str
    path: Path


def target_libraries(target: Any, root: Path | None = None) -> list[RecordLibrary]:
    """The libraries whose records a target uses, in order: its own, then those its target file names
    as valid on it (``record_fallbacks``). Those that do not exist are left out."""
    folders = [f for f in (target.tuning_logs, *target.record_fallbacks) if f]
    libraries = [RecordLibrary(f, library_dir(f, root)) for f in dict.fromkeys(folders)]
    return [lib for lib in libraries if has_database(lib.path)]


class _TargetRecords:
    """What a target compiles with unless told otherwise: its own library, then its ``record_fallbacks``."""

    def __repr__(self) -> str:
        return "TARGET_RECORDS"


TARGET_RECORDS = _TargetRecords()
RecordsSpec = Any  # TARGET_RECORDS | None (no records) | a database directory | a sequence of them


def libraries_for(target: Any, records: RecordsSpec) -> list[RecordLibrary]:
    """The one answer to "where are this target's records": :data:`TARGET_RECORDS` -> the target's own
    library, then its fallbacks; a directory or a sequence of them -> those, in order; None -> none."""
    if records is None:
        return []
    if records is TARGET_RECORDS:
        libraries = target_libraries(target)
        if not libraries and target.tuning_logs is not None:
            log.warning("no tuning records for %s at %s: compiling with derived and default schedules (slow)",
                        target.name, library_dir(target.tuning_logs))
        return libraries
    paths = [records] if isinstance(records, (str, Path)) else list(records)
    libraries = [RecordLibrary(Path(p).name, Path(p)) for p in paths]
    for lib in libraries:
        if not has_database(lib.path):
            log.warning("no tuning database at %s", lib.path)
    return libraries


def workload_key(mod: Any) -> str:
    """A workload's key in ``tuning.json``: its structural hash, unsigned (task names repeat across models)."""
    import tvm_ffi

    return str(tvm_ffi.structural_hash(mod) & 0xFFFFFFFFFFFFFFFF)


def library_dir(tuning_logs: str | None, root: Path | None = None) -> Path | None:
    """The record library of a target whose ``tuning_logs`` folder is given (None: it has none)."""
    if tuning_logs is None:
        return None
    return (root or tuning_logs_dir()) / tuning_logs


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


def compact_database(path: Path, keep: int = DEFAULT_KEEP) -> tuple[int, int]:
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


def _content_key(path: Path) -> str:
    """The TVM version and the database files' sha256: what a replay check's answer depends on."""
    import tvm

    parts = [tvm.__version__, *(sha256_file(Path(path) / name) for name in DATABASE_FILES)]
    return hashlib.sha256(" ".join(parts).encode()).hexdigest()[:32]


def unreplayable_records(path: Path) -> list[int]:
    """Line numbers of the records whose schedule trace does not replay on the workload they are filed
    under. MetaSchedule files a record under the structurally equal workload already in the database,
    but its trace names blocks by the names of the module it was tuned on; one such record makes the
    whole database fail to load. (Tuning here tunes the stored module, so it writes none.)

    Replaying every record of a committed library takes tens of seconds, so the answer is kept in the
    user's cache (``replay-checks/``), keyed by the files' content: a compile checks a library once."""
    from ..support.tools import resolve_cache_dir

    path = Path(path)
    cached = resolve_cache_dir(None) / "replay-checks" / f"{_content_key(path)}.json"
    try:
        return [int(n) for n in json.loads(cached.read_text())]
    except (OSError, ValueError, TypeError):
        pass
    bad = _replay_all(path)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cached, json.dumps(bad))
    except (OSError, TsmDeployError):  # an unwritable cache only costs the next compile the check again
        log.debug("could not keep the replay check of %s in %s", path, cached)
    return bad


def _replay_all(path: Path) -> list[int]:
    from tvm.s_tir import meta_schedule as ms

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

        from ..support.atomic import atomic_write_bytes

        for name in DATABASE_FILES:
            atomic_write_bytes(self.dir / name, (self.work / name).read_bytes())
        self.metadata["updated"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        write_metadata(self.dir, self.metadata)

    def records(self) -> int:
        with open(self.work / DATABASE_FILES[1], "rb") as f:
            return sum(1 for line in f if line.strip())

    def keep_only_from(self, first: int) -> int:
        """For every workload with a record at or after record ``first`` (re-timed copies), drop its
        records before it, and reopen the database. -> records dropped."""
        path = self.work / DATABASE_FILES[1]
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        retimed = {json.loads(line)[0] for line in lines[first:]}
        kept = [line for n, line in enumerate(lines) if n >= first or json.loads(line)[0] not in retimed]
        atomic_write_text(path, "".join(line + "\n" for line in kept))
        self.database = self._open()
        return len(lines) - len(kept)

    def close(self) -> None:
        import shutil

        shutil.rmtree(self.work, ignore_errors=True)


_OPENED: dict[tuple, Any] = {}  # (path, the files' size and mtime) -> database, the last few opened
_OPENED_KEEP = 3


def open_database(path: Path, scratch: Path | None = None) -> Any:
    """A MetaSchedule JSON database of ``path`` (structural workload equality), read once: records
    that do not replay are left out (see :func:`loadable_database`; ``scratch`` holds the copy).

    Reading a committed library takes tens of seconds, and compile, bench's baseline and the tests
    read the same ones again and again: the last few opened stay in this process while their files
    are unchanged (compile only queries them)."""
    from tvm.s_tir import meta_schedule as ms

    path = Path(path)
    stats = tuple((s.st_size, s.st_mtime_ns) for s in ((path / name).stat() for name in DATABASE_FILES))
    key = (str(path.resolve()), stats, scratch is not None)
    if key in _OPENED:
        return _OPENED[key]
    source = loadable_database(path, scratch) if scratch is not None else path
    database = ms.database.JSONDatabase(
        path_workload=str(source / DATABASE_FILES[0]),
        path_tuning_record=str(source / DATABASE_FILES[1]),
        module_equality="structural",
    )
    _OPENED[key] = database
    while len(_OPENED) > _OPENED_KEEP:
        _OPENED.pop(next(iter(_OPENED)))
    return database


@contextlib.contextmanager
def library_lock(path: Path) -> Iterator[None]:
    """Held while a tune or a merge writes the library at ``path``: each of them replaces the whole
    files at every commit, so two at once would drop each other's records. The lock file lives in
    the system temp dir (nothing is left in ``tuning_logs/``); a second writer waits."""
    digest = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"tsm-deploy-library-{digest}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("another tune or merge is writing %s: waiting for it", path)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def measurement_kind(metadata: dict[str, Any]) -> str | None:
    """What the costs in a database are: ``emulated-instructions`` (counts) or ``time`` (seconds,
    measured here or over RPC); None for an empty one. A library holds one kind: costs of two kinds
    cannot be compared when the best record of a workload is picked."""
    kind = metadata.get("measured_by")
    if kind is None:
        return None
    return "emulated-instructions" if kind == "emulated-instructions" else "time"


def merge_task_entry(into: dict[str, Any], entry: dict[str, Any], model: str | None, measured_on: str | None) -> None:
    """Add a workload's ``tuning.json`` entry from another database: trials add up (both searches left
    records), the best cost is the lower, the models and machines are the union."""
    into.setdefault("name", entry.get("name"))
    into["weight"] = max(int(into.get("weight", 0)), int(entry.get("weight", 0)))
    into["trials"] = int(into.get("trials", 0)) + int(entry.get("trials", 0))
    costs = [c for c in (into.get("best_us"), entry.get("best_us")) if c is not None]
    into["best_us"] = min(costs) if costs else None
    for key, value in (("models", model), ("measured_on", measured_on)):
        values = set(into.get(key, [])) | set(entry.get(key, []))
        if value:
            values.add(value)
        into[key] = sorted(values)


@dataclass(frozen=True)
class MergeSummary:
    library: Path
    sources: int
    records_added: int
    records_dropped: int  # did not replay on the library's structurally equal workload
    workloads: int
    records: int  # after compaction


def merge_databases(sources: Sequence[Path], library: Path, keep: int = DEFAULT_KEEP) -> MergeSummary:
    """Merge the MetaSchedule databases ``sources`` (a per-model folder, another library) into the
    library at ``library``, then keep the ``keep`` best records per workload. Crash safe: the library
    is replaced by rename, workloads before records, ``tuning.json`` last."""
    from tvm.s_tir import Schedule
    from tvm.s_tir import meta_schedule as ms

    library = Path(library)
    with library_lock(library), tempfile.TemporaryDirectory(prefix="tsm-merge-") as scratch:
        work = Path(scratch) / "library"
        work.mkdir()
        for name in DATABASE_FILES:
            (work / name).write_bytes((library / name).read_bytes() if (library / name).is_file() else b"")
        metadata = read_metadata(library)
        dest = open_database(work)
        added = dropped = 0
        for n, source in enumerate(sources):
            source = Path(source)
            meta = read_metadata(source)
            _check_compatible(metadata, meta, source, library)
            db = open_database(source, Path(scratch) / f"source-{n}")
            for record in db.get_all_tuning_records():
                workload = dest.commit_workload(record.workload.mod)
                try:  # the trace names blocks of the module it was tuned on: it must replay on this one
                    record.trace.apply_to_schedule(Schedule(workload.mod), remove_postproc=False)
                except Exception:  # noqa: BLE001 - ScheduleError/ValueError alike: leave the record out
                    dropped += 1
                    continue
                dest.commit_tuning_record(ms.database.TuningRecord(
                    record.trace, workload, record.run_secs, record.target, record.args_info))
                added += 1
            _merge_metadata(metadata, meta)
        del dest  # the JSON database appends as it goes: its files are complete here
        before, after = compact_database(work, keep)
        library.mkdir(parents=True, exist_ok=True)
        from ..support.atomic import atomic_write_bytes

        for name in DATABASE_FILES:
            atomic_write_bytes(library / name, (work / name).read_bytes())
        write_metadata(library, metadata)
        workloads = sum(1 for line in (library / DATABASE_FILES[0]).read_text().splitlines() if line.strip())
    if dropped:
        log.warning("merge into %s: %d records left out (they do not replay on the library's workloads)", library, dropped)
    return MergeSummary(library, len(sources), added, dropped, workloads, after)


def _check_compatible(metadata: dict[str, Any], meta: dict[str, Any], source: Path, library: Path) -> None:
    for key in ("prepack",):
        if key in metadata and key in meta and bool(metadata[key]) != bool(meta[key]):
            raise TsmDeployError(f"{source} was tuned with {key}={meta[key]}, the library {library} with {metadata[key]}")
    mine, theirs = measurement_kind(metadata), measurement_kind(meta)
    if mine and theirs and mine != theirs:
        raise TsmDeployError(f"{source} holds costs of kind {theirs}, the library {library} of kind {mine}: they do not mix")


def _merge_metadata(metadata: dict[str, Any], meta: dict[str, Any]) -> None:
    """Fold a source's ``tuning.json`` (a per-model folder's or a library's) into the library's."""
    for key in ("target", "tvm_target", "prepack", "tvm_version", "measured_by"):
        if key in meta:
            metadata.setdefault(key, meta[key])
    models = metadata.setdefault("models", {})
    model = None
    if "model" in meta:  # a per-model folder: one model, tuned in `runs` runs
        config = ModelConfig.from_dict(meta["model"])
        model = model_key(config)
        entry = models.setdefault(model, {"config": config.to_dict(), "runs": 0})
        entry["runs"] = int(entry.get("runs", 0)) + int(meta.get("runs", 1))
        for key in ("started", "updated", "machine_cpu", "measured_by", "trials_per_task"):
            if key in meta:
                entry[key] = meta[key]
    for key, entry in meta.get("models", {}).items():
        models.setdefault(key, dict(entry))
    if model is None and len(meta.get("models", {})) == 1:  # a tune run's own database: its one model
        model = next(iter(meta["models"]))
    tasks = metadata.setdefault("tasks", {})
    for key, entry in meta.get("tasks", {}).items():
        machine = meta.get("machine_cpu") or meta.get("models", {}).get(model, {}).get("machine_cpu")
        merge_task_entry(tasks.setdefault(key, {}), entry, model, machine)
