"""The Typer application every command registers on, and two helpers commands share.

Command modules (spool/commands/*.py) do ``from ..app import app`` and decorate
their functions with ``@app.command()``; spool/cli.py (the console script)
imports them and runs the app, so no command imports the entry point.
"""
from __future__ import annotations

import functools

import typer

from .errors import SpoolError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="spool: capture every Codex hook event, deliver exact traces.")


def friendly(fn):
    """Decorator for commands: a SpoolError becomes one line on stderr and exit 1
    (a UsageError: exit 2),
    also when the app runs under Typer's CliRunner (tests) rather than main()."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SpoolError as exc:
            typer.echo(f"Error: {exc.reason} {exc.instruction}".rstrip(), err=True)
            raise typer.Exit(getattr(exc, "exit_code", 1))

    return wrapper


def wake_worker() -> bool:
    """Start a worker if none runs (as a hook would), so rows a command just made due
    go out now rather than at the next Codex event.  Respects SPOOL_NO_AUTOSTART."""
    from . import hook, paths

    try:
        return hook.start_worker(str(paths.spool_home()))
    except OSError:
        return False


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(__version__)
        raise typer.Exit(0)


@app.callback()
def _main(version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                       help="Print spool's version and exit.")) -> None:
    """spool: capture every Codex hook event, deliver exact traces."""
