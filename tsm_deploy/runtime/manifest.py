"""The artifact format: ``manifest.json`` + the compiled module, one schema for both sides.

The compiler writes it, the runtime on the device reads it; so this module imports only the
standard library (no TVM, torch, onnx or numpy).

Artifact directory::

    manifest.json   format_version, model config, target, I/O names/shapes/dtypes, state pairs,
                    preprocessing, labels, TVM version, module file + sha256
    module.so       the compiled Relax VM executable (weights included)
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TsmDeployError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TensorSpec":
        return cls(name=data["name"], shape=tuple(int(d) for d in data["shape"]), dtype=data.get("dtype", "float32"))


@dataclass(frozen=True)
class Manifest:
    model: dict[str, Any]  # ModelConfig fields + checkpoint source/sha256
    target: dict[str, Any]  # name, device, arch, tvm_target, host
    inputs: tuple[TensorSpec, ...]  # frame first, then the shift buffers
    outputs: tuple[TensorSpec, ...]  # logits first, then the next shift buffers
    state: tuple[tuple[str, str], ...]  # (output name, input name): what feeds back each step
    preprocess: dict[str, Any]
    module_file: str
    module_sha256: str
    tvm_version: str
    tsm_deploy_version: str
    labels: tuple[str, ...] | None = None
    tuning: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def frame(self) -> TensorSpec:
        return self.inputs[0]

    @property
    def buffers(self) -> tuple[TensorSpec, ...]:
        return self.inputs[1:]

    def to_json(self) -> str:
        data = asdict(self)
        data["state"] = [{"output": o, "input": i} for o, i in self.state]
        data["module"] = {"file": data.pop("module_file"), "sha256": data.pop("module_sha256")}
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = "manifest") -> "Manifest":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TsmDeployError(f"{where}: not valid JSON ({exc.msg})") from None
        version = data.get("format_version") if isinstance(data, dict) else None
        if version != FORMAT_VERSION:
            raise TsmDeployError(f"{where}: artifact format {version!r} is not supported (this runtime reads {FORMAT_VERSION})")
        try:
            return cls(
                model=data["model"],
                target=data["target"],
                inputs=tuple(TensorSpec.from_dict(t) for t in data["inputs"]),
                outputs=tuple(TensorSpec.from_dict(t) for t in data["outputs"]),
                state=tuple((s["output"], s["input"]) for s in data["state"]),
                preprocess=data["preprocess"],
                module_file=data["module"]["file"],
                module_sha256=data["module"]["sha256"],
                tvm_version=data["tvm_version"],
                tsm_deploy_version=data["tsm_deploy_version"],
                labels=tuple(data["labels"]) if data.get("labels") else None,
                tuning=data.get("tuning", {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TsmDeployError(f"{where}: malformed manifest ({type(exc).__name__}: {exc})") from None


def check_runs_here(manifest: Manifest, artifact_dir: Path | str, hint: str) -> None:
    """Refuse, in one line, an artifact whose host code is for another machine (dlopen would fail
    with a cryptic message); ``hint`` says what to do instead."""
    here = platform.machine()
    target = manifest.target
    if target["arch"] != here:
        raise TsmDeployError(f"{artifact_dir} is built for {target['name']} ({target['arch']}), not this {here} machine: {hint}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(artifact_dir: Path | str, check_module: bool = True) -> Manifest:
    """Read and validate an artifact's manifest; with ``check_module``, the module's sha256 too."""
    artifact_dir = Path(artifact_dir)
    path = artifact_dir / MANIFEST_NAME
    if not artifact_dir.is_dir():
        raise TsmDeployError(f"artifact not found: {artifact_dir} is not a directory")
    if not path.exists():
        raise TsmDeployError(f"{artifact_dir} is not a tsm-deploy artifact (no {MANIFEST_NAME})")
    manifest = Manifest.from_json(path.read_text(), str(path))
    if check_module:
        module = artifact_dir / manifest.module_file
        if not module.exists():
            raise TsmDeployError(f"artifact {artifact_dir}: module file {manifest.module_file} is missing")
        if sha256_file(module) != manifest.module_sha256:
            raise TsmDeployError(
                f"artifact {artifact_dir}: {manifest.module_file} does not match the sha256 in the manifest "
                "(modified or corrupted; recompile)"
            )
    return manifest
