"""Atomic outputs: write next to the destination, then rename, so a crash or a bad input never
leaves a half-written file or artifact behind.

A write that fails for the file system's sake (a full disk, a read-only or vanished directory, no
permission) raises :class:`~tsm_deploy.runtime.errors.WriteFailed`: one line naming the output and
the reason (exit code 2 in the CLI; an ``OSError`` too), with the temporary file or directory gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from ..runtime.errors import TsmDeployError, WriteFailed, describe_os_error


def write_failed(path: Path, exc: OSError) -> WriteFailed:
    """The one-line error for an output ``path`` that ``exc`` kept from being written."""
    return WriteFailed(f"cannot write {path}: {describe_os_error(exc)}")


@contextlib.contextmanager
def _output_errors(path: Path) -> Iterator[None]:
    """OSErrors inside the block (not already ours) -> :func:`write_failed` for ``path``."""
    try:
        yield
    except TsmDeployError:
        raise
    except OSError as exc:
        raise write_failed(path, exc) from None


def check_writable(path: Path) -> None:
    """Fail early, in one line (:func:`write_failed`), when the directory ``path`` would be written in
    (its nearest existing ancestor) cannot take a new entry: read-only, no permission, not a directory.
    Creates nothing that stays. A full disk shows only when the write itself fails."""
    path = Path(path)
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    with _output_errors(path):
        if not parent.is_dir():
            raise NotADirectoryError(20, "Not a directory", str(parent))
        Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)).rmdir()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    with _output_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are meant to be shared and copied
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


@contextlib.contextmanager
def atomic_output_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that wants a file name; rename on success.
    An OSError inside the block is taken as the output's (:func:`write_failed`)."""
    path = Path(path)
    with _output_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            yield Path(tmp)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


@contextlib.contextmanager
def atomic_output_dir(path: Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield an empty temporary directory beside ``path``; on success it replaces ``path``. An OSError
    inside the block is taken as the output's (:func:`write_failed`)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a directory")
    with _output_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            os.chmod(tmp, 0o755)  # mkdtemp makes 0700
            yield tmp
            if path.exists():
                if not overwrite:
                    raise FileExistsError(f"{path} already exists")
                old = path.with_name(f".{path.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
