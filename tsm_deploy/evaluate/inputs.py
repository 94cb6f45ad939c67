"""Seeded inputs for verify and bench: camera-sized uint8 frames, prepared as the artifact expects."""

from __future__ import annotations

import numpy as np

from ..runtime.manifest import ClipIO, Manifest
from ..runtime.preprocess import camera_frames, prepare_frame


def seeded_inputs(manifest: Manifest, count: int, seed: int) -> np.ndarray:
    """``count`` steps of input for the artifact: stream frames ``(count, 1, 3, S, S)``, clips
    ``(count, 1, T, 3, S, S)``, or raw uint8 frames of the compiled size when preprocessing is
    compiled in (the reference then prepares them with the runtime's numpy preprocessing)."""
    io = manifest.io
    if io.frame_format == "rgb_uint8":
        return camera_frames(count, seed, manifest.frame.shape)
    if isinstance(io, ClipIO):
        images = camera_frames(count * io.segments, seed)
        prepared = np.stack([prepare_frame(image, manifest.preprocess)[0] for image in images])
        return prepared.reshape(count, 1, io.segments, *prepared.shape[1:])
    return np.stack([prepare_frame(image, manifest.preprocess) for image in camera_frames(count, seed)])


def reference_preparation(manifest: Manifest):
    """For artifacts that take raw frames: the numpy preparation the PyTorch/ORT references apply."""
    if manifest.io.frame_format != "rgb_uint8":
        return None
    if isinstance(manifest.io, ClipIO):
        return lambda clip: np.stack([prepare_frame(f, manifest.preprocess)[0] for f in clip])[None]
    return lambda frame: prepare_frame(frame, manifest.preprocess)
