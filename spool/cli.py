"""The Typer side of the `spool` console script (``spool = "spool.entry:main"``, which
answers `spool usage` without Typer and hands everything else to ``main`` here).

The Typer app lives in spool/app.py; the commands live in spool/commands/*.py,
one module per topic, each registering on that app when imported.  Heavy
imports (SQLAlchemy, httpx, keyring, apscheduler, rich) happen inside the
command functions so `spool --help` starts fast.
"""
from __future__ import annotations

import importlib

import typer

from .app import app  # noqa: F401  (re-exported for `from spool.cli import app`)
from .errors import SpoolError

# Command modules in the order their commands appear in `spool --help`.
COMMAND_MODULES = ("base", "init", "doctor", "uninstall", "read", "manage", "worker_cmd",
                   "serve", "demo")


def _register() -> None:
    """Import every command module (each adds its commands to ``app``): the ones
    above first, then any other module in spool/commands/."""
    import pkgutil

    from . import commands

    found = sorted(m.name for m in pkgutil.iter_modules(commands.__path__)
                   if not m.name.startswith("_"))
    for name in (*COMMAND_MODULES, *(n for n in found if n not in COMMAND_MODULES)):
        importlib.import_module(f"{commands.__name__}.{name}")


def get_app() -> typer.Typer:
    """The app with every command registered (tests use it with CliRunner)."""
    _register()
    return app


def _click_exceptions():
    """Click's exception classes: vendored by Typer >= 0.2x, the click package before."""
    try:
        from typer._click import exceptions
    except ImportError:  # pragma: no cover  (older Typer on top of click)
        from click import exceptions
    return exceptions


def _usage_line(exc, argv: list[str]) -> str:
    """A malformed command line as one line: what Click found wrong, and where the help is."""
    if exc.ctx is not None:
        where = exc.ctx.command_path
    else:  # e.g. an option missing its value: Click gives no context
        where = " ".join(["spool", *[a for a in argv[:1] if not a.startswith("-")]])
    message = " ".join(exc.format_message().split()).rstrip(".")
    return f"Error: {message}. See `{where} --help`."


def main() -> None:
    """Run the app; every user mistake ends as one line on stderr, never Click's box:
    a SpoolError (exit 1, a UsageError 2), a malformed command line (exit 2), a prompt
    that got no answer (exit 1)."""
    import sys

    _register()
    cx = _click_exceptions()
    argv = sys.argv[1:]
    try:
        code = app(standalone_mode=False)
    except SpoolError as exc:
        typer.echo(f"Error: {exc.reason} {exc.instruction}".rstrip(), err=True)
        raise SystemExit(getattr(exc, "exit_code", 1))
    except cx.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `spool`: the help was printed
            if exc.format_message():
                typer.echo(exc.format_message(), err=True)
            raise SystemExit(exc.exit_code)
        typer.echo(_usage_line(exc, argv), err=True)
        raise SystemExit(2)
    except cx.ClickException as exc:
        typer.echo(f"Error: {exc.format_message()}", err=True)
        raise SystemExit(exc.exit_code)
    except typer.Abort:
        if sys.stdin is None or not sys.stdin.isatty():
            typer.echo("Error: a question got no answer (stdin is not a terminal). Answer it "
                       "in a terminal, or pass the answer as an option (--no-interactive, "
                       "-y/--yes).", err=True)
        else:
            typer.echo("Aborted.", err=True)
        raise SystemExit(1)
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
