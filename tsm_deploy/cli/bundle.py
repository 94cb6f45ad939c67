"""``tsm-deploy bundle``: one tarball with everything a device needs."""

from __future__ import annotations

from pathlib import Path

import click

from .common import handles_errors, progress


@click.command(name="bundle")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False), default=None, help="Default: ARTIFACT.tar.gz")
@handles_errors
def command(artifact: Path, output: Path | None) -> None:
    """Pack an artifact with the thin runtime (and, for aarch64, TVM's runtime) into one tarball for the device."""
    from ..support.atomic import check_writable
    from ..deploy.bundle import make_bundle
    from ..runtime.manifest import read_manifest

    read_manifest(artifact)  # refuse a tampered artifact before packing it
    check_writable(output if output else Path(artifact).with_name(Path(artifact).name + ".tar.gz"))
    path = make_bundle(artifact, output, progress=progress)
    click.echo(f"wrote {path}; on the device: tar xzf {path.name}, then see README.txt inside")
