"""A PNG strip of frames sampled over a video, each with the predicted label and confidence under it
(and the true label, green when it matches and red when not, when a script is given).

Host side: matplotlib's Agg canvas directly (no pyplot, so no global backend state), written atomically.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import TsmDeployError
from ..runtime.timeline import Timeline, script_entry
from ..runtime.video import VideoFrame, open_video
from ..support.atomic import atomic_write_bytes

log = logging.getLogger(__name__)


def strip_times(timeline: Timeline, n: int) -> np.ndarray:
    """``n`` times spread over the timeline: the centres of ``n`` equal spans between first and last frame."""
    first, last = float(timeline.times[0]), float(timeline.times[-1])
    return first + (np.arange(n) + 0.5) * (last - first) / n


def _nearest_frames(frames: Iterable[VideoFrame], times: np.ndarray) -> list[VideoFrame | None]:
    """The frame nearest each time, keeping only ``len(times)`` frames in memory."""
    best: list[VideoFrame | None] = [None] * len(times)
    for frame in frames:
        for i, t in enumerate(times):
            if best[i] is None or abs(frame.time - t) < abs(best[i].time - t):
                best[i] = frame
    return best


def _true_label(timeline: Timeline, script: Sequence[Any], fps: float | None, time: float) -> int | None:
    """The script's label at ``time`` (script in video frame numbers; by timeline frame index without fps)."""
    position = time * fps if fps else float(np.argmin(np.abs(timeline.times - time)))
    for entry in script:
        start, end, label = script_entry(entry)
        if start - 1e-6 <= position < end - 1e-6:
            return label
    return None


def write_strip_plot(
    path: str | Path,
    timeline: Timeline,
    video: str | Path | Sequence[VideoFrame],
    n: int = 8,
    script: Sequence[Any] | None = None,
    script_fps: float | None = None,
    title: str | None = None,
) -> Path:
    """Write the strip PNG to ``path``; ``video`` is a file (decoded again, keeping ``n`` frames) or
    the frames themselves. ``script``/``script_fps`` as in :func:`tsm_deploy.runtime.timeline.score_segments`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if n < 1:
        raise TsmDeployError(f"a strip needs at least one frame, got n={n}")
    times = strip_times(timeline, n)
    if isinstance(video, (str, Path)):
        with open_video(video) as stream:
            picked = _nearest_frames(stream, times)
    else:
        picked = _nearest_frames(video, times)
    if any(frame is None for frame in picked):
        raise TsmDeployError("no video frames to plot")

    figure = Figure(figsize=(2.0 * n, 2.4), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, n, squeeze=False)[0]
    for ax, frame, t in zip(axes, picked, times):
        label, confidence = timeline.label_at(frame.time)
        ax.imshow(frame.image, interpolation="bilinear")
        ax.set_xticks([])
        ax.set_yticks([])
        lines = [f"t={frame.time:.2f} s", f"{timeline.names[label]} ({confidence:.2f})"]
        color = "black"
        if script is not None:
            truth = _true_label(timeline, script, script_fps, frame.time)
            known = truth is not None and 0 <= truth < len(timeline.names)
            lines.append(f"true: {timeline.names[truth] if known else '-' if truth is None else truth}")
            color = "green" if truth == label else "red"
        ax.set_xlabel("\n".join(lines), fontsize=8, color=color)
    if title:
        figure.suptitle(title, fontsize=10)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight", pad_inches=0.1)  # room for the labels
    atomic_write_bytes(Path(path), buffer.getvalue())
    log.info("wrote %s (%d frames)", path, n)
    return Path(path)


__all__ = ["strip_times", "write_strip_plot"]
