"""Build hooks only; the project's metadata is in pyproject.toml.

``targets/`` and ``tuning_logs/`` live at the repository root (the layout the project documents and
commits), outside the ``tsm_deploy`` package, so a plain wheel would leave them out and an installed
``tsm-deploy`` would know no target. ``build_py`` copies both into the built package as
``tsm_deploy/_data/targets`` and ``tsm_deploy/_data/tuning_logs``; ``tsm_deploy.support.resources`` finds
them there when there is no checkout beside the package. ``sdist`` ships both folders so that a
wheel built from the sdist has them too. Nothing is duplicated in git.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

ROOT = Path(__file__).resolve().parent
DATA_FOLDERS = ("targets", "tuning_logs")  # repository-root folders the wheel carries
PACKAGED_AS = Path("tsm_deploy") / "_data"


def _data_files() -> list[Path]:
    """Every regular file of the data folders, relative to the root (no hidden or temporary files)."""
    files = []
    for folder in DATA_FOLDERS:
        base = ROOT / folder
        if not base.is_dir():
            raise SystemExit(f"setup.py: {base} is missing: a tsm-deploy wheel without it would know no target")
        for path in sorted(base.rglob("*")):
            relative = path.relative_to(ROOT)
            if path.is_file() and not path.is_symlink() and not any(part.startswith(".") for part in relative.parts):
                files.append(relative)
    return files


class BuildPyWithData(build_py):
    """build_py, plus the root data folders copied (not linked) into ``tsm_deploy/_data``."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install runs from the checkout, which resources.py finds directly
        for relative in _data_files():
            destination = Path(self.build_lib) / PACKAGED_AS / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / relative, destination)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if getattr(self, "editable_mode", False):
            return outputs
        return outputs + [str(Path(self.build_lib) / PACKAGED_AS / relative) for relative in _data_files()]


class SdistWithData(sdist):
    """sdist, plus the root data folders (no MANIFEST.in needed)."""

    def make_distribution(self) -> None:
        self.filelist.extend(str(relative) for relative in _data_files())
        self.filelist.sort()
        self.filelist.remove_duplicates()
        super().make_distribution()


setup(cmdclass={"build_py": BuildPyWithData, "sdist": SdistWithData})
