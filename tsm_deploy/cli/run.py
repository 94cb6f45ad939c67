"""``tsm-deploy run``: frames (a video file, or seeded noise) through an artifact, labels out."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from .common import handles_errors


@click.command(name="run")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.argument("video_arg", required=False, type=click.Path(path_type=Path), metavar="[VIDEO]")
@click.option("--frames", type=int, default=16, show_default=True, help="Frames of seeded noise when no video is given.")
@click.option("--history", type=int, default=12, show_default=True, help="Average logits over this many frames.")
@click.option("--video", type=click.Path(path_type=Path), default=None, help="Video file (PyAV), same as VIDEO.")
@click.option("--threads", type=int, default=None, help="TVM CPU threads (default: the artifact's core count).")
@handles_errors
def command(artifact: Path, video_arg: Path | None, frames: int, history: int, video: Path | None, threads: int | None) -> None:
    """Stream frames through an artifact and print the top-1 per frame (per clip for clip artifacts)."""
    from ..runtime import ClipModel, load_model
    from ..runtime.video import open_video

    model = load_model(artifact, history=history, threads=threads)
    path = video_arg or video
    source = (f.image for f in open_video(path)) if path else (
        np.random.default_rng(i).integers(0, 256, (240, 320, 3), dtype=np.uint8) for i in range(frames)
    )
    if isinstance(model, ClipModel):
        window: list[np.ndarray] = []
        for frame in source:
            window.append(frame)
            if len(window) == model.segments:
                result = model.predict(window)
                click.echo(f"clip top1={result.top1}" + (f" {result.label}" if result.label else ""))
                window = []
        return
    for i, frame in enumerate(source):
        result = model.step(frame)
        click.echo(f"{i:>4} top1={result.top1}" + (f" {result.label}" if result.label else ""))
