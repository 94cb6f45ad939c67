"""A video (file or camera) through a loaded artifact into a label timeline: the job on the device.

Frames are decoded with PyAV, resampled to the frame rate the model was trained for (the manifest's
``task.frame_rate``; else the video's own rate), and then either streamed frame by frame (a stream
artifact, logits averaged over ``history`` frames as the original demo does) or recognised window by
window (a clip artifact: T segments sampled from each window, as the original test code samples).
Needs only numpy, TVM's runtime and PyAV.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .clip import ClipModel, segment_centres, windows
from .errors import TsmDeployError
from .stream import StreamingModel
from .timeline import Timeline, build_timeline
from .video import VideoFrame, open_video, sample_at_rate

log = logging.getLogger(__name__)

DEFAULT_WINDOW_S = 2.0  # clip artifacts: seconds of video per prediction


@dataclass
class Recognition:
    timeline: Timeline
    frames: list[VideoFrame]  # the frames the model saw (resampled), for plots
    fps: float  # the rate they were sampled at
    source: str


def _sampled(path: str | os.PathLike, fps: float | None, limit: int | None) -> tuple[list[VideoFrame], float, str]:
    with open_video(path) as video:
        rate = fps or video.fps
        if not rate:
            raise TsmDeployError(f"{path}: the video does not state its frame rate; pass the rate to sample at")
        frames = []
        for frame in sample_at_rate(video, rate):
            frames.append(frame)
            if limit is not None and len(frames) >= limit:
                break
        return frames, float(rate), video.describe()


def recognise_video(
    model: StreamingModel | ClipModel,
    path: str | os.PathLike,
    history: int | None = None,
    min_duration: float = 0.0,
    window_s: float = DEFAULT_WINDOW_S,
    limit: int | None = None,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> Recognition:
    """Run the video at ``path`` through ``model``; returns the timeline and the frames seen.
    ``history``: frames of logits averaged (default: the stream model's own, see ``StreamingModel``)."""
    task = model.manifest.task or {}
    frames, fps, source = _sampled(path, task.get("frame_rate"), limit)
    if not frames:
        raise TsmDeployError(f"{path}: no frames")
    names = model.manifest.labels
    if isinstance(model, StreamingModel):
        model.reset()
        logits = []
        for i, frame in enumerate(frames):
            logits.append(model.step(frame.image).logits)
            progress(i + 1, len(frames))
        timeline = build_timeline([f.time for f in frames], np.stack(logits), names,
                                  history=model.history if history is None else history,
                                  min_duration=min_duration)
    else:
        span = max(model.segments, int(round(window_s * fps)))
        ranges = windows(len(frames), span, max(1, span // 2))
        times, logits = [], []
        for i, (start, end) in enumerate(ranges):
            picks = [frames[start + k] for k in segment_centres(end - start, model.segments)]
            logits.append(model.predict([f.image for f in picks]).logits)
            times.append(frames[(start + end - 1) // 2].time)
            progress(i + 1, len(ranges))
        timeline = build_timeline(times, np.stack(logits), names, history=1, min_duration=min_duration)
    log.info("%s: %d frames at %.3g fps -> %d segments", source, len(frames), fps, len(timeline.segments))
    return Recognition(timeline, frames, fps, source)
