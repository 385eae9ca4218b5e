"""The `spool` command line (Typer).

Commands live in spool/commands/*.py, one module per area, each registering on
``app``.  Heavy imports (SQLAlchemy, httpx, keyring, apscheduler, rich) happen
inside the command functions so `spool --help` starts fast.
"""
from __future__ import annotations

import typer

from .errors import SpoolError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="spool: capture every Codex hook event, deliver exact traces.")


def friendly(fn):
    """Decorator for commands: a SpoolError becomes one line on stderr and exit 1,
    also when the app runs under Typer's CliRunner (tests) rather than main()."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SpoolError as exc:
            typer.echo(f"Error: {exc.reason} {exc.instruction}".rstrip(), err=True)
            raise typer.Exit(1)

    return wrapper


def wake_worker() -> bool:
    """Start a worker if none runs (as a hook would), so rows a command just made due
    go out now rather than at the next Codex event.  Respects SPOOL_NO_AUTOSTART."""
    from . import hook, paths

    try:
        return hook.start_worker(str(paths.spool_home()))
    except OSError:
        return False


def _register() -> None:
    # Imported for their side effect: each module adds its commands to `app`.
    from .commands import base, setup, read, worker_cmd, serve, demo, import_cmd  # noqa: F401


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
        raise SystemExit(1)


if __name__ == "__main__":
    main()
