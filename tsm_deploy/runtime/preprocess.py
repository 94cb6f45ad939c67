"""uint8 HxWx3 frame -> model input ``(1, 3, S, S)`` float32, in numpy only (it runs on the device).

The steps are the original demo's: scale the short side to ``resize_short`` (bilinear), centre-crop
``crop``, scale to [0, 1], normalise with the ImageNet mean/std, HWC -> NCHW.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import TsmDeployError


CAMERA_SHAPE = (240, 320, 3)  # the original demo's capture size


def camera_frames(count: int, seed: int = 0, shape: tuple[int, ...] = CAMERA_SHAPE) -> np.ndarray:
    """``count`` seeded uint8 RGB frames: what verify, bench, the meter and a run without a video feed."""
    return np.random.default_rng(seed).integers(0, 256, size=(count, *shape), dtype=np.uint8)


def _bilinear_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Half-pixel-centre bilinear resize of an HxWxC float image (as OpenCV's INTER_LINEAR)."""
    in_h, in_w = image.shape[:2]
    if (in_h, in_w) == (height, width):
        return image

    def axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(n_out, dtype=np.float32) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
        low = np.floor(pos).astype(np.int64)
        high = np.minimum(low + 1, n_in - 1)
        return low, high, (pos - low)[:, None]

    y0, y1, wy = axis(height, in_h)
    x0, x1, wx = axis(width, in_w)
    rows = image[y0] * (1 - wy[..., None]) + image[y1] * wy[..., None]
    return rows[:, x0] * (1 - wx) + rows[:, x1] * wx


def prepare_frame(frame: np.ndarray, preprocess: dict[str, Any]) -> np.ndarray:
    """A uint8 RGB frame of any size -> the normalised ``(1, 3, crop, crop)`` float32 input."""
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise TsmDeployError(f"expected an HxWx3 RGB frame, got shape {tuple(frame.shape)}")
    if frame.dtype != np.uint8:
        raise TsmDeployError(f"expected a uint8 frame, got {frame.dtype}")
    crop, short = int(preprocess["crop"]), int(preprocess["resize_short"])
    h, w = frame.shape[:2]
    if min(h, w) < 1:
        raise TsmDeployError(f"empty frame of shape {tuple(frame.shape)}")
    scale = short / min(h, w)
    new_h, new_w = max(crop, round(h * scale)), max(crop, round(w * scale))
    image = _bilinear_resize(frame.astype(np.float32), new_h, new_w)
    top, left = (new_h - crop) // 2, (new_w - crop) // 2
    image = image[top : top + crop, left : left + crop]
    mean = np.asarray(preprocess["mean"], dtype=np.float32)
    std = np.asarray(preprocess["std"], dtype=np.float32)
    image = (image * np.float32(preprocess["scale"]) - mean) / std
    return np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32)
