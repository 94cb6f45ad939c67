"""Per-frame predictions -> a label timeline (who did what, when), and its score against a script.

numpy only (runtime side). Per frame: the logits are averaged over the last ``history`` frames (the
original demo's smoothing), softmax gives probabilities, the top-1 of those is the frame's label.
Runs of one label become segments; segments shorter than ``min_duration`` seconds (flickers) are
given to the neighbour the model found more likely over those frames, until none is left.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import TsmDeployError

_TIME_EPS = 1e-6


@dataclass(frozen=True)
class Segment:
    start: float  # seconds: time of the first frame
    end: float  # seconds: time of the next segment's first frame (last segment: + one frame period)
    label: int
    name: str
    confidence: float  # mean over the segment's frames of the smoothed probability of ``label``
    first_frame: int  # index into the timeline's frames
    frames: int

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Timeline:
    segments: tuple[Segment, ...]
    times: np.ndarray  # (N,) seconds
    labels: np.ndarray  # (N,) int, after merging flickers
    top1: np.ndarray  # (N,) int, the smoothed per-frame top-1 before merging
    probabilities: np.ndarray  # (N, C) smoothed probabilities
    names: tuple[str, ...]  # class names (or "0", "1", ...)

    def to_dict(self) -> dict[str, Any]:
        return {
            "frames": int(len(self.times)),
            "classes": list(self.names),
            "segments": [asdict(s) | {"duration": s.duration} for s in self.segments],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def table(self) -> str:
        """A fixed-width text table, one row per segment."""
        width = max([5] + [len(s.name) for s in self.segments])
        rows = [f"{'start':>8} {'end':>8} {'frames':>6}  {'label':<{width}}  confidence"]
        for s in self.segments:
            rows.append(f"{s.start:8.2f} {s.end:8.2f} {s.frames:6d}  {s.name:<{width}}  {s.confidence:10.3f}")
        return "\n".join(rows)

    def label_at(self, time: float) -> tuple[int, float]:
        """(label, its smoothed probability) of the frame nearest ``time``."""
        i = int(np.argmin(np.abs(self.times - time)))
        label = int(self.labels[i])
        return label, float(self.probabilities[i, label])

    def __str__(self) -> str:
        return self.table()


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def _smooth(values: np.ndarray, history: int) -> np.ndarray:
    """Causal moving average over the last ``history`` rows (fewer at the start)."""
    if history <= 1:
        return values
    cumulative = np.cumsum(np.vstack([np.zeros((1, values.shape[1])), values]), axis=0)
    n = np.arange(1, len(values) + 1)
    lo = np.maximum(0, n - history)
    return (cumulative[n] - cumulative[lo]) / (n - lo)[:, None]


def _runs(labels: np.ndarray) -> list[tuple[int, int]]:
    """[(first, stop)] of the runs of equal labels."""
    edges = np.flatnonzero(np.diff(labels)) + 1
    bounds = np.concatenate([[0], edges, [len(labels)]])
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


def _run_ends(times: np.ndarray, runs: list[tuple[int, int]]) -> np.ndarray:
    period = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
    return np.array([times[stop] if stop < len(times) else times[-1] + period for _, stop in runs])


def _merge_flickers(times: np.ndarray, labels: np.ndarray, probs: np.ndarray, min_duration: float) -> np.ndarray:
    labels = labels.copy()
    while True:
        runs = _runs(labels)
        if len(runs) < 2:
            return labels
        ends = _run_ends(times, runs)
        durations = ends - times[[a for a, _ in runs]]
        shortest = int(np.argmin(durations))
        if durations[shortest] >= min_duration - _TIME_EPS:
            return labels
        a, b = runs[shortest]
        neighbours = [runs[i] for i in (shortest - 1, shortest + 1) if 0 <= i < len(runs)]
        # the neighbour label the model rates higher over the flicker's frames; on a tie the longer run
        best = max(neighbours, key=lambda r: (probs[a:b, labels[r[0]]].mean(), r[1] - r[0]))
        labels[a:b] = labels[best[0]]


def build_timeline(
    times: Sequence[float] | np.ndarray,
    scores: np.ndarray,
    names: Sequence[str] | None = None,
    history: int = 1,
    min_duration: float = 0.0,
    probabilities: bool = False,
) -> Timeline:
    """Per-frame ``times`` (seconds, increasing) and ``scores`` ``(N, C)`` -> :class:`Timeline`.

    ``scores`` are logits (``probabilities=False``) or probabilities; either is averaged over the
    last ``history`` frames. ``min_duration``: segments shorter than this (seconds) are merged away.
    """
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or len(scores) != len(times) or len(times) == 0:
        raise TsmDeployError(f"timeline needs N times and (N, classes) scores, got {times.shape} and {scores.shape}")
    if np.any(np.diff(times) <= 0):
        raise TsmDeployError("timeline frame times must be strictly increasing")
    if history < 1 or min_duration < 0:
        raise TsmDeployError(f"history must be >= 1 and min_duration >= 0, got {history} and {min_duration}")
    n_class = scores.shape[1]
    names = tuple(names) if names is not None else tuple(str(i) for i in range(n_class))
    if len(names) != n_class:
        raise TsmDeployError(f"{len(names)} class names for {n_class} classes")
    smoothed = _smooth(scores, history)
    probs = smoothed / smoothed.sum(axis=1, keepdims=True) if probabilities else softmax(smoothed)
    top1 = np.argmax(probs, axis=1)
    labels = _merge_flickers(times, top1, probs, min_duration) if min_duration > 0 else top1.copy()
    runs = _runs(labels)
    ends = _run_ends(times, runs)
    segments = tuple(
        Segment(
            start=float(times[a]), end=float(end), label=int(labels[a]), name=names[int(labels[a])],
            confidence=float(probs[a:b, labels[a]].mean()), first_frame=a, frames=b - a,
        )
        for (a, b), end in zip(runs, ends)
    )
    return Timeline(segments, times, labels, top1, probs, names)


@dataclass(frozen=True)
class SegmentScore:
    start: float
    end: float
    true_label: int
    predicted: int | None  # majority label over the counted frames; None when no frame was counted
    frames: int  # frames counted

    @property
    def correct(self) -> bool:
        return self.predicted == self.true_label


def script_entry(entry: Any) -> tuple[float, float, int]:
    """``{"start", "end", "label"}`` or ``(start, end, label)`` -> ``(start, end, label)``."""
    if isinstance(entry, Mapping):
        return float(entry["start"]), float(entry["end"]), int(entry["label"])
    if isinstance(entry, (tuple, list)) and len(entry) == 3:
        return float(entry[0]), float(entry[1]), int(entry[2])
    raise TsmDeployError(f"script entries must be {{'start', 'end', 'label'}} or (start, end, label), got {entry!r}")


def score_segments(
    timeline: Timeline, script: Sequence[Any], fps: float | None = None, ignore_first: int = 0, merged: bool = True
) -> list[SegmentScore]:
    """Per script segment, the majority predicted label over its frames.

    ``script``: ``{"start", "end", "label"}`` dicts (as ``make_scripted_video`` returns) or
    ``(start, end, label)``, with ``start`` inclusive and ``end`` exclusive frame numbers of the video.
    ``fps``: the video's frame rate; the frame numbers then become times ``n / fps`` and the timeline's
    frames are matched by time (needed when the timeline was resampled). Without it, by frame index.
    ``ignore_first``: frames skipped at the start of each segment while the shift history fills.
    ``merged``: use the labels after flicker merging (else the raw smoothed top-1).
    """
    if ignore_first < 0 or (fps is not None and fps <= 0):
        raise TsmDeployError(f"ignore_first must be >= 0 and fps > 0, got {ignore_first} and {fps}")
    predicted = timeline.labels if merged else timeline.top1
    position = timeline.times if fps is not None else np.arange(len(timeline.times), dtype=np.float64)
    scale = 1.0 / fps if fps is not None else 1.0
    results = []
    for entry in script:
        start, end, label = script_entry(entry)
        lo, hi = start * scale, end * scale
        inside = np.flatnonzero((position >= lo - _TIME_EPS) & (position < hi - _TIME_EPS))[ignore_first:]
        majority = None
        if len(inside):
            counts = np.bincount(predicted[inside], minlength=len(timeline.names))
            majority = int(np.argmax(counts))  # on a tie the lower class index: deterministic
        results.append(SegmentScore(lo, hi, label, majority, int(len(inside))))
    return results


def score_against_script(
    timeline: Timeline, script: Sequence[Any], fps: float | None = None, ignore_first: int = 0, merged: bool = True
) -> float:
    """Fraction of the script's segments whose majority predicted label is the true label (see
    :func:`score_segments`; a segment with no counted frame counts as wrong)."""
    scores = score_segments(timeline, script, fps=fps, ignore_first=ignore_first, merged=merged)
    if not scores:
        raise TsmDeployError("the script has no segments")
    return sum(s.correct for s in scores) / len(scores)


__all__ = [
    "Segment",
    "SegmentScore",
    "Timeline",
    "build_timeline",
    "score_against_script",
    "score_segments",
    "script_entry",
    "softmax",
]
