"""Stream frames through a compiled ``stream`` artifact, one at a time, with the shift buffers kept
on the device: each step's state outputs are passed, as they are (device tensors, no copy), as the
next step's state inputs (the manifest's ``io.state`` pairs say which feeds which).

Needs only TVM's runtime and numpy (it runs on the Raspberry Pi / Jetson).

Prepared float frames holding NaN or infinity are refused (:func:`check_finite`): the compiled
network does not carry them through as PyTorch does (its ReLU turns NaN into 0, so a NaN frame gives
finite logits and a confident top-1). ``allow_non_finite=True`` runs them anyway. The check is one
``np.isfinite(frame).all()`` per frame: measured 2026-12-03 on this project's 2-core AMD EPYC VM
(numpy, float32, median of 2000 calls, a tuning job running beside it): 1x3x64x64 3.6 us,
1x3x224x224 30 us, against milliseconds per inference.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import TsmDeployError
from .loader import LoadedArtifact, set_threads
from .manifest import StreamIO
from .preprocess import prepare_frame

log = logging.getLogger(__name__)

# The original online demo averages the last 12 frames' logits before taking the argmax.
DEFAULT_HISTORY = 12


def recommended_history(manifest: Any) -> int:
    """The logit history chosen for the model when it was trained (the manifest's
    ``task.recommended_history``), else the original demo's 12."""
    value = (manifest.task or {}).get("recommended_history")
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else DEFAULT_HISTORY


@dataclass(frozen=True)
class StepResult:
    logits: np.ndarray  # this frame's logits, (n_class,)
    top1: int  # argmax of the (smoothed, if history > 1) logits
    label: str | None
    smoothed: np.ndarray | None = None  # the averaged logits the top-1 was taken from


def check_finite(tensor: np.ndarray, what: str = "prepared frame") -> None:
    """Refuse a float tensor holding NaN or infinity (one line); integer tensors always pass."""
    if tensor.dtype.kind == "f" and not np.isfinite(tensor).all():
        bad = int(tensor.size - np.count_nonzero(np.isfinite(tensor)))
        raise TsmDeployError(
            f"{what} holds {bad} NaN or infinite values (of {tensor.size}): refused, the compiled model would not "
            "carry them through as PyTorch does (allow_non_finite=True runs it anyway)"
        )


