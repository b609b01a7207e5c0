"""The ``adascale`` command line: one program, one verb per stage.

Each verb lives in a small module that registers itself on the root app; the
modules parse options and call the library, nothing more. User errors
(:class:`adascale.errors.AdaScaleError`) print one line and exit with status 2.
"""

from __future__ import annotations

import sys

import typer

from adascale.errors import AdaScaleError

app = typer.Typer(
    name="adascale",
    help=(
        "Machine-learned molecular force prediction across spatial scales.\n\n"
        "Typical flow: generate frames -> train branches -> predict -> analyze / refine -> route -> report. "
        "`adascale run` does all of it on the built-in NaCl(aq) testbed."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback(invoke_without_command=True)
def _root(
    version: bool = typer.Option(False, "--version", help="Print the adascale version and exit.", is_eager=True),
) -> None:
    if version:
        from adascale import __version__

        typer.echo(__version__)
        raise typer.Exit()


def _register_verbs() -> None:
    from adascale.cli import data, deploy, export, run, scales, train, validate

    for module in (data, train, scales, deploy, export, validate, run):
        module.register(app)


_register_verbs()


def main() -> None:
    """Console entry point."""
    try:
        app()
    except AdaScaleError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(2)
