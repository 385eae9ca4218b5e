"""The `spool` command line (Typer)."""
from __future__ import annotations

import typer

from . import __version__
from .errors import SpoolError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="spool: capture every Codex hook event, deliver exact traces.")


@app.command()
def version() -> None:
    """Print spool's version."""
    typer.echo(__version__)


@app.command()
def path() -> None:
    """Print the spool database path (created and migrated if missing)."""
    from . import db, paths

    db.open_db().dispose()
    typer.echo(str(paths.db_path()))


def main() -> None:
    try:
        app()
    except SpoolError as exc:
        typer.echo(f"Error: {exc.reason} {exc.instruction}".rstrip(), err=True)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
