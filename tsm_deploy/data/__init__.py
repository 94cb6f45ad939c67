"""Data sets for training and demos (numpy only: the demo imports this on machines without torch)."""

from .synthetic import (
    CLASS_NAMES,
    DEFAULT_FRAMES,
    FRAME_RATE,
    N_CLASSES,
    NOTHING,
    ORDER_PAIRS,
    clip_label,
    make_batch,
    make_clip,
    make_scripted_video,
    task_description,
)

__all__ = [
    "CLASS_NAMES",
    "DEFAULT_FRAMES",
    "FRAME_RATE",
    "N_CLASSES",
    "NOTHING",
    "ORDER_PAIRS",
    "clip_label",
    "make_batch",
    "make_clip",
    "make_scripted_video",
    "task_description",
]
