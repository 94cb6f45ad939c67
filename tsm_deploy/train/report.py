"""The training report: JSON (numbers) and PNG (confusion matrices, per-class accuracy, loss curves)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from ..data import synthetic
from ..support.atomic import atomic_write_bytes, atomic_write_text


def write_json(report: dict[str, Any], path: Path) -> None:
    atomic_write_text(Path(path), json.dumps(report, indent=2) + "\n")


def write_png(report: dict[str, Any], path: Path) -> None:
    """One row per model: confusion matrix, per-class accuracy, training loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    models = report["models"]
    names = list(models)
    short = [n.replace("rotating ", "rot ").replace("anticlockwise", "acw").replace("clockwise", "cw") for n in synthetic.CLASS_NAMES]
    fig, axes = plt.subplots(len(names), 3, figsize=(17, 5.2 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        entry = models[name]
        ev = entry["held_out"]
        conf = np.asarray(ev["confusion"], dtype=float)
        conf = conf / np.maximum(conf.sum(1, keepdims=True), 1)
        ax = axes[row, 0]
        ax.imshow(conf, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(short)), short, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(short)), short, fontsize=7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{name}: confusion (row-normalised), top-1 {ev['top1']:.1%}")
        ax = axes[row, 1]
        values = [ev["per_class"][c] for c in synthetic.CLASS_NAMES]
        ax.barh(range(len(short)), values, color="tab:blue")
        ax.set_yticks(range(len(short)), short, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.axvline(1 / len(short), color="grey", ls=":", lw=1)
        ax.set_title(f"per-class accuracy; order pairs {ev['pair_accuracy']:.1%} (chance 50%)")
        ax = axes[row, 2]
        ax.plot(entry["loss_curve"], lw=1)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (smoothed)")
        ax.set_title(f"{entry['train_config']['steps']} steps, {entry['train_time_s'] / 60:.1f} min")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    atomic_write_bytes(Path(path), buffer.getvalue())
