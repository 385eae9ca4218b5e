"""Raw events into a test's database, and rows read back out of it."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from spool import db, ingest, paths

EVENT_CWD = object()  # insert_raw's default: each event's own "cwd" (NULL for raw bytes)


def insert_raw(engine, events, start_at: float, *, step: float = 0.5, cwd=EVENT_CWD,
               parse: bool = False) -> float:
    """Store ``events`` (dicts or raw payload bytes) as hook rows in ``raw_events``, received
    ``step`` s apart after ``start_at``; with ``parse``, ingest them too.  Returns the last time."""
    t = start_at
    with db.write(engine) as conn:
        for e in events:
            t += step
            raw = e if isinstance(e, bytes) else json.dumps(e).encode()
            where = cwd
            if cwd is EVENT_CWD:
                where = None if isinstance(e, bytes) else e.get("cwd")
            conn.exec_driver_sql(
                "INSERT INTO raw_events (received_at, source, cwd, payload, size, truncated)"
                " VALUES (?, 'hook', ?, ?, ?, 0)", (t, where, raw, len(raw)))
    if parse:
        ingest.ingest_all(engine)
    return t


def db_rows(sql: str, params=(), *, db_file: Path | str | None = None) -> list[tuple]:
    """Rows of ``sql`` read with plain sqlite3 from the test's spool database (no engine)."""
    conn = sqlite3.connect(db_file or paths.db_path())
    try:
        return [tuple(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()
