"""The ``errors`` table: problems the worker recorded for ``spool errors`` to show.

``record`` writes one row inside the caller's transaction; ``log_error`` opens
its own; ``record_dbapi`` is ``record`` on a plain sqlite3 connection (the
aggregate pass and ``spool import`` write without SQLAlchemy).  ``prune`` is
retention.  (Reading is ``spool.queries.errors``.)
"""
from __future__ import annotations

import time

from sqlalchemy import Connection, Engine, text

from . import db

_INSERT = "INSERT INTO errors (at, source, message) VALUES (?, ?, ?)"


def record(conn: Connection, source: str, message: str, now: float) -> None:
    conn.exec_driver_sql(_INSERT, (now, source, message))


def record_dbapi(con, source: str, message: str, now: float) -> None:
    con.execute(_INSERT, (now, source, message))


def log_error(engine: Engine, source: str, message: str, now: float | None = None) -> None:
    with db.write(engine) as conn:
        record(conn, source, message, time.time() if now is None else now)


def prune(engine: Engine, cutoff: float) -> int:
    """Delete the rows recorded before ``cutoff``; returns how many."""
    with db.write(engine) as conn:
        return conn.execute(text("DELETE FROM errors WHERE at < :cutoff"),
                            {"cutoff": cutoff}).rowcount
