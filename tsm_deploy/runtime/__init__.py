"""The on-device runtime: loads an artifact and streams frames through it.

Imports only TVM's runtime, numpy and the standard library: never torch, onnx or the compiler side
of tsm_deploy, so this package (with ``tsm_deploy/__init__.py`` and ``errors.py``) is all a device needs.
"""

from .manifest import FORMAT_VERSION, Manifest, TensorSpec, read_manifest
from .preprocess import prepare_frame
from .stream import DEFAULT_HISTORY, StepResult, StreamingModel

__all__ = [
    "DEFAULT_HISTORY",
    "FORMAT_VERSION",
    "Manifest",
    "StepResult",
    "StreamingModel",
    "TensorSpec",
    "prepare_frame",
    "read_manifest",
]
