"""Alembic environment for the spool database (SQLite, batch mode)."""
from __future__ import annotations

import os

from alembic import context
from spool.schema import metadata

config = context.config
target_metadata = metadata


def _url() -> str:
    if os.environ.get("SPOOL_HOME") and config.config_file_name:
        # Developer use through alembic.ini: follow SPOOL_HOME.
        from spool import paths

        return f"sqlite:///{paths.db_path()}"
    return config.get_main_option("sqlalchemy.url")


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, render_as_batch=True,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    # spool's engine: its transactions begin IMMEDIATE, so the version is read
    # under the write lock.  Every step runs in that one transaction (Alembic
    # would commit after each step on SQLite, letting a second process read a
    # half-way version and run a step twice), so processes upgrading one
    # database at once take turns: the second finds it done.
    from spool.db import make_engine

    engine = make_engine(_url().removeprefix("sqlite:///"))
    with engine.connect() as connection:
        # As SQLite's default (and batch mode wants): a table rebuilt by a future
        # migration must not cascade deletes into the tables that reference it.
        connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
        with connection.begin():
            context.configure(connection=connection, target_metadata=target_metadata,
                              render_as_batch=True)
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
