"""Plumbing commands: version, path."""
from __future__ import annotations

import typer

from .. import __version__
from ..app import app


@app.command()
def version() -> None:
    """Print spool's version."""
    typer.echo(__version__)


@app.command()
def path() -> None:
    """Print the spool database path (created and migrated if missing)."""
    from .. import db, paths

    db.open_db().dispose()
    typer.echo(str(paths.db_path()))
