"""Recognise whole clips with a compiled ``clip`` artifact (offline, bi-directional TSM over T segments).

Sampling follows the original test code: a video of ``n`` frames is cut into ``T`` equal segments and
the centre frame of each is taken (``int(tick / 2 + tick * k)`` with ``tick = n / T``). A long video is
recognised window by window: :func:`windows` slides a window over it and each window is sampled so.

Needs only TVM's runtime and numpy (it runs on the device). A prepared float clip holding NaN or
infinity is refused unless ``allow_non_finite`` (see :func:`~tsm_deploy.runtime.stream.check_finite`:
one ``np.isfinite`` per clip; measured 2026-12-03 on a 2-core AMD EPYC VM: 66 us for 4 frames at 224x224).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import TsmDeployError
from .loader import LoadedArtifact
from .manifest import ClipIO
from .preprocess import prepare_frame
from .stream import check_finite


def segment_centres(n_frames: int, segments: int) -> np.ndarray:
    """Indices of the centre frame of each of ``segments`` equal segments of ``n_frames`` frames
    (the original TSN/TSM test-time sampling; with fewer frames than segments, frames repeat)."""
    if n_frames < 1 or segments < 1:
        raise TsmDeployError(f"cannot sample {segments} segments from {n_frames} frames")
    tick = n_frames / segments
    return np.array([int(tick / 2.0 + tick * k) for k in range(segments)], dtype=np.int64)


def windows(n_frames: int, window: int, stride: int) -> list[tuple[int, int]]:
    """``[start, end)`` frame ranges of a window sliding over a video; the last one ends at the end."""
    if window < 1 or stride < 1:
        raise TsmDeployError(f"window and stride must be >= 1, got {window} and {stride}")
    if n_frames <= window:
        return [(0, n_frames)] if n_frames > 0 else []
    starts = list(range(0, n_frames - window + 1, stride))
    if starts[-1] + window < n_frames:
        starts.append(n_frames - window)
    return [(s, s + window) for s in starts]


@dataclass(frozen=True)
class ClipResult:
    logits: np.ndarray  # (n_class,)
    top1: int
    label: str | None


class ClipModel:
    """A loaded ``clip`` artifact: ``predict(frames)`` for T frames at once. ``allow_non_finite``: run
    prepared clips holding NaN or infinity instead of refusing them (an attribute, settable after loading)."""

    def __init__(self, artifact_dir: Path | str, check_module: bool = True, threads: int | None = None,
                 allow_non_finite: bool = False) -> None:
        self.allow_non_finite = allow_non_finite
        self._artifact = LoadedArtifact(artifact_dir, "clip", check_module=check_module, threads=threads)
        self.artifact_dir = self._artifact.artifact_dir
        self.manifest = self._artifact.manifest
        self.io: ClipIO = self.manifest.io
        self._clip_spec = self.manifest.frame
        self._logits_index = self.manifest.output_index(self.io.logits)

    @property
    def segments(self) -> int:
        return self.io.segments

    @property
    def clip_shape(self) -> tuple[int, ...]:
        return self._clip_spec.shape

    def prepare(self, frames: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """T uint8 HxWx3 RGB frames (any size, prepared here in numpy), or a prepared float32 clip of
        the artifact's shape, or (preprocessing compiled in) a uint8 ``(T, H, W, 3)`` array."""
        expected = self.clip_shape
        if isinstance(frames, np.ndarray) and frames.shape == expected and frames.dtype == np.dtype(self._clip_spec.dtype):
            return frames
        if self.io.frame_format == "rgb_uint8":
            array = np.asarray(frames)
            raise TsmDeployError(f"this artifact takes a uint8 clip of shape {expected}; got {array.dtype}{list(array.shape)}")
        if isinstance(frames, np.ndarray) and frames.dtype == np.float32:
            raise TsmDeployError(f"prepared clip of shape {tuple(frames.shape)}: expected {expected}")
        if len(frames) != self.segments:
            raise TsmDeployError(f"expected {self.segments} frames (one per segment), got {len(frames)}")
        prepared = [prepare_frame(np.asarray(f), self.manifest.preprocess)[0] for f in frames]
        return np.stack(prepared)[None]

    def predict(self, frames: Sequence[np.ndarray] | np.ndarray) -> ClipResult:
        clip = self.prepare(frames)
        if not self.allow_non_finite:
            check_finite(clip, "prepared clip")
        inputs = {self._clip_spec.name: self._artifact.to_device(self._clip_spec, clip)}
        logits = self._artifact.to_numpy(self._artifact.call(inputs)[self._logits_index]).reshape(-1)
        top1 = int(np.argmax(logits))
        labels = self.manifest.labels
        return ClipResult(logits=logits, top1=top1, label=labels[top1] if labels else None)

    def predict_video(self, frames: Sequence[np.ndarray]) -> ClipResult:
        """One prediction for a whole (short) video: the centre frame of each of T segments."""
        return self.predict([frames[i] for i in segment_centres(len(frames), self.segments)])
