"""Host tools for the device side (cross builds, QEMU, guest roots): cache layout, tool lookup, logged
build steps, atomic cache entries."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ..errors import TsmDeployError

logger = logging.getLogger("tsm_deploy.device")

Progress = Callable[[str], None]


class ToolchainMissing(TsmDeployError):
    """A host tool the device build needs is not installed; the message names its Debian package."""


def resolve_cache_dir(cache_dir: Path | None) -> Path:
    """`cache_dir`, else $TSM_DEPLOY_CACHE, else ~/.cache/tsm-deploy."""
    if cache_dir is None:
        env = os.environ.get("TSM_DEPLOY_CACHE")
        cache_dir = Path(env) if env else Path.home() / ".cache" / "tsm-deploy"
    return Path(cache_dir).expanduser().resolve()


def require_tool(name: str, debian_package: str) -> str:
    """Absolute path of executable `name`, or ToolchainMissing naming the package to install."""
    path = shutil.which(name)
    if path is None:
        raise ToolchainMissing(
            f"'{name}' not found on PATH: install it with `apt-get install {debian_package}` "
            "(or run scripts/install_system_deps.sh)"
        )
    return path


def report(progress: Progress | None, message: str) -> None:
    """Log a step and forward it to the caller's progress callback."""
    logger.info(message)
    if progress is not None:
        progress(message)


def run_logged(argv: Sequence[str | os.PathLike[str]], *, cwd: Path | None = None,
               env: dict[str, str] | None = None, log_file: Path | None = None) -> None:
    """Run a build step; on failure raise with the tail of its output (full log in `log_file`)."""
    argv = [str(a) for a in argv]
    logger.debug("running %s", " ".join(argv))
    proc = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, check=False)
    if log_file is not None:
        with log_file.open("a") as f:
            f.write(f"$ {' '.join(argv)}\n{proc.stdout}\n")
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-40:])
        where = f" (full log: {log_file})" if log_file is not None else ""
        raise RuntimeError(f"{argv[0]} failed with exit code {proc.returncode}{where}:\n{tail}")


@contextlib.contextmanager
def atomic_cache_entry(final: Path) -> Iterator[Path]:
    """Yield a fresh temp dir next to `final`; on success rename it to `final` in one step.

    Readers therefore never see a half-built entry. If another process finished the same entry
    first, its result is kept and ours is discarded (both are built from the same inputs).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; cache entries are meant to be shared
    try:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.exists():
                raise
            logger.info("%s was created concurrently; keeping that copy", final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
