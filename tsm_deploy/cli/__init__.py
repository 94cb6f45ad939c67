"""``tsm-deploy``: a thin click layer over the library, one module per command. Each command parses,
says what it will do, calls one library function and maps errors to exit codes: 0 ok, 1 a check
failed, 2 bad input (one line on stderr)."""

from __future__ import annotations

import sys
from typing import Any

import click

from .common import EXIT_BAD_INPUT, setup_logging


class _OneLineErrors(click.Group):
    """Click's own errors (an unknown option, a missing argument, a bad value) as one ``error: ...``
    line and exit 2, like the library's, instead of a usage block."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            return super().main(*args, standalone_mode=False, **kwargs)
        except click.ClickException as exc:
            if not standalone_mode:
                raise
            click.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
            sys.exit(EXIT_BAD_INPUT if isinstance(exc, click.UsageError) else exc.exit_code)
        except click.Abort:
            if not standalone_mode:
                raise
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log what each stage does.")
@click.version_option(package_name="tsm-deploy")
def main(verbose: bool) -> None:
    """Compile Temporal Shift Module video models for x86, Raspberry Pi and Jetson with Apache TVM."""
    setup_logging(verbose)


from . import bench, bundle, compile, export, run, targets, tune, verify  # noqa: E402  (register the commands)

for _module in (export, compile, tune, verify, targets, bench, bundle, run):
    main.add_command(_module.command)

__all__ = ["main"]
