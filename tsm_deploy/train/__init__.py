"""Training the default model on the synthetic temporal-order task (imports torch)."""

from .evaluate import choose_history, clip_logits, evaluate, scripted_stream_accuracy, summarize
from .loop import (
    LOSSES,
    TrainConfig,
    TrainState,
    clip_loss,
    frame_size,
    load_state,
    preprocess_clips,
    recalibrate_batchnorm,
    save_state,
    train,
)

__all__ = [
    "LOSSES",
    "TrainConfig",
    "TrainState",
    "choose_history",
    "clip_logits",
    "clip_loss",
    "evaluate",
    "frame_size",
    "load_state",
    "preprocess_clips",
    "recalibrate_batchnorm",
    "save_state",
    "scripted_stream_accuracy",
    "summarize",
    "train",
]
