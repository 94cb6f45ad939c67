#!/usr/bin/env python
"""Merge tuning databases into a target's record library (``tuning_logs/<target>/``).

    .venv/bin/python scripts/merge_records.py x86-avx2 /path/to/db [/path/to/db ...]
    .venv/bin/python scripts/merge_records.py x86-avx2 --subfolders   # fold tuning_logs/x86-avx2/*/ in

A source is any MetaSchedule database folder (a tune run's ``--tuning-db``, a per-model folder,
another library). Records are filed by workload, trials and models are added to ``tuning.json``,
and the library keeps the best ``--keep`` records per workload. With ``--subfolders`` the merged
per-model folders under the library are removed once the library holds their records.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tsm_deploy.errors import TsmDeployError  # noqa: E402
from tsm_deploy.target.library import DEFAULT_KEEP, has_database, library_dir, merge_databases  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("library", help="tuning_logs folder of the target (e.g. x86-avx2)")
    parser.add_argument("sources", nargs="*", type=Path)
    parser.add_argument("--subfolders", action="store_true", help="merge (and then remove) the library's per-model subfolders")
    parser.add_argument("--keep", type=int, default=DEFAULT_KEEP, help="records kept per workload")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    library = library_dir(args.library)
    sources = list(args.sources)
    if args.subfolders:
        sources += sorted(p for p in library.iterdir() if p.is_dir() and has_database(p))
    missing = [s for s in sources if not has_database(s)]
    if missing or not sources:
        print(f"error: not a tuning database: {missing[0] if missing else '(no sources given)'}", file=sys.stderr)
        return 2
    try:
        summary = merge_databases(sources, library, keep=args.keep)
    except TsmDeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{library}: {summary.records_added} records merged from {summary.sources} databases "
          f"({summary.records_dropped} left out), {summary.workloads} workloads, {summary.records} records kept")
    if args.subfolders:
        for source in sources:
            if source.parent == library:
                shutil.rmtree(source)
    return 0


if __name__ == "__main__":
    sys.exit(main())
