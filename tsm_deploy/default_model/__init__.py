"""The trained default model: online TSM-MobileNetV2 on the synthetic temporal-order task.

Files (written by ``scripts/train.py``): the weights in tsm-deploy's checkpoint format, the class
names, the task description (frame rate, frame size, frames per clip) and the training report.
Standard library only: the demo and the manifest writer read these without torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DIRECTORY = Path(__file__).resolve().parent
MODEL_PATH = DIRECTORY / "tsm_mobilenet_v2_online_synthetic.pth"
LABELS_PATH = DIRECTORY / "labels.txt"
TASK_PATH = DIRECTORY / "task.json"
REPORT_PATH = DIRECTORY / "training_report.json"


def labels() -> list[str]:
    """Class names in class-index order."""
    return LABELS_PATH.read_text().splitlines()


def task() -> dict[str, Any]:
    """``frame_rate``, ``frame_size``, ``frames_per_clip``, ``input_size``, ``class_names``, ..."""
    return json.loads(TASK_PATH.read_text())
