"""Whether the worker has anything to do: ``is_idle`` (nothing open, pending or held),
``nothing_due`` (the idle exit's question) and ``db_identity`` (is the database file
still the one this worker opened)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from sqlalchemy import Engine, text

from .. import db, ingest, outbox, paths
from ..aggregate.passes import codex_alive
from ..aggregate.result import Configs

NEW_EVENTS = "EXISTS(SELECT 1 FROM raw_events WHERE status = 'new')"
_BUSY_SQL = text(
    f"SELECT {NEW_EVENTS}"
    " OR EXISTS(SELECT 1 FROM sessions WHERE state != 'final')"
    " OR EXISTS(SELECT 1 FROM turns WHERE state != 'traced')"
    f" OR {outbox.UNFINISHED}"
)


def is_idle(engine: Engine, home: Path | None = None) -> bool:
    """Nothing open, pending or held, and no overflow file waiting."""
    if ingest.overflow_files(home):
        return False
    with db.read(engine) as conn:
        return not conn.execute(_BUSY_SQL).scalar()


_DUE_SQL = text(f"SELECT {NEW_EVENTS} OR {outbox.DUE_BY}")
_OPEN_SESSIONS_SQL = text(
    "SELECT cwd, state, last_event_at, codex_pid, codex_start FROM sessions"
    " WHERE state != 'final'")
_CLOSED_TURNS_SQL = text(
    "SELECT DISTINCT s.cwd FROM turns t JOIN sessions s ON s.session_id = t.session_id"
    " WHERE t.state = 'closed'")


def nothing_due(engine: Engine, home: Path | None, now: float, window: float,
                env: Mapping[str, str] | None = None) -> bool:
    """Nothing the worker must do within ``window`` seconds of ``now``: no event to
    ingest or parse, no closed turn to trace, no ended session (no hook follows a
    SessionEnd, so its grace is the worker's to wait out), no open session whose Codex
    has exited or whose TTL falls in the window, no outbox row due in it.  An open
    session whose Codex still runs is not work: its next hook starts a worker.  Held rows
    and failed rows retried later are not work: the next hook or command starts a
    worker, which picks them up."""
    if ingest.overflow_files(home):
        return False
    horizon = now + window
    with db.read(engine) as conn:
        if conn.execute(_DUE_SQL, {"horizon": horizon}).scalar():
            return False
        sessions = conn.execute(_OPEN_SESSIONS_SQL).all()
        closed = [r[0] for r in conn.execute(_CLOSED_TURNS_SQL)] if sessions else []
    cfgs = Configs(env)
    for cwd, state, last_at, pid, start in sessions:
        if state == "ended":
            return False  # no hook comes after SessionEnd: the grace is ours to wait out
        if pid is not None and not codex_alive(pid, start):
            return False  # Codex died (no Stop/SessionEnd will come): the sweep finalises it
        if (last_at or 0) + cfgs.get(cwd).session_ttl <= horizon:
            return False
    return not any(cfgs.get(cwd).turn_traces for cwd in closed)


def db_identity(home: Path) -> tuple[int, int] | None:
    """(device, inode) of the database file, None when it is gone."""
    try:
        st = os.stat(paths.db_path(home))
    except OSError:
        return None
    return st.st_dev, st.st_ino
