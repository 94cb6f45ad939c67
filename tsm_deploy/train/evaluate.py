"""Held-out evaluation: overall and per-class accuracy, confusion matrix, order-pair accuracy, and
what a stream would predict (per-frame logits from the uni-directional clip formulation)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..data import synthetic
from .loop import frame_size, preprocess_clips


def clip_logits(
    model: nn.Module,
    seed: int,
    n_clips: int,
    n_frames: int,
    input_size: int,
    batch_size: int = 22,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame logits ``(n_clips, n_frames, C)`` and labels of clips ``0..n_clips-1`` of ``seed``."""
    model.eval()
    size = frame_size(input_size)
    out, labels = [], []
    with torch.no_grad():
        for start in range(0, n_clips, batch_size):
            count = min(batch_size, n_clips - start)
            clips, lab = synthetic.make_batch(seed, start, count, n_frames, size)
            logits = model.forward_clip(preprocess_clips(clips, input_size), n_segment=n_frames)
            out.append(logits.view(count, n_frames, -1).numpy())
            labels.append(lab)
            if progress is not None:
                progress(start + count, n_clips)
    return np.concatenate(out), np.concatenate(labels)


def _accuracy(pred: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(pred == labels)) if len(labels) else float("nan")


def summarize(logits: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Metrics from per-frame logits ``(N, T, C)``.

    ``top1``: average consensus (mean logits over the clip), which is also what a stream with a
    logit history of >= T frames predicts at the clip's last frame. ``top1_last_frame``: the last
    frame alone (history 1). ``pair_accuracy``: for clips of an order pair, how often the true
    member scores above its time-reversed partner (chance 0.5; single frames cannot do better).
    """
    n_class = logits.shape[-1]
    mean = logits.mean(1)
    pred = mean.argmax(1)
    last = logits[:, -1].argmax(1)
    confusion = np.zeros((n_class, n_class), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    per_class = {
        synthetic.CLASS_NAMES[c]: _accuracy(pred[labels == c], labels[labels == c]) for c in range(n_class)
    }
    pairs = {}
    pair_hits = []
    pair_11way = []
    for a, b in synthetic.ORDER_PAIRS:
        sel = (labels == a) | (labels == b)
        truth = labels[sel]
        other = np.where(truth == a, b, a)
        rows = mean[sel]
        hit = rows[np.arange(len(truth)), truth] > rows[np.arange(len(truth)), other]
        pairs[f"{synthetic.CLASS_NAMES[a]} / {synthetic.CLASS_NAMES[b]}"] = float(hit.mean())
        pair_hits.append(hit)
        pair_11way.append(pred[sel] == truth)
    per_frame = [_accuracy(logits[:, t].argmax(1), labels) for t in range(logits.shape[1])]
    return {
        "clips": int(len(labels)),
        "top1": _accuracy(pred, labels),
        "top1_last_frame": _accuracy(last, labels),
        "top1_per_frame": per_frame,
        "per_class": per_class,
        "pair_accuracy": float(np.concatenate(pair_hits).mean()),
        "pair_accuracy_per_pair": pairs,
        "pair_classes_top1": float(np.concatenate(pair_11way).mean()),
        "confusion": confusion.tolist(),
    }


def evaluate(
    model: nn.Module, seed: int, n_clips: int, n_frames: int, input_size: int, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    logits, labels = clip_logits(model, seed, n_clips, n_frames, input_size, progress=progress)
    return {"seed": seed, **summarize(logits, labels)}


def _scripted_streams(
    model: nn.Module, seed: int, input_size: int, frames_per_action: int, videos: int
) -> list[tuple[np.ndarray, list[dict[str, Any]]]]:
    """Per scripted video (all classes in a seeded random order, one after another): the online model's
    per-frame logits (its clip formulation, identical to frame-by-frame streaming) and the script."""
    rng = np.random.default_rng(seed)
    size = frame_size(input_size)
    streams = []
    for v in range(videos):
        actions = rng.permutation(synthetic.N_CLASSES).tolist()
        frames, script = synthetic.make_scripted_video(seed * 1000 + v, actions, frames_per_action, size)
        with torch.no_grad():
            logits = model.eval().forward_clip(preprocess_clips(frames[None], input_size), n_segment=len(frames)).numpy()
        streams.append((logits, script))
    return streams


def _stream_scores(streams: list[tuple[np.ndarray, list[dict[str, Any]]]], frames_per_action: int, history: int) -> dict[str, float]:
    """Smooth the logits over ``history`` frames as the runtime does; score each segment by its
    prediction at its last frame, by the fraction of its frames predicted right, and as the demo does:
    the majority of its smoothed predictions after its first ``min(history, frames_per_action // 2)``
    frames (the history still holds the previous action there)."""
    end_hits, frame_hits, majority_hits = [], [], []
    ignore = min(history, frames_per_action // 2)
    for logits, script in streams:
        smoothed = np.stack([logits[max(0, i - history + 1) : i + 1].mean(0) for i in range(len(logits))])
        pred = smoothed.argmax(1)
        for seg in script:
            end_hits.append(pred[seg["end"] - 1] == seg["label"])
            frame_hits.append(np.mean(pred[seg["start"] : seg["end"]] == seg["label"]))
            counted = pred[seg["start"] + ignore : seg["end"]]
            majority_hits.append(np.bincount(counted, minlength=synthetic.N_CLASSES).argmax() == seg["label"])
    return {
        "segment_end_top1": float(np.mean(end_hits)),
        "frame_top1": float(np.mean(frame_hits)),
        "segment_majority_top1": float(np.mean(majority_hits)),
    }


def scripted_stream_accuracy(
    model: nn.Module, seed: int, input_size: int, frames_per_action: int, history: int, videos: int = 4
) -> dict[str, Any]:
    """Stream scripted videos through the online model and score them (see :func:`_stream_scores`)."""
    streams = _scripted_streams(model, seed, input_size, frames_per_action, videos)
    return {"videos": videos, "frames_per_action": frames_per_action, "history": history,
            **_stream_scores(streams, frames_per_action, history)}


def choose_history(
    model: nn.Module, seed: int, input_size: int, frames_per_action: Sequence[int],
    histories: Sequence[int] = (1, 2, 4, 8, 12), videos: int = 8,
) -> tuple[int, list[dict[str, Any]]]:
    """The logit history the runtime should smooth over for this model: the one whose scripted streams
    (``seed``: held out from training and from the demo's video) have the most segments right as the
    demo scores them, averaged over ``frames_per_action``; on a tie the longer (smoother) one.
    Returns it and every (history, frames per action) score."""
    rows = []
    for fpa in frames_per_action:
        streams = _scripted_streams(model, seed, input_size, fpa, videos)
        rows += [{"videos": videos, "frames_per_action": fpa, "history": h, **_stream_scores(streams, fpa, h)}
                 for h in histories]
    mean = {h: np.mean([r["segment_majority_top1"] for r in rows if r["history"] == h]) for h in histories}
    best = max(histories, key=lambda h: (round(float(mean[h]), 6), h))
    return int(best), rows
