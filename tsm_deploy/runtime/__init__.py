"""The on-device runtime: loads an artifact and runs frames (stream) or clips through it.

A self-contained package: it imports only the standard library, numpy and TVM's runtime (PyAV,
optionally, for video): never torch, onnx or the compiler side of tsm_deploy. The deploy bundle
copies this package as it is (found by import), so everything it needs lives inside it.
"""

from __future__ import annotations

from pathlib import Path

from .clip import ClipModel, ClipResult, segment_centres, windows
from .errors import CheckFailed, TsmDeployError
from .manifest import FORMAT_VERSION, ClipIO, Manifest, StreamIO, TensorSpec, read_manifest
from .preprocess import prepare_frame
from .stream import DEFAULT_HISTORY, StepResult, StreamingModel, recommended_history


def load_model(artifact_dir: Path | str, history: int | None = None, threads: int | None = None,
               allow_non_finite: bool = False) -> StreamingModel | ClipModel:
    """The right model class for the artifact's I/O kind (its manifest says). ``allow_non_finite``:
    run prepared inputs holding NaN or infinity instead of refusing them."""
    manifest = read_manifest(artifact_dir, check_module=False)
    if manifest.kind == "clip":
        return ClipModel(artifact_dir, threads=threads, allow_non_finite=allow_non_finite)
    return StreamingModel(artifact_dir, history=history, threads=threads, allow_non_finite=allow_non_finite)


__all__ = [
    "DEFAULT_HISTORY",
    "FORMAT_VERSION",
    "CheckFailed",
    "ClipIO",
    "ClipModel",
    "ClipResult",
    "Manifest",
    "StepResult",
    "StreamIO",
    "StreamingModel",
    "recommended_history",
    "TensorSpec",
    "TsmDeployError",
    "load_model",
    "prepare_frame",
    "read_manifest",
    "segment_centres",
    "windows",
]
