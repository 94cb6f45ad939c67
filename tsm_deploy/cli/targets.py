"""``tsm-deploy targets``: the deployment targets and what this machine has for each."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from ..support.atomic import atomic_write_text
from .common import handles_errors, json_option


@click.command(name="targets")
@click.argument("names", nargs=-1)
@json_option("Write the list as JSON here ('-': standard output).")
@handles_errors
def command(names: tuple[str, ...], json_path: Path | None) -> None:
    """List deployment targets (or check the given names / target .json files) and what this machine
    has for each: cross compiler, emulator, GPU, committed tuning records for the default model."""
    from ..target.status import format_target_status, target_status
    from ..target.targets import available_targets, load_target

    quiet = logging.getLogger("tsm_deploy.target.targets")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "no GPU detected" is what the listing reports, not a warning
    try:
        statuses = [target_status(load_target(name)) for name in (names or available_targets())]
    finally:
        quiet.setLevel(level)
    if json_path is None:
        click.echo("\n".join(format_target_status(s) for s in statuses))
    elif str(json_path) == "-":
        click.echo(json.dumps(statuses, indent=2))
    else:
        atomic_write_text(json_path, json.dumps(statuses, indent=2) + "\n")
        click.echo(f"wrote {json_path}")
