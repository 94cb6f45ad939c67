"""A procedurally generated video task whose classes differ only in temporal order.

Each clip shows one textured object over a cluttered, noisy, panning background, filmed by a
jittering camera, at :data:`FRAME_RATE` frames per second of the task's time. The object moves
left/right/up/down, grows/shrinks, rotates clockwise/anticlockwise, appears/disappears, or does
nothing (11 classes, :data:`CLASS_NAMES`).

Why single frames say nothing about the order pairs (:data:`ORDER_PAIRS`): every action is a ramp
of one object parameter driven by a progress variable ``p`` in [0, 1]; the second member of each
pair is exactly the first run with ``p`` reversed in time, and every other random quantity
(background pan, jitter, noise) has a time-symmetric distribution. So the *set* of frames of a
"moving left" clip has the same distribution as that of a "moving right" clip: only their order
differs, as in Jester / Something-Something.

Everything is deterministic per ``(seed, index)`` and vectorised in numpy (this module imports
only numpy: the demo uses it on machines without torch). Frames are uint8 ``HxWx3`` RGB, the
runtime's input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

CLASS_NAMES: tuple[str, ...] = (
    "moving left",
    "moving right",
    "moving up",
    "moving down",
    "growing",
    "shrinking",
    "rotating clockwise",
    "rotating anticlockwise",
    "appearing",
    "disappearing",
    "nothing happens",
)
N_CLASSES = len(CLASS_NAMES)
# (forward member, its time reversal): a single frame cannot tell these apart
ORDER_PAIRS: tuple[tuple[int, int], ...] = ((1, 0), (3, 2), (4, 5), (6, 7), (8, 9))
NOTHING = 10
FRAME_RATE = 8.0  # frames per second of the task's time: a default clip is one second
DEFAULT_FRAMES = 8

_JITTER = 2  # camera jitter, pixels (uniform integer in [-J, J] per frame and axis)
_PAN_FRACTION = 0.12  # background pan amplitude, as a fraction of the frame size


def _reversed_member(label: int) -> bool:
    return any(label == b for _, b in ORDER_PAIRS)


def _forward_member(label: int) -> int:
    for a, b in ORDER_PAIRS:
        if label == b:
            return a
    return label


@dataclass(frozen=True)
class _Scene:
    """A background canvas larger than the frame, and how the camera looks at it."""

    canvas: np.ndarray  # (C, C, 3) float32 in [0, 1]
    margin: int
    pan_amp: np.ndarray  # (2,) pixels
    pan_period: np.ndarray  # (2,) frames
    pan_phase: np.ndarray  # (2,) radians
    noise_sigma: float  # in [0, 1] units


def _sample_scene(rng: np.random.Generator, size: int) -> _Scene:
    amp_max = int(round(_PAN_FRACTION * size))
    margin = amp_max + _JITTER + 1
    c = size + 2 * margin
    yy, xx = np.mgrid[0:c, 0:c].astype(np.float32) / np.float32(c)
    # smooth colour field: a base colour plus two random gratings per channel
    base = rng.uniform(0.2, 0.8, 3).astype(np.float32)
    canvas = np.empty((c, c, 3), np.float32)
    for ch in range(3):
        field = np.full((c, c), base[ch], np.float32)
        for _ in range(2):
            kx, ky = rng.uniform(-6, 6, 2)
            field += np.float32(rng.uniform(0.05, 0.15)) * np.sin(
                np.float32(2 * np.pi) * (np.float32(kx) * xx + np.float32(ky) * yy) + np.float32(rng.uniform(0, 6.3))
            )
        canvas[..., ch] = field
    # clutter: static rectangles and ellipses painted on the background (they pan with it)
    for _ in range(int(rng.integers(4, 9))):
        cy, cx = rng.uniform(0, 1, 2)
        ry, rx = rng.uniform(0.03, 0.12, 2)
        colour = rng.uniform(0, 1, 3).astype(np.float32)
        ellipse = rng.uniform() < 0.5
        # only the shape's bounding box is computed (the same pixels as a full-canvas mask)
        y0, y1 = max(0, int(np.floor((cy - ry) * c)) - 1), min(c, int(np.ceil((cy + ry) * c)) + 2)
        x0, x1 = max(0, int(np.floor((cx - rx) * c)) - 1), min(c, int(np.ceil((cx + rx) * c)) + 2)
        dy, dx = (yy[y0:y1, x0:x1] - cy) / ry, (xx[y0:y1, x0:x1] - cx) / rx
        mask = (dy * dy + dx * dx <= 1) if ellipse else ((np.abs(dy) <= 1) & (np.abs(dx) <= 1))
        box = canvas[y0:y1, x0:x1]
        box[mask] = 0.4 * box[mask] + 0.6 * colour
    # fine static texture
    canvas += rng.normal(0, 0.03, (c, c, 1)).astype(np.float32)
    return _Scene(
        canvas=canvas,
        margin=margin,
        pan_amp=rng.uniform(0, amp_max, 2),
        pan_period=rng.uniform(16, 64, 2),
        pan_phase=rng.uniform(0, 2 * np.pi, 2),
        noise_sigma=float(rng.uniform(0.01, 0.04)),
    )


def _background(scene: _Scene, rng: np.random.Generator, times: np.ndarray, size: int) -> np.ndarray:
    """Crops of the canvas along a sinusoidal pan plus per-frame jitter: ``(T, size, size, 3)``."""
    phase = 2 * np.pi * times[:, None] / scene.pan_period[None, :] + scene.pan_phase[None, :]
    offset = np.rint(scene.pan_amp[None, :] * np.sin(phase)).astype(np.int64)
    offset += rng.integers(-_JITTER, _JITTER + 1, offset.shape)
    top = scene.margin + offset[:, 0]
    left = scene.margin + offset[:, 1]
    frames = np.empty((len(times), size, size, 3), np.float32)
    for t in range(len(times)):  # plain slices: far cheaper than one fancy-indexed gather
        frames[t] = scene.canvas[top[t] : top[t] + size, left[t] : left[t] + size]
    return frames


@dataclass(frozen=True)
class _ObjectStates:
    cx: np.ndarray  # (T,) pixels
    cy: np.ndarray
    scale: np.ndarray  # half-size, pixels
    angle: np.ndarray  # radians, increasing = clockwise on screen (y points down)
    alpha: np.ndarray  # opacity in [0, 1]


def _object_states(rng: np.random.Generator, label: int, progress: np.ndarray, size: int) -> _ObjectStates:
    """Object parameters over time: one of them ramps with ``progress`` according to the class."""
    n = progress.shape[0]
    forward = _forward_member(label)
    scale0 = rng.uniform(0.13, 0.22) * size
    travel = rng.uniform(0.3, 0.5) * size  # left/right/up/down distance over the action
    ratio = rng.uniform(1.7, 2.3)  # grow/shrink: largest / smallest size
    # rotation over the action: 90-180 degrees, i.e. 13-26 degrees a frame at 8 frames (well under the
    # 90 degrees at which a frame-to-frame turn of a 180-degree-symmetric outline becomes ambiguous)
    turn = rng.uniform(np.pi / 2, np.pi)
    fade_start, fade_end = rng.uniform(0.0, 0.3), rng.uniform(0.7, 1.0)
    angle0 = rng.uniform(0, 2 * np.pi)

    scale = np.full(n, scale0)
    if forward == 4:  # growing (shrinking = reversed)
        smin = scale0 * 2 / (1 + ratio)
        scale = smin * ratio**progress
    reach = float(scale.max()) * 0.8  # keep most of the object inside the frame
    lo, hi = reach, size - reach
    cx = np.full(n, rng.uniform(lo, hi))
    cy = np.full(n, rng.uniform(lo, hi))
    if forward in (1, 3):  # moving right / down (left / up = reversed)
        centre = rng.uniform(lo + travel / 2, hi - travel / 2)
        path = centre + (progress - 0.5) * travel
        if forward == 1:
            cx = path
        else:
            cy = path
    angle = np.full(n, angle0)
    if forward == 6:  # clockwise (anticlockwise = reversed)
        angle = angle0 + (progress - 0.5) * turn
    alpha = np.ones(n)
    if forward == 8:  # appearing (disappearing = reversed)
        alpha = np.clip((progress - fade_start) / (fade_end - fade_start), 0.0, 1.0)
    return _ObjectStates(cx, cy, scale, angle, alpha)


def _paint_object(frames: np.ndarray, rng: np.random.Generator, states: _ObjectStates) -> None:
    """Composite a textured object (shape, aspect, two-colour pattern) into ``frames`` in place."""
    n, h, w, _ = frames.shape
    shape = int(rng.integers(0, 3))  # 0 rectangle, 1 ellipse, 2 diamond
    aspect = rng.uniform(0.55, 0.9)  # not square: rotation is visible in the outline too
    pattern = int(rng.integers(0, 2))  # 0 stripes, 1 checker
    freq = rng.uniform(1.5, 3.0)
    colours = rng.uniform(0, 1, (2, 3)).astype(np.float32)
    colours[1] = 1.0 - colours[0] * rng.uniform(0.3, 1.0)  # the two colours differ clearly
    aspect = np.float32(aspect)
    for t in range(n):
        if states.alpha[t] <= 0:
            continue
        # only the object's bounding box (its circumscribed square) is computed
        s = np.float32(states.scale[t])
        cx, cy = np.float32(states.cx[t]), np.float32(states.cy[t])
        r = float(s) * 1.5 + 2
        y0, y1 = max(0, int(cy - r)), min(h, int(cy + r) + 1)
        x0, x1 = max(0, int(cx - r)), min(w, int(cx + r) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        cos, sin = np.float32(np.cos(states.angle[t])), np.float32(np.sin(states.angle[t]))
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] - cx
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
        u = (cos * dx + sin * dy) / s  # object coordinates; a growing angle turns it clockwise on screen
        v = (cos * dy - sin * dx) / (s * aspect)
        if shape == 0:
            dist = np.maximum(np.abs(u), np.abs(v))
        elif shape == 1:
            dist = np.sqrt(u * u + v * v)
        else:
            dist = np.abs(u) + np.abs(v)
        weight = np.clip((1.0 - dist) * (s * aspect) + 0.5, 0.0, 1.0)  # ~1 px anti-aliased edge
        weight *= np.float32(states.alpha[t])
        if pattern == 0:
            q = np.sin(np.float32(np.pi * freq) * (u + 0.5 * v)) > 0  # oblique stripes: not mirror-symmetric
        else:
            q = (np.sin(np.float32(np.pi * freq) * u) > 0) ^ (np.sin(np.float32(np.pi * freq) * (v + 0.3)) > 0)
        texture = np.where(q[..., None], colours[1], colours[0])
        region = frames[t, y0:y1, x0:x1]
        region += weight[..., None] * (texture - region)


def _finish(frames: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Add sensor noise (luminance: one draw per pixel, a third of the cost of RGB) and quantise."""
    noise = rng.standard_normal(frames.shape[:-1] + (1,), dtype=np.float32)
    frames += np.float32(sigma) * noise
    frames *= np.float32(255)
    frames += np.float32(0.5)
    np.clip(frames, 0.0, 255.0, out=frames)
    return frames.astype(np.uint8)


