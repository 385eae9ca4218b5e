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


def main() -> None:
    _register()
    try:
        app()
    except SpoolError as exc:
        typer.echo(f"Error: {exc.reason} {exc.instruction}".rstrip(), err=True)
        raise SystemExit(getattr(exc, "exit_code", 1))


if __name__ == "__main__":
    main()
