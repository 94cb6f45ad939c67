"""A deploy bundle: one tarball with everything a device needs to run an artifact, and nothing else.

Layout (``tsm-<target>/`` inside the tarball)::

    artifact/         manifest.json + module.so
    python/           tsm_deploy/runtime (the self-contained runtime package, copied whole from where
                      Python imports it, under a stub tsm_deploy/__init__.py), and for aarch64 the
                      device packages: tvm_ffi (aarch64 wheel), a runtime-only tvm with the
                      cross-built libtvm_runtime.so, typing_extensions
    README.txt        how to install and run on the device

No torch, onnx, compiler or TVM source on the device.
"""

from __future__ import annotations

import logging
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Callable

from .. import __version__
from ..errors import TsmDeployError
from ..runtime.errors import WriteFailed, describe_os_error
from ..runtime.manifest import MANIFEST_NAME, Manifest, read_manifest
from ..support.atomic import atomic_output_file
from ..target.arch import arch_spec

log = logging.getLogger(__name__)

_DEVICE_README = """\
tsm-deploy bundle: {model} for {target} ({arch}, {device})
compiled with TVM {tvm_version}, tsm-deploy {version}; module sha256 {sha}

On the device (Raspberry Pi OS / Debian bookworm, 64-bit, Python 3.11):

    sudo apt-get install -y python3-numpy          # or: pip install numpy
    tar xzf {name}.tar.gz && cd {name}
    PYTHONPATH=python python3 -m tsm_deploy.runtime artifact --check
    PYTHONPATH=python python3 -m tsm_deploy.runtime artifact --frames 32

python/ already holds tvm_ffi for CPython 3.11 on aarch64 and a runtime-only TVM
(libtvm_runtime.so built for aarch64). With another Python version, install the FFI package
instead and remove python/tvm_ffi:

    pip install apache-tvm-ffi=={ffi_version} "typing_extensions>=4.13" numpy

From your own code:

    import sys; sys.path.insert(0, "python")
    from tsm_deploy.runtime import StreamingModel
    model = StreamingModel("artifact")  # logits averaged over the model's recommended history
    result = model.step(frame)      # uint8 HxWx3 RGB frame -> result.top1, result.logits
"""

_X86_README_NOTE = """
This bundle is for {arch}: install TVM's runtime from PyPI instead of the bundled one:

    pip install apache-tvm=={tvm_pkg} apache-tvm-ffi=={ffi_version} numpy
"""


def _ffi_version() -> str:
    from importlib.metadata import version

    return version("apache-tvm-ffi")


def copy_runtime_package(dest: Path) -> Path:
    """Copy the runtime package, found by import, under ``dest/tsm_deploy/``; the parent package is a
    stub (the compiler side's ``__init__`` never goes to the device). Returns the package directory."""
    from .. import runtime

    package = dest / "tsm_deploy"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        f'"""tsm-deploy\'s on-device runtime (bundle)."""\n\n__version__ = "{__version__}"\n'
    )
    source = Path(runtime.__file__).resolve().parent
    shutil.copytree(source, package / "runtime", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return package / "runtime"


def _readme(manifest: Manifest, name: str) -> str:
    from importlib.metadata import version

    arch = manifest.target.arch
    text = _DEVICE_README.format(
        model=manifest.model.arch,
        target=manifest.target.name,
        arch=arch,
        device=manifest.target.device,
        tvm_version=manifest.tvm_version,
        version=__version__,
        sha=manifest.module_sha256[:16],
        name=name,
        ffi_version=_ffi_version(),
    )
    if not arch_spec(arch).device_packages:
        text += _X86_README_NOTE.format(arch=arch, tvm_pkg=version("apache-tvm"), ffi_version=_ffi_version())
    return text


def stage_bundle(artifact_dir: Path, dest: Path, progress: Callable[[str], None] = lambda m: None) -> Path:
    """Lay the bundle's files out in ``dest/tsm-<target>/``; returns that directory."""
    manifest = read_manifest(artifact_dir)
    name = f"tsm-{manifest.target.name}"
    root = Path(dest) / name
    root.mkdir(parents=True)
    shutil.copytree(artifact_dir, root / "artifact", ignore=shutil.ignore_patterns(".*"))
    python = root / "python"
    copy_runtime_package(python)
    arch = manifest.target.arch
    if arch_spec(arch).device_packages:
        from .pyenv import assemble_device_packages

        progress(f"assembling the {arch} TVM runtime and Python packages (cached after the first build)")
        assemble_device_packages(python, arch=arch, progress=progress)
    (root / "README.txt").write_text(_readme(manifest, name))
    return root


def make_bundle(artifact_dir: Path, output: Path | None = None, progress: Callable[[str], None] = lambda m: None) -> Path:
    """Write the bundle tarball (atomically); default ``<artifact>.tar.gz`` beside the artifact."""
    artifact_dir = Path(artifact_dir)
    if not (artifact_dir / MANIFEST_NAME).exists():
        raise TsmDeployError(f"{artifact_dir} is not a tsm-deploy artifact (no {MANIFEST_NAME})")
    output = Path(output) if output else artifact_dir.with_name(artifact_dir.name + ".tar.gz")
    if output.is_dir():
        raise TsmDeployError(f"cannot write the bundle {output}: it is a directory")
    try:
        with tempfile.TemporaryDirectory(prefix="tsm-bundle-") as tmp:
            try:
                root = stage_bundle(artifact_dir, Path(tmp), progress)
            except WriteFailed:
                raise
            except OSError as exc:  # the temporary directory's disk, or an unreadable artifact file
                raise WriteFailed(f"cannot stage the bundle for {output} in {tmp}: {_os_reason(exc)}") from None
            progress(f"writing {output}")
            with atomic_output_file(output) as partial, tarfile.open(partial, "w:gz") as tar:
                tar.add(root, arcname=root.name)
    except WriteFailed:
        raise
    except OSError as exc:  # removing the staged files
        raise WriteFailed(f"cannot write the bundle {output}: {_os_reason(exc)}") from None
    log.info("wrote bundle %s", output)
    return output


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, shutil.Error) and exc.args and isinstance(exc.args[0], list) and exc.args[0]:
        src, _, why = exc.args[0][0]
        more = f" (and {len(exc.args[0]) - 1} more)" if len(exc.args[0]) > 1 else ""
        return f"{why} ({src}){more}"
    return describe_os_error(exc)
