"""The frames an int8 calibration streams: the user's video or folder, else the model's own task, else
seeded frames.

- a video file, or an image FFmpeg reads (PNG, JPEG...): its frames, in order, as one stream;
- a folder: every file in it, in name order, each read as above, one after the other in one stream
  (the state carries across files, as it would across scene cuts of one video);
- nothing: the default model's task (clips of the synthetic temporal-order task it was trained on,
  seeded apart from its training and held-out sets), or, for a model without a known task, seeded
  uniform-noise camera frames; noise gives ranges unlike real video's, so that choice is logged.

Every frame goes through the runtime's own preprocessing (:func:`tsm_deploy.runtime.preprocess.prepare_frame`),
so the ranges are those of what the artifact sees. A path that is missing, a folder with nothing
readable, or a file that is not a video: one :class:`TsmDeployError` line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..checkpoint import LoadedCheckpoint
from ..errors import TsmDeployError
from ..models.registry import model_spec, preprocessing
from ..runtime.preprocess import camera_frames, prepare_frame
from ..runtime.video import open_video
from .calibrate import QuantSpec, calibrate

__all__ = ["DEFAULT_CALIBRATION_FRAMES", "CalibrationFrames", "calibrate_checkpoint", "calibration_frames"]

log = logging.getLogger(__name__)

# Frames streamed by default: 16 clips of 8 frames for the default model's task (the held-out top-1
# of the int8 default model calibrated on 16 clips equals its fp32 top-1, 99.2 %).
DEFAULT_CALIBRATION_FRAMES = 128
# The task clips calibration streams: a seed apart from the training data (seeds 1, 2, 4) and the
# held-out set (1000) of the default model (training_report.json).
_TASK_SEED = 7


@dataclass(frozen=True)
class CalibrationFrames:
    frames: np.ndarray  # prepared, (N, 1, 3, S, S) float32
    source: str  # what they are, for the manifest and the log


def calibration_frames(checkpoint: LoadedCheckpoint, source: Path | None,
                       max_frames: int = DEFAULT_CALIBRATION_FRAMES) -> CalibrationFrames:
    """At most ``max_frames`` prepared frames for :func:`tsm_deploy.quantize.calibrate` (module docstring)."""
    if max_frames < 1:
        raise TsmDeployError(f"calibration needs at least one frame, got {max_frames}")
    preprocess = preprocessing(checkpoint.config)
    if source is None:
        return _default_frames(checkpoint, preprocess, max_frames)
    source = Path(source)
    if not source.exists():
        raise TsmDeployError(f"calibration input {source} does not exist")
    files = sorted(p for p in source.iterdir() if p.is_file() and not p.name.startswith(".")) if source.is_dir() \
        else [source]
    prepared: list[np.ndarray] = []
    for path in files:
        if len(prepared) >= max_frames:
            break
        with open_video(path) as video:
            for frame in video:
                prepared.append(prepare_frame(frame.image, preprocess))
                if len(prepared) >= max_frames:
                    break
    if not prepared:
        raise TsmDeployError(f"calibration input {source} holds no frames" + (" (an empty folder)" if not files else ""))
    what = f"{len(prepared)} frames of {source}" + (f" ({len(files)} files)" if source.is_dir() else "")
    return CalibrationFrames(np.stack(prepared), what)


def _default_frames(checkpoint: LoadedCheckpoint, preprocess: dict, max_frames: int) -> CalibrationFrames:
    task = checkpoint.task or {}
    if str(task.get("task", "")).startswith("synthetic temporal-order"):
        from ..data import synthetic

        per_clip = int(task.get("frames_per_clip", 8))
        clips = -(-max_frames // per_clip)
        size = int(task.get("frame_size", [preprocess["resize_short"]])[0])
        images, _ = synthetic.make_batch(_TASK_SEED, 0, clips, per_clip, size)
        frames = [prepare_frame(image, preprocess) for clip in images for image in clip][:max_frames]
        return CalibrationFrames(np.stack(frames), f"{len(frames)} frames of the model's own task "
                                                   f"({clips} clips, seed {_TASK_SEED})")
    log.warning("calibrating on seeded noise frames: give --calibration a video of the model's domain "
                "for ranges like real video's")
    frames = [prepare_frame(image, preprocess) for image in camera_frames(max_frames, seed=_TASK_SEED)]
    return CalibrationFrames(np.stack(frames), f"{len(frames)} seeded noise frames")


def calibrate_checkpoint(checkpoint: LoadedCheckpoint, source: Path | None,
                         max_frames: int = DEFAULT_CALIBRATION_FRAMES) -> QuantSpec:
    """The int8 calibration of ``checkpoint``'s stream model on :func:`calibration_frames`. Clip models
    (offline TSM) are refused with one line: the quantization points are a stream model's."""
    if model_spec(checkpoint.config.arch).io_kind != "stream":
        raise TsmDeployError(f"int8 is built for stream models (online TSM); {checkpoint.config.arch} runs clips: "
                             "compile it in fp32")
    frames = calibration_frames(checkpoint, source, max_frames)
    log.info("calibrating on %s", frames.source)
    spec = calibrate(checkpoint.model(), frames.frames)
    return replace(spec, source=frames.source)