def _progress(n_frames: int, label: int) -> np.ndarray:
    p = np.linspace(0.0, 1.0, n_frames) if n_frames > 1 else np.full(1, 0.5)
    return p[::-1].copy() if _reversed_member(label) else p


def _check(n_frames: int, size: int, label: int | None) -> None:
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    if size < 16:
        raise ValueError(f"size must be >= 16 pixels, got {size}")
    if label is not None and not 0 <= label < N_CLASSES:
        raise ValueError(f"label must be in [0, {N_CLASSES}), got {label}")


def clip_label(index: int) -> int:
    """The class of clip ``index`` when none is forced: balanced, cycling through the classes."""
    return index % N_CLASSES


def make_clip(
    seed: int, index: int, n_frames: int = DEFAULT_FRAMES, size: int = 112, label: int | None = None
) -> tuple[np.ndarray, int]:
    """Clip ``index`` of the data set ``seed``: ``(frames uint8 (n_frames, size, size, 3), label)``.

    Deterministic per ``(seed, index, n_frames, size, label)``; ``label`` forces the class
    (default :func:`clip_label`).
    """
    _check(n_frames, size, label)
    label = clip_label(index) if label is None else int(label)
    rng = np.random.default_rng([int(seed), int(index), 0x75EB])
    scene = _sample_scene(rng, size)
    start = rng.uniform(0, 64)  # where in the pan this clip starts
    frames = _background(scene, rng, start + np.arange(n_frames), size)
    states = _object_states(rng, label, _progress(n_frames, label), size)
    _paint_object(frames, rng, states)
    return _finish(frames, rng, scene.noise_sigma), label


