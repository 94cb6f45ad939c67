"""Shared helpers of the device tooling: cache layout, tool lookup, atomic cache entries."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import TsmDeployError

logger = logging.getLogger("tsm_deploy.device")

Progress = Callable[[str], None]


class ToolchainMissing(TsmDeployError):
    """A host tool the device build needs is not installed; the message names its Debian package."""


@dataclass(frozen=True)
class ArchSpec:
    """How one device architecture maps onto host tools, Debian and PyPI names."""

    name: str
    gnu_triplet: str  # prefix of the Debian cross toolchain binaries
    cmake_processor: str
    debian_arch: str
    qemu: str  # qemu-user-static binary that runs this architecture's programs
    wheel_platforms: tuple[str, ...]  # PyPI platform tags to try, newest first

    @property
    def cross_gxx(self) -> str:
        return f"{self.gnu_triplet}-g++"

    @property
    def cross_gxx_package(self) -> str:
        return f"g++-{self.gnu_triplet}"


ARCHES: dict[str, ArchSpec] = {
    "aarch64": ArchSpec(
        name="aarch64",
        gnu_triplet="aarch64-linux-gnu",
        cmake_processor="aarch64",
        debian_arch="arm64",
        qemu="qemu-aarch64-static",
        wheel_platforms=("manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"),
    ),
    # 32-bit Raspberry Pi OS. PyPI has no armv7 wheel of apache-tvm-ffi 0.1.14, so only the
    # C++ runtime can be built for it today; fetching the Python packages fails clearly.
    "armv7": ArchSpec(
        name="armv7",
        gnu_triplet="arm-linux-gnueabihf",
        cmake_processor="armv7l",
        debian_arch="armhf",
        qemu="qemu-arm-static",
        wheel_platforms=("manylinux_2_28_armv7l", "manylinux_2_17_armv7l", "manylinux2014_armv7l"),
    ),
}


def arch_spec(arch: str) -> ArchSpec:
    try:
        return ARCHES[arch]
    except KeyError:
        raise ValueError(f"unsupported device architecture {arch!r}; known: {sorted(ARCHES)}") from None


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
