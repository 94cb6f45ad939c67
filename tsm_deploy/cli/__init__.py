"""``tsm-deploy``: a thin click layer over the library, one module per command. Each command parses,
says what it will do, calls one library function and maps errors to exit codes: 0 ok, 1 a check
failed, 2 bad input (one line on stderr)."""

from __future__ import annotations

import click

from .common import setup_logging


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log what each stage does.")
@click.version_option(package_name="tsm-deploy")
def main(verbose: bool) -> None:
    """Compile Temporal Shift Module video models for x86, Raspberry Pi and Jetson with Apache TVM."""
    setup_logging(verbose)


from . import bench, bundle, compile, export, run, targets, tune, verify  # noqa: E402  (register the commands)

for _module in (export, compile, tune, verify, targets, bench, bundle, run):
    main.add_command(_module.command)

__all__ = ["main"]