def make_batch(
    seed: int, start: int, count: int, n_frames: int = DEFAULT_FRAMES, size: int = 112,
    labels: Sequence[int | None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Clips ``start .. start+count-1``: ``(uint8 (count, n_frames, size, size, 3), int64 labels (count,))``.
    ``labels``: force the class of some clips (None: the balanced default)."""
    forced = list(labels) if labels is not None else [None] * count
    clips = [make_clip(seed, start + i, n_frames, size, forced[i]) for i in range(count)]
    return np.stack([c for c, _ in clips]), np.array([lab for _, lab in clips], dtype=np.int64)


def make_scripted_video(
    seed: int, actions: Sequence[int | str], frames_per_action: int = 16, size: int = 112
) -> tuple[np.ndarray, list[dict]]:
    """A long video of several actions in a row over one continuously panning background.

    ``actions``: class indices or names. Returns ``(frames uint8 (N, size, size, 3), script)`` with
    one ``{"label", "action", "start", "end"}`` per action (frames ``start`` inclusive to ``end``
    exclusive). Each action gets a fresh object; the background and camera carry on.
    """
    labels = [_label_of(a) for a in actions]
    if not labels:
        raise ValueError("actions must not be empty")
    _check(frames_per_action, size, None)
    rng = np.random.default_rng([int(seed), 0x5C21])
    scene = _sample_scene(rng, size)
    total = len(labels) * frames_per_action
    frames = _background(scene, rng, np.arange(total, dtype=np.float64), size)
    script = []
    for k, label in enumerate(labels):
        a, b = k * frames_per_action, (k + 1) * frames_per_action
        states = _object_states(rng, label, _progress(frames_per_action, label), size)
        segment = frames[a:b]
        _paint_object(segment, rng, states)
        script.append({"label": label, "action": CLASS_NAMES[label], "start": a, "end": b})
    return _finish(frames, rng, scene.noise_sigma), script


STREAM_SEED_BASE = 10**9  # training streams' video seeds start here: never a demo or evaluation seed


def make_stream_batch(
    seed: int, start: int, count: int, n_actions: int, frames_per_action: int, size: int = 112, skip: int = 4
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training streams ``start .. start+count-1``: scripted videos of ``n_actions`` random actions in a
    row (no action twice in a row), each ``frames_per_action`` long.

    Returns ``(uint8 (count, N, size, size, 3), int64 per-frame labels (count, N), bool mask (count, N))``
    with N = n_actions * frames_per_action; the mask leaves out the first ``skip`` frames of every
    action, where the model cannot know yet that a new one began.
    """
    videos, labels, masks = [], [], []
    for i in range(count):
        rng = np.random.default_rng([int(seed), int(start + i), 0x57EA])
        actions = [int(rng.integers(N_CLASSES))]
        while len(actions) < n_actions:
            nxt = int(rng.integers(N_CLASSES - 1))
            actions.append(nxt if nxt < actions[-1] else nxt + 1)
        frames, script = make_scripted_video(STREAM_SEED_BASE + int(seed) * 10**6 + start + i, actions,
                                             frames_per_action, size)
        label = np.empty(len(frames), np.int64)
        mask = np.ones(len(frames), bool)
        for seg in script:
            label[seg["start"] : seg["end"]] = seg["label"]
            mask[seg["start"] : seg["start"] + skip] = False
        videos.append(frames)
        labels.append(label)
        masks.append(mask)
    return np.stack(videos), np.stack(labels), np.stack(masks)


def _label_of(action: int | str) -> int:
    if isinstance(action, str):
        try:
            return CLASS_NAMES.index(action)
        except ValueError:
            raise ValueError(f"unknown action {action!r}; known: {', '.join(CLASS_NAMES)}") from None
    label = int(action)
    if not 0 <= label < N_CLASSES:
        raise ValueError(f"action index must be in [0, {N_CLASSES}), got {label}")
    return label


def task_description(n_frames: int = DEFAULT_FRAMES, size: int = 112) -> dict:
    """What a consumer (demo, manifest) needs to know about the task."""
    return {
        "task": "synthetic temporal-order actions (tsm_deploy.data.synthetic)",
        "frame_rate": FRAME_RATE,
        "frame_size": [size, size],
        "frames_per_clip": n_frames,
        "class_names": list(CLASS_NAMES),
        "order_pairs": [[CLASS_NAMES[a], CLASS_NAMES[b]] for a, b in ORDER_PAIRS],
    }
