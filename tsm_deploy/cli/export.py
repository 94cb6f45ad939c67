"""``tsm-deploy export``: the model as ONNX."""

from __future__ import annotations

from pathlib import Path

import click

from .common import checkpoint_options, echo_args, handles_errors, load_checkpoint_for, model_overrides


@click.command(name="export")
@checkpoint_options
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False), required=True, help="ONNX file to write.")
@handles_errors
def command(checkpoint: Path | None, input_size: int | None, fold_div: int | None, segments: int | None, output: Path) -> None:
    """Export the model to ONNX (checked, cross-checked in ONNX Runtime)."""
    from ..frontend.export import export_onnx

    echo_args("export", checkpoint=checkpoint, output=output)
    loaded = load_checkpoint_for(checkpoint, model_overrides(input_size, fold_div, segments))
    result = export_onnx(loaded.model(), output)
    click.echo(
        f"wrote {output}: inputs {', '.join(result.input_shapes)}; ONNX Runtime max abs error {result.ort_max_abs_error:.2e}"
    )