class StreamingModel:
    """A loaded ``stream`` artifact: ``step(frame)`` per frame, ``reset()`` between streams.

    ``history``: average the logits of the last ``history`` frames before the argmax, as the
    original demo does (1 = no smoothing; None = the model's recommended history, see
    :func:`recommended_history`). ``threads``: TVM's CPU threads (default: the
    ``TVM_NUM_THREADS`` environment variable, else the core count the artifact was compiled for).
    ``allow_non_finite``: run prepared frames holding NaN or infinity instead of refusing them
    (:func:`check_finite`; an attribute, settable after loading).
    """

    def __init__(
        self, artifact_dir: Path | str, history: int | None = None, check_module: bool = True, threads: int | None = None,
        allow_non_finite: bool = False,
    ) -> None:
        self.allow_non_finite = allow_non_finite
        self._artifact = LoadedArtifact(artifact_dir, "stream", check_module=check_module, threads=threads)
        self.artifact_dir = self._artifact.artifact_dir
        self.manifest = self._artifact.manifest
        self.io: StreamIO = self.manifest.io
        self._frame_spec = self.manifest.frame
        self._logits_index = self.manifest.output_index(self.io.logits)
        # the VM's arguments in the manifest's order, kept between steps: each step sets the frame's
        # and feeds every state output back into its input's position (no per-step dicts)
        self._frame_position = self._artifact.input_position(self._frame_spec.name)
        self._state_positions = [self._artifact.input_position(i) for _, i in self.io.state]
        self._feedback = [] if self.io.state_in_place else [
            (self.manifest.output_index(o), p) for (o, _), p in zip(self.io.state, self._state_positions)]
        self._args: list[Any] = [None] * len(self.manifest.inputs)
        self.history = recommended_history(self.manifest) if history is None else max(1, history)
        self._history: deque[np.ndarray] = deque(maxlen=self.history)
        self.reset()

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return self._frame_spec.shape

    @property
    def takes_raw_frames(self) -> bool:
        """Whether preprocessing is compiled into the module (uint8 frames of one size go straight in)."""
        return self.io.frame_format == "rgb_uint8"

    def reset(self) -> None:
        """Start a new stream: zero shift buffers (no past frame), empty logit history."""
        for (_, name), position in zip(self.io.state, self._state_positions):
            self._args[position] = self._artifact.zeros(self.manifest.input(name))
        self._history.clear()

    def prepare(self, frame: np.ndarray) -> np.ndarray:
        """What goes into the module for ``frame``: a uint8 HxWx3 RGB frame (of the compiled size when
        preprocessing is compiled in: passed as is; else resized and normalised here in numpy), or an
        already prepared float32 tensor checked and passed through."""
        expected = self.frame_shape
        if self.takes_raw_frames:
            if frame.shape == expected and frame.dtype == np.uint8:
                return frame
            raise TsmDeployError(
                f"this artifact takes {expected[1]}x{expected[0]} uint8 RGB frames (preprocessing compiled in); "
                f"got {frame.dtype}{list(frame.shape)}: recompile with --frame-size {frame.shape[1] if frame.ndim > 1 else '?'}x"
                f"{frame.shape[0]} or without it"
            )
        if frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3:
            return prepare_frame(frame, self.manifest.preprocess)
        if frame.shape == expected[1:]:
            frame = frame[None]
        if frame.shape != expected or frame.dtype != np.float32:
            raise TsmDeployError(
                f"frame of shape {tuple(frame.shape)} ({frame.dtype}): expected an HxWx3 uint8 RGB frame "
                f"or a prepared float32 tensor of shape {expected}"
            )
        return frame

    def run_prepared(self, tensor: np.ndarray) -> np.ndarray:
        """One step on what :meth:`prepare` returns; returns the logits ``(n_class,)``. A float tensor
        holding NaN or infinity is refused unless ``allow_non_finite``."""
        if not self.allow_non_finite:
            check_finite(tensor)
        self._args[self._frame_position] = self._artifact.to_device(self._frame_spec, tensor)
        outputs = self._artifact.call_positional(self._args)
        for output, position in self._feedback:
            self._args[position] = outputs[output]
        # inline rather than LoadedArtifact.output(): no extra Python call on the per-frame path
        logits = outputs if hasattr(outputs, "numpy") else outputs[self._logits_index]
        return self._artifact.to_numpy(logits).reshape(-1)

    def step(self, frame: np.ndarray) -> StepResult:
        logits = self.run_prepared(self.prepare(frame))
        self._history.append(logits)
        smoothed = np.mean(self._history, axis=0)
        top1 = int(np.argmax(smoothed))
        labels = self.manifest.labels
        return StepResult(logits=logits, top1=top1, label=labels[top1] if labels else None, smoothed=smoothed)

    def buffers(self) -> list[np.ndarray]:
        """Copies of the current state inputs, in ``io.state`` order, NCHW (for verification)."""
        return buffers_nchw(self.io, [self._artifact.to_numpy(self._args[p]) for p in self._state_positions])


def buffers_nchw(io: StreamIO, buffers: list[np.ndarray]) -> list[np.ndarray]:
    """State tensors as the PyTorch model has them (its buffers, NCHW), however the module keeps them
    (one packed tensor, NHWC)."""
    if io.state_parts:
        flat, buffers, offset = buffers[0].reshape(-1), [], 0
        for part in io.state_parts:
            size = int(np.prod(part))
            buffers.append(flat[offset : offset + size].reshape(part))
            offset += size
    if io.state_layout == "NHWC":
        return [np.ascontiguousarray(b.transpose(0, 3, 1, 2)) for b in buffers]
    return buffers


__all__ = ["DEFAULT_HISTORY", "StepResult", "StreamingModel", "buffers_nchw", "check_finite", "recommended_history",
           "set_threads"]
