"""Where the project's data lives: target files, committed tuning records, the default model.

``targets/`` and ``tuning_logs/`` are committed at the repository root (one JSON per target; one
MetaSchedule database per target and model). A wheel cannot install files there, so ``setup.py``
copies both into the built package as ``tsm_deploy/_data/``. Each folder resolves, in order, to:

1. the environment override (``TSM_DEPLOY_TARGETS`` / ``TSM_DEPLOY_TUNING_LOGS``);
2. the repository root, when running from a checkout (editable install, ``PYTHONPATH``): the folder
   exists beside the package and the root holds ``pyproject.toml``;
3. the packaged copy ``tsm_deploy/_data/<folder>`` (a wheel or ``pip install .``).

The default model (``tsm_deploy/default_model/``) is ordinary package data: it is inside the
package in a checkout and in a wheel alike.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # tsm_deploy/ (this file is tsm_deploy/support/)
CHECKOUT_ROOT = PACKAGE_DIR.parent  # the repository root, if this is a checkout
PACKAGED_DATA = PACKAGE_DIR / "_data"  # what setup.py's build_py writes into a wheel

TARGETS_ENV = "TSM_DEPLOY_TARGETS"
TUNING_LOGS_ENV = "TSM_DEPLOY_TUNING_LOGS"


def _is_checkout() -> bool:
    # pyproject.toml beside the package: a checkout. In site-packages there is none, and a
    # stray top-level "targets" folder some other distribution installed must not be taken.
    return (CHECKOUT_ROOT / "pyproject.toml").is_file()


def _resolve(folder: str, env: str | None) -> Path:
    override = os.environ.get(env) if env else None
    if override:
        return Path(override).expanduser()
    in_checkout = CHECKOUT_ROOT / folder
    if _is_checkout() and in_checkout.is_dir():
        return in_checkout
    return PACKAGED_DATA / folder


def data_root() -> Path:
    """The folder holding ``targets/`` and ``tuning_logs/`` (no overrides): the checkout, else ``_data``."""
    if _is_checkout() and (CHECKOUT_ROOT / "targets").is_dir():
        return CHECKOUT_ROOT
    return PACKAGED_DATA


def targets_dir() -> Path:
    """Folder of the target files (``<name>.json``)."""
    return _resolve("targets", TARGETS_ENV)


def tuning_logs_dir() -> Path:
    """Folder of the committed tuning records (``<target folder>/<model key>/database_*.json``)."""
    return _resolve("tuning_logs", TUNING_LOGS_ENV)


def default_model_dir() -> Path:
    """Folder of the default model's files (checkpoint, labels, reports), shipped as package data."""
    return PACKAGE_DIR / "default_model"
