"""Read a checkpoint file safely: ``torch.load(..., weights_only=True)`` (a .pth from the internet must
not run code), and one clear line for every way a file can be wrong (missing, a directory, empty,
truncated, not a checkpoint, code-carrying), with torch's own warnings kept off the user's terminal."""

from __future__ import annotations

import hashlib
import io
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from ..errors import TsmDeployError, one_line


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_checkpoint_file(path: Path) -> tuple[Any, str]:
    """-> (the unpickled object: tensors and plain containers only, sha256 of the file)."""
    path = Path(path)
    if not path.exists():
        raise TsmDeployError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise TsmDeployError(f"checkpoint is not a file: {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TsmDeployError(f"cannot read checkpoint {path}: {exc.strerror or type(exc).__name__}") from None
    if not data:
        raise TsmDeployError(f"cannot read checkpoint {path}: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about legacy/odd files before it fails on them
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        blocked = re.search(r"GLOBAL (\S+)", str(exc))
        if blocked:
            raise TsmDeployError(
                f"refusing to load {path}: it references {blocked.group(1)}, not only tensors and plain containers "
                "(loading it could run code)"
            ) from None
        raise TsmDeployError(f"cannot read checkpoint {path}: not a PyTorch checkpoint or truncated") from None
    except Exception as exc:  # noqa: BLE001 - torch raises KeyError/RuntimeError/EOFError/... on garbage
        raise TsmDeployError(
            f"cannot read checkpoint {path}: not a PyTorch checkpoint or truncated ({type(exc).__name__}: {one_line(exc)[:120]})"
        ) from None
    return obj, sha256_bytes(data)
