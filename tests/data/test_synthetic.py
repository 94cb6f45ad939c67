"""The synthetic temporal-order task: determinism, shapes, speed, and that single frames carry no
information about the order pairs while the order itself is plainly there."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import pytest

from tsm_deploy.data import synthetic
from tsm_deploy.data.synthetic import CLASS_NAMES, N_CLASSES, ORDER_PAIRS, make_clip, make_scripted_video


def test_clip_shape_dtype_and_label():
    frames, label = make_clip(0, 14, n_frames=8, size=73)
    assert frames.shape == (8, 73, 73, 3) and frames.dtype == np.uint8
    assert label == 14 % N_CLASSES
    assert len(CLASS_NAMES) == N_CLASSES == 11
    # the clip is not flat: an object, clutter and noise are drawn
    assert frames.std() > 10


def test_clip_is_deterministic_per_seed_and_index():
    a, la = make_clip(3, 5, size=48)
    b, lb = make_clip(3, 5, size=48)
    assert la == lb and np.array_equal(a, b)
    assert not np.array_equal(a, make_clip(3, 6, size=48)[0])
    assert not np.array_equal(a, make_clip(4, 5, size=48)[0])


def test_forced_label_and_bad_arguments():
    _, label = make_clip(0, 0, size=32, label=7)
    assert label == 7
    with pytest.raises(ValueError):
        make_clip(0, 0, label=11)
    with pytest.raises(ValueError):
        make_clip(0, 0, n_frames=0)
    with pytest.raises(ValueError):
        make_scripted_video(0, ["dancing"])


def test_scripted_video_segments():
    frames, script = make_scripted_video(2, ["moving left", 4, "nothing happens"], frames_per_action=6, size=40)
    assert frames.shape == (18, 40, 40, 3) and frames.dtype == np.uint8
    assert [s["label"] for s in script] == [0, 4, 10]
    assert [(s["start"], s["end"]) for s in script] == [(0, 6), (6, 12), (12, 18)]
    assert script[1]["action"] == "growing"
    again, _ = make_scripted_video(2, ["moving left", 4, "nothing happens"], frames_per_action=6, size=40)
    assert np.array_equal(frames, again)


def test_training_streams_label_every_frame_and_mask_action_starts():
    videos, labels, mask = synthetic.make_stream_batch(1, 0, 2, n_actions=3, frames_per_action=10, size=32, skip=4)
    assert videos.shape == (2, 30, 32, 32, 3) and videos.dtype == np.uint8
    assert labels.shape == mask.shape == (2, 30)
    for row, keep in zip(labels, mask):
        actions = row[::10]
        assert all(a != b for a, b in zip(actions, actions[1:]))  # never the same action twice in a row
        assert (row == np.repeat(actions, 10)).all()
        assert not keep.reshape(3, 10)[:, :4].any() and keep.reshape(3, 10)[:, 4:].all()
    again = synthetic.make_stream_batch(1, 0, 2, n_actions=3, frames_per_action=10, size=32, skip=4)
    assert (again[0] == videos).all() and (again[1] == labels).all()
    other = synthetic.make_stream_batch(1, 2, 1, n_actions=3, frames_per_action=10, size=32, skip=4)[0]
    assert not (other[0] == videos[0]).all()


def test_generator_imports_only_numpy():
    """The demo imports it on machines without torch: numpy and the standard library only."""
    root = Path(synthetic.__file__).parent
    for path in (root / "synthetic.py", root / "__init__.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else []
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top == "numpy" or top in sys.stdlib_module_names, (path, name)


def _frame_features(frames: np.ndarray) -> np.ndarray:
    """Cheap per-frame statistics ``(T, 6)``: where the edges are (x, y centroid of gradient
    energy), how much edge there is, its dominant orientation (doubled-angle structure tensor),
    and the mean brightness."""
    gray = frames.astype(np.float32).mean(-1)
    gx = np.diff(gray, axis=2)[:, :-1, :]
    gy = np.diff(gray, axis=1)[:, :, :-1]
    energy = gx * gx + gy * gy
    total = energy.sum((1, 2)) + 1e-6
    h, w = energy.shape[1:]
    cx = (energy * np.arange(w)[None, None, :]).sum((1, 2)) / total / w
    cy = (energy * np.arange(h)[None, :, None]).sum((1, 2)) / total / h
    sxx, syy, sxy = (gx * gx).sum((1, 2)), (gy * gy).sum((1, 2)), (gx * gy).sum((1, 2))
    c2, s2 = (sxx - syy) / total, 2 * sxy / total
    return np.stack([cx, cy, np.log(total), c2, s2, gray.mean((1, 2)) / 255], axis=1)


def _features(label: int, n: int, size: int = 48) -> np.ndarray:
    return np.stack([_frame_features(make_clip(11, i, 8, size, label=label)[0]) for i in range(n)])  # (n, T, 6)


def _z(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two-sample z of the means, per feature (rows are independent clips)."""
    return (a.mean(0) - b.mean(0)) / np.sqrt(a.var(0) / len(a) + b.var(0) / len(b) + 1e-12)


@pytest.mark.parametrize("pair", ORDER_PAIRS, ids=lambda p: f"{CLASS_NAMES[p[0]]}/{CLASS_NAMES[p[1]]}")
def test_single_frames_do_not_tell_an_order_pair_apart(pair):
    a, b = pair
    n = 80
    fa, fb = _features(a, n), _features(b, n)
    # order-free: each clip's frames pooled (their mean and spread) look the same for both members
    pooled_a = np.concatenate([fa.mean(1), fa.std(1)], axis=1)
    pooled_b = np.concatenate([fb.mean(1), fb.std(1)], axis=1)
    assert np.max(np.abs(_z(pooled_a, pooled_b))) < 4.0
    # the same statistics over ordered frames (last minus first) do see the order of a pair
    if pair in VISIBLE_ORDER:
        assert np.max(np.abs(_z(fa[:, -1] - fa[:, 0], fb[:, -1] - fb[:, 0]))) > 6.0


# Pairs whose order these global statistics can see. Rotation turns a small textured object by
# 90-180 degrees, which the whole-frame orientation (dominated by background and clutter) misses;
# that pair's order is shown by the trained online model instead (training_report.json).
VISIBLE_ORDER = {(1, 0), (3, 2), (4, 5), (8, 9)}
