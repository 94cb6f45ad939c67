"""An emulated Raspberry Pi 4 user space: a Debian arm64 root filesystem run under qemu-user.

The root filesystem provides what the device's Python runtime needs (python3.11, numpy,
libstdc++); programs in it run on this x86 host through `qemu-aarch64-static -L <rootfs>`, called
directly because binfmt_misc is not available on these machines.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..support.tools import Progress, atomic_cache_entry, report, require_tool, resolve_cache_dir, run_logged
from ..target.arch import ARCHES, QEMU_USER_STATIC_PACKAGE

__all__ = ["ROOTFS_PACKAGES", "DEFAULT_QEMU_CPU", "build_arm64_rootfs", "debian_mirror", "run_under_qemu"]

SUITE = "bookworm"
ROOTFS_PACKAGES = ("python3", "python3-numpy", "libstdc++6")
FALLBACK_MIRROR = "http://deb.debian.org/debian"
_AARCH64 = ARCHES["aarch64"]
DEFAULT_QEMU_CPU = _AARCH64.default_qemu_cpu
QEMU_AARCH64 = _AARCH64.qemu

# Extract mode runs no maintainer scripts, so the alternatives that normally provide these
# sonames (numpy links against them) are not created: link them to the reference BLAS/LAPACK.
_ALTERNATIVE_LIBS = {"libblas.so.3": "blas", "liblapack.so.3": "lapack"}
_LIBDIR = "usr/lib/aarch64-linux-gnu"


def build_arm64_rootfs(cache_dir: Path | None = None, progress: Progress | None = None) -> Path:
    """Return a Debian bookworm arm64 root filesystem with python3, numpy and libstdc++; cached.

    Built with `mmdebstrap --variant=extract` from the Debian mirror apt already uses.
    """
    key = hashlib.sha256(" ".join((SUITE, *ROOTFS_PACKAGES)).encode()).hexdigest()[:10]
    final = resolve_cache_dir(cache_dir) / "rootfs" / f"debian-{SUITE}-arm64-{key}"
    if (final / "usr/bin/python3").exists():
        return final
    mmdebstrap = require_tool("mmdebstrap", "mmdebstrap")
    mirror = debian_mirror()
    report(progress, f"building Debian {SUITE} arm64 rootfs from {mirror}")
    with atomic_cache_entry(final) as tmp:
        log = tmp.parent / f"{final.name}.log"
        # mmdebstrap wants to create (or find empty) its target; the temp dir is empty.
        run_logged([mmdebstrap, "--variant=extract", "--architectures=arm64",
                    f"--include={','.join(ROOTFS_PACKAGES)}", SUITE, tmp, mirror], log_file=log)
        _link_blas_alternatives(tmp)
        log.unlink(missing_ok=True)
    report(progress, f"rootfs ready at {final}")
    return final


def run_under_qemu(rootfs: Path, argv: Sequence[str | os.PathLike[str]],
                   env: Mapping[str, str] | None = None, timeout: float | None = None,
                   cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run an aarch64 program under qemu-user with `rootfs` as its library root.

    `argv[0]` may be a path inside the rootfs ("/usr/bin/python3.11"). The program gets a clean
    environment (host variables such as PYTHONPATH would mislead it) with QEMU_CPU=cortex-a72,
    updated by `env`; pass env={"QEMU_CPU": "max"} to emulate a CPU with more extensions.
    Output is captured as text; the exit status is not checked (a SIGILL shows as -4).
    Raises subprocess.TimeoutExpired after `timeout` seconds.
    """
    qemu = require_tool(QEMU_AARCH64, QEMU_USER_STATIC_PACKAGE)
    rootfs = Path(rootfs).resolve()
    program = _host_path(rootfs, str(argv[0]))
    full_env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        # Not the host's HOME: a guest Python would add the host user's x86 site-packages.
        "HOME": "/tmp",
        "QEMU_CPU": DEFAULT_QEMU_CPU,
    }
    full_env.update(env or {})
    cmd = [qemu, "-L", str(rootfs), program, *(str(a) for a in argv[1:])]
    return subprocess.run(cmd, env=full_env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, check=False)


def debian_mirror() -> str:
    """The Debian archive URI apt uses on this host (deb822 or one-line sources)."""
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))
    sources += sorted(Path("/etc/apt/sources.list.d").glob("*.list")) + [Path("/etc/apt/sources.list")]
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for uri in re.findall(r"^\s*(?:URIs:|deb)\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.MULTILINE):
            # The main archive, not debian-security or third-party repositories.
            if re.search(r"/debian/?$", uri):
                return uri.rstrip("/")
    return FALLBACK_MIRROR


def _host_path(rootfs: Path, program: str) -> str:
    # qemu-user opens the program itself by host path (-L only redirects the ELF interpreter and
    # the guest's own file accesses). An absolute path is the guest's view: use the rootfs copy
    # when there is one, since the host usually has an x86 program of the same name.
    if program.startswith("/"):
        inside = rootfs / program.lstrip("/")
        if inside.exists():
            return str(inside)
    return program


def _link_blas_alternatives(rootfs: Path) -> None:
    libdir = rootfs / _LIBDIR
    for soname, subdir in _ALTERNATIVE_LIBS.items():
        link = libdir / soname
        if (libdir / subdir / soname).exists() and not link.exists():
            link.symlink_to(Path(subdir) / soname)
