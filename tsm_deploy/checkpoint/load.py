"""Read a checkpoint file safely and work out the model it belongs to."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from .core import LoadedCheckpoint, check_fits, unused_entries
from .layouts import interpret
from .reader import read_checkpoint_file

log = logging.getLogger("tsm_deploy.checkpoint")


def load_checkpoint(path: str | Path, overrides: Mapping[str, Any] | None = None) -> LoadedCheckpoint:
    """Read a checkpoint safely and work out the model it belongs to.

    ``overrides`` sets what weights cannot tell (``input_size``, ``fold_div``, ``placement``...).
    """
    path = Path(path)
    obj, sha = read_checkpoint_file(path)
    # the file's name and its folder's: the original code names the run folder
    # (``TSM_..._segment8_e50/ckpt.best.pth.tar``), mmengine the work dir after the config
    found = interpret(obj, str(Path(path.parent.name) / path.name), overrides or {})
    check_fits(found.state_dict, found.config)
    skipped = unused_entries(obj)
    if skipped:
        log.info("%s: weights read from 'state_dict'; skipped %s (not needed to compile)", path, ", ".join(skipped))
    log.info("loaded %s checkpoint %s: %s", found.layout, path, found.config)
    return LoadedCheckpoint(config=found.config, state_dict=found.state_dict, source=str(path), sha256=sha,
                            layout=found.layout, labels=found.labels, task=found.task)
