"""``tsm-deploy run``: a video (or camera, or seeded noise) through an artifact: a label timeline."""

from __future__ import annotations

from pathlib import Path

import click

from .common import ProgressBar, handles_errors, json_option


@click.command(name="run")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.argument("video", required=False, metavar="[VIDEO]")
@click.option("--frames", type=int, default=16, show_default=True, help="Without a video: frames of seeded noise.")
@click.option("--history", type=click.IntRange(min=1), default=None,
              help="Average logits over this many frames (default: the model's recommended history, else 12).")
@click.option("--min-duration", type=float, default=0.5, show_default=True, help="Merge away shorter segments (s).")
@click.option("--limit", type=int, default=None, help="Stop after this many (sampled) frames.")
@json_option("Write the label timeline as JSON here.")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write a PNG strip of frames with the predicted label under each.")
@click.option("--threads", type=int, default=None, help="TVM CPU threads (default: the artifact's core count).")
@handles_errors
def command(artifact: Path, video: str | None, frames: int, history: int | None, min_duration: float,
            limit: int | None, json_path: Path | None, plot_path: Path | None, threads: int | None) -> None:
    """Recognise VIDEO (a file, or a camera /dev/videoN) with an artifact and print the label timeline
    (time ranges, label, confidence); without VIDEO, seeded noise frames as a smoke test.

    Frames are sampled at the rate the model was trained for (the manifest says) and streamed with
    history smoothing (clip artifacts: one prediction per window of T segments)."""
    from ..support.atomic import atomic_write_text, check_writable
    from ..runtime import load_model

    for path in (json_path, plot_path):
        if path is not None:
            check_writable(path)  # before the video is read, not after
    model = load_model(artifact, history=history, threads=threads)
    source = video
    if source is None:
        _noise(model, frames)
        return
    from ..runtime.recognise import recognise_video

    with ProgressBar("recognising") as bar:
        result = recognise_video(model, source, min_duration=min_duration, limit=limit,
                                 progress=bar.update)
    click.echo(f"{result.source}: {len(result.frames)} frames at {result.fps:.3g} fps")
    timeline, names = result.timeline, model.manifest.labels
    for i, (time, top1) in enumerate(zip(timeline.times, timeline.top1)):  # smoothed per-step top-1
        click.echo(f"{i:>4} {time:7.2f} s top1={int(top1)}" + (f" {names[int(top1)]}" if names else ""))
    click.echo(timeline.table())
    if json_path:
        atomic_write_text(json_path, result.timeline.to_json())
        click.echo(f"wrote {json_path}")
    if plot_path:
        from ..evaluate.strip_plot import write_strip_plot

        write_strip_plot(plot_path, result.timeline, result.frames, title=f"{Path(str(source)).name}: {artifact}")
        click.echo(f"wrote {plot_path}")


def _noise(model, frames: int) -> None:
    """Seeded camera-sized noise: a smoke test of an artifact without a video."""
    from ..runtime import ClipModel
    from ..runtime.preprocess import camera_frames

    images = camera_frames(frames)
    if isinstance(model, ClipModel):
        for start in range(0, frames - model.segments + 1, model.segments):
            result = model.predict(images[start : start + model.segments])
            click.echo(f"clip top1={result.top1}" + (f" {result.label}" if result.label else ""))
        return
    for i, image in enumerate(images):
        result = model.step(image)
        click.echo(f"{i:>4} top1={result.top1}" + (f" {result.label}" if result.label else ""))
