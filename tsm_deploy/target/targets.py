"""Deployment targets: ``targets/*.json`` (or a user's file) -> one validated :class:`DeployTarget`.

A target file is data: the TVM target (as a dict; TVM 0.27 rejects ``"llvm -mcpu=..."`` strings),
the host for GPU targets, the cross compiler that links the module, the RPC key its devices register
under, the folder of its tuning logs, and what to detect on the build machine (``host-cpu``,
``num-cores``, ``cuda-arch``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import TsmDeployError, one_line
from ..support import resources
from .arch import ARCHES, CROSS_COMPILER_PACKAGES

log = logging.getLogger(__name__)

# Resolved once, at import (see resources.py: environment, checkout, else the wheel's packaged copy).
# PROJECT_ROOT is the folder holding targets/ and tuning_logs/: the repository root in a checkout,
# tsm_deploy/_data in an installed wheel. Tests patch TARGETS_DIR; the functions below read it.
PROJECT_ROOT = resources.data_root()
TARGETS_DIR = resources.targets_dir()
DEVICES = ("cpu", "cuda")
DETECTORS = ("host-cpu", "num-cores", "cuda-arch")
_REQUIRED = {
    "name": str,
    "description": str,
    "device": str,
    "arch": str,
    "tvm_target": dict,
}
_OPTIONAL = {
    "detect": list,
    "host": (dict, type(None)),
    "cross_compiler": (str, type(None)),
    "rpc_key": (str, type(None)),
    "tuning_logs": (str, type(None)),
    "shift_merge": str,
    "record_fallbacks": list,
}
# How a shift joins the tuned kernel that reads it (tsm_deploy.compiler.passes.merge_shifts), chosen per target by the
# instructions and latency it measured: "inline" reads the state inside the tuned loops, "copy" writes
# the shifted activation in front of them.
SHIFT_MERGES = ("copy", "inline")


@dataclass(frozen=True)
class DeployTarget:
    name: str
    description: str
    device: str  # "cpu" or "cuda": where the model's kernels run
    arch: str  # machine the compiled module's host code runs on
    tvm_target: dict[str, Any]
    detect: tuple[str, ...] = ()
    host: dict[str, Any] | None = None
    cross_compiler: str | None = None
    rpc_key: str | None = None
    tuning_logs: str | None = None  # folder under tuning_logs/; None: no committed records
    shift_merge: str = "copy"  # one of SHIFT_MERGES
    # tuning_logs folders of the targets whose records are valid here, tried in order per kernel after
    # this target's own (the file names targets; load_target resolves them to their folders)
    record_fallbacks: tuple[str, ...] = ()
    source: str = field(default="", compare=False)

    def tvm(self):
        """The ``tvm.target.Target`` (imported lazily: listing targets should not load the compiler)."""
        import tvm

        if self.host is not None:
            return tvm.target.Target(self.tvm_target, host=self.host)
        return tvm.target.Target(self.tvm_target)

    @property
    def is_cross(self) -> bool:
        return self.cross_compiler is not None

    def missing_tools(self) -> list[str]:
        """What this machine lacks to build for the target, as Debian package hints."""
        if self.cross_compiler and shutil.which(self.cross_compiler) is None:
            return [CROSS_COMPILER_PACKAGES.get(self.cross_compiler, self.cross_compiler)]
        return []

    def require_tools(self) -> None:
        missing = self.missing_tools()
        if missing:
            raise TsmDeployError(
                f"target {self.name} needs the cross compiler {self.cross_compiler}, which is not installed "
                f"(apt-get install {' '.join(missing)}, or run scripts/install_system_deps.sh)"
            )

    def to_manifest(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "device": self.device,
            "arch": self.arch,
            "tvm_target": self.tvm_target,
            "host": self.host,
        }


def _shown(text: Any, quote: bool = True) -> str:
    """A user's string inside a one-line message: quoted, escaped if it holds line breaks or
    control characters (a name ending in a newline must not split the error line)."""
    if isinstance(text, str) and text.isprintable():
        return f"'{text}'" if quote else text
    return repr(text)


# A tuning-log folder is one directory name under tuning_logs/: not a path that leaves it.
_FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# What the listing and the compile use as plain strings (paths, argv, messages): single-line text.
_LINE_FIELDS = ("name", "cross_compiler", "rpc_key")


def _validate(data: Any, where: str) -> dict[str, Any]:
    where = _shown(where, quote=False)
    if not isinstance(data, dict):
        raise TsmDeployError(f"target file {where}: expected a JSON object")
    for key, kind in _REQUIRED.items():
        if key not in data:
            raise TsmDeployError(f"target file {where}: missing field '{key}'")
        if not isinstance(data[key], kind):
            raise TsmDeployError(f"target file {where}: field '{key}' must be a {kind.__name__}")
    for key, kinds in _OPTIONAL.items():
        if key in data and not isinstance(data[key], kinds):
            raise TsmDeployError(f"target file {where}: field '{key}' has the wrong type")
    unknown = set(data) - set(_REQUIRED) - set(_OPTIONAL)
    if unknown:
        raise TsmDeployError(f"target file {where}: unknown field {_shown(sorted(unknown)[0])}")
    if data["device"] not in DEVICES:
        raise TsmDeployError(f"target file {where}: field 'device' must be one of {', '.join(DEVICES)}")
    if data["arch"] not in ARCHES:
        raise TsmDeployError(f"target file {where}: field 'arch' must be one of {', '.join(ARCHES)}")
    if data.get("shift_merge", DeployTarget.shift_merge) not in SHIFT_MERGES:
        raise TsmDeployError(f"target file {where}: field 'shift_merge' must be one of {', '.join(SHIFT_MERGES)}")
    for key in _LINE_FIELDS:
        value = data.get(key)
        if value is not None and not (value.strip() and value.isprintable()):
            raise TsmDeployError(f"target file {where}: field '{key}' must be a non-empty single-line string, got {_shown(value)}")
    folder = data.get("tuning_logs")
    if folder is not None and (not _FOLDER_NAME.fullmatch(folder) or folder.strip(".") == ""):
        raise TsmDeployError(
            f"target file {where}: field 'tuning_logs' must be a folder name under tuning_logs/ (letters, digits, . _ -), "
            f"got {_shown(folder)}"
        )
    for key in ("tvm_target", "host"):
        spec = data.get(key)
        if spec is None:
            continue
        if not isinstance(spec.get("kind"), str):
            raise TsmDeployError(f"target file {where}: field '{key}' needs a 'kind' (a string)")
        for attr in ("mcpu", "mtriple"):
            if attr in spec and not isinstance(spec[attr], str):
                raise TsmDeployError(f"target file {where}: {key}.{attr} must be a string, got {_shown(spec[attr])}")
    fallbacks = data.get("record_fallbacks", [])
    bad = [f for f in fallbacks if not isinstance(f, str) or not _FOLDER_NAME.fullmatch(f)]
    if bad:
        raise TsmDeployError(f"target file {where}: record_fallbacks must name targets, got {_shown(bad[0])}")
    detect = data.get("detect", [])
    bad = [d for d in detect if not isinstance(d, str) or d not in DETECTORS]
    if bad:
        raise TsmDeployError(f"target file {where}: unknown detector {_shown(bad[0])} (known: {', '.join(DETECTORS)})")
    return data


def available_targets() -> list[str]:
    """Names of the targets in the targets folder (the checkout's, the wheel's, or TSM_DEPLOY_TARGETS)."""
    if not TARGETS_DIR.is_dir():
        raise TsmDeployError(
            f"targets folder not found: {_shown(str(TARGETS_DIR), quote=False)} "
            f"(set {resources.TARGETS_ENV} to a folder of target .json files)"
        )
    return sorted(p.stem for p in TARGETS_DIR.glob("*.json"))


def _read(name_or_path: str) -> tuple[dict[str, Any], str]:
    if "\x00" in name_or_path:
        raise TsmDeployError(f"unknown target {_shown(name_or_path)}")
    path = Path(name_or_path)
    if not (path.suffix == ".json" or os.sep in name_or_path):
        path = TARGETS_DIR / f"{name_or_path}.json"
        if not path.is_file():
            raise TsmDeployError(
                f"unknown target {_shown(name_or_path)} (known: {', '.join(available_targets())}; or pass a target .json file)"
            )
    where = _shown(str(path), quote=False)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise TsmDeployError(f"target file not found: {where}") from None
    except OSError as exc:  # a directory, no permission, a name too long
        raise TsmDeployError(f"cannot read target file {where}: {exc.strerror or type(exc).__name__}") from None
    try:
        return json.loads(raw.decode("utf-8")), str(path)
    except UnicodeDecodeError as exc:
        raise TsmDeployError(f"target file {where}: not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise TsmDeployError(f"target file {where}: invalid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise TsmDeployError(f"target file {where}: JSON nested too deeply") from None


def _detect_cuda_arch() -> str | None:
    try:
        import tvm

        dev = tvm.cuda(0)
        if dev.exist:
            return "sm_" + dev.compute_version.replace(".", "")
    except Exception:  # no driver, no GPU: fall back to what the file or the user says
        return None
    return None


# Committed x86 records are per instruction-set level; a detected x86 CPU uses the richest it has.
_X86_LOG_LEVELS = ((("avx512f", "avx512bw", "avx512dq", "avx512vl"), "x86-avx512"), (("avx2", "fma"), "x86-avx2"))


def _x86_tuning_logs(tvm_target: dict[str, Any]) -> list[str]:
    """The x86 record folders valid on the target's CPU, richest first (records of a lower level are
    valid on a higher one: the same loops, re-lowered with the wider instructions)."""
    import tvm
    from tvm.target import codegen

    target = tvm.target.Target(tvm_target)
    return [folder for features, folder in _X86_LOG_LEVELS if codegen.llvm_cpu_has_features(list(features), target)]


def _apply_detection(target: DeployTarget, cuda_arch: str | None) -> DeployTarget:
    tvm_target = dict(target.tvm_target)
    tuning_logs, fallbacks = target.tuning_logs, target.record_fallbacks
    if "host-cpu" in target.detect:
        from tvm.target import codegen

        tvm_target["mcpu"] = codegen.llvm_get_system_cpu()
        if tuning_logs is None:
            levels = _x86_tuning_logs(tvm_target)
            tuning_logs = levels[0] if levels else None
            fallbacks = tuple(dict.fromkeys((*levels[1:], *fallbacks)))
    if "num-cores" in target.detect:
        tvm_target["num-cores"] = os.cpu_count() or 1
    if target.device == "cuda":
        arch = cuda_arch or (_detect_cuda_arch() if "cuda-arch" in target.detect else None)
        if arch:
            tvm_target["arch"] = arch
        elif "cuda-arch" in target.detect:
            log.warning("no GPU detected and no --cuda-arch given: compiling for %s", tvm_target.get("arch"))
    return replace(target, tvm_target=tvm_target, tuning_logs=tuning_logs, record_fallbacks=fallbacks)


def _check_llvm_cpu(spec: dict[str, Any] | None, where: str, field_name: str) -> None:
    """TVM accepts any ``mcpu`` string and LLVM then silently builds for a generic CPU: catch typos."""
    if not spec or spec.get("kind") != "llvm" or "mcpu" not in spec:
        return
    from tvm.target import codegen

    triple = spec.get("mtriple") or codegen.llvm_get_system_triple()
    if not codegen.llvm_is_valid_cpu(spec["mcpu"], triple):
        raise TsmDeployError(
            f"target file {where}: {field_name}.mcpu {_shown(spec['mcpu'])} is not a CPU LLVM knows for {_shown(triple)}"
        )


def _fallback_folders(names: list[str], where: str) -> list[str]:
    """The tuning_logs folders of the targets a target file names in ``record_fallbacks``."""
    folders = []
    for name in names:
        path = TARGETS_DIR / f"{name}.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            raise TsmDeployError(f"target file {where}: record_fallbacks names {_shown(name)}, which is not a readable target") from None
        folder = data.get("tuning_logs") if isinstance(data, dict) else None
        if not isinstance(folder, str) or not _FOLDER_NAME.fullmatch(folder):
            raise TsmDeployError(f"target file {where}: record_fallbacks names {_shown(name)}, which has no tuning_logs folder")
        folders.append(folder)
    return folders


def load_target(name_or_path: str, cuda_arch: str | None = None) -> DeployTarget:
    """A target by name (``targets/NAME.json``) or by path to a target file, with detection applied."""
    data, source = _read(name_or_path)
    data = _validate(data, source)
    where = _shown(source, quote=False)
    target = DeployTarget(
        name=data["name"],
        description=data["description"],
        device=data["device"],
        arch=data["arch"],
        tvm_target=data["tvm_target"],
        detect=tuple(data.get("detect", ())),
        host=data.get("host"),
        cross_compiler=data.get("cross_compiler"),
        rpc_key=data.get("rpc_key"),
        tuning_logs=data.get("tuning_logs"),
        shift_merge=data.get("shift_merge", DeployTarget.shift_merge),
        record_fallbacks=tuple(_fallback_folders(data.get("record_fallbacks", []), where)),
        source=source,
    )
    # Everything below hands the file's values to TVM and LLVM, which raise their own exception
    # types (TypeError, ValueError, TVMError...) for values they reject: one line, exit 2.
    try:
        target.tvm()  # as written, before detection adds to it
        target = _apply_detection(target, cuda_arch)
        for field_name, spec in (("tvm_target", target.tvm_target), ("host", target.host)):
            _check_llvm_cpu(spec, where, field_name)
        target.tvm()
    except TsmDeployError:
        raise
    except Exception as exc:  # TVM's own validation of kind/attributes
        raise TsmDeployError(f"target file {where}: TVM rejects tvm_target ({one_line(exc)})") from None
    return target
