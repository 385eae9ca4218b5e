"""The SQL behind the read commands (`spool status/history/errors/retry/...`).

Plain functions: each takes a SQLAlchemy ``Connection`` (open it with
``db.read(engine)`` for reads, ``db.write(engine)`` for the few writes) and
returns plain dicts / lists of dicts.  The commands (spool/commands/read.py,
manage.py, uninstall.py) only format them.

The list queries behind ``history``, ``errors`` and ``retry`` must answer as
fast on a spool of a million events as on an empty one, so every one of them
walks an index newest-first and stops at ``LIMIT`` (or reads only the small
not-yet-delivered part of ``outbox`` through ``ix_outbox_state``); none of them
counts or scans the big tables.  ``scripts/bench_cli.py`` measures it.

Times are Unix epoch seconds (floats), as stored.
"""
from __future__ import annotations

from typing import Iterable, Sequence

from sqlalchemy import Connection, bindparam, text

from . import outbox
from .outbox import under
# The outbox statements the read commands use live in spool.outbox (their one owner).
from .outbox import (PAUSED_REASON, RETRY_STATES, count_delivered, hold_paused,  # noqa: F401
                     next_attempt_at, retry_candidates)
from .outbox import by_state as outbox_by_state  # noqa: F401
from .outbox import requeue_candidates as requeue  # noqa: F401
# The highest code point: "prefix" <= id < "prefix" + MAX_CHAR selects ids
# starting with prefix through the primary-key index.
_MAX_CHAR = "\U0010ffff"


def _rows(result) -> list[dict]:
    return [dict(r._mapping) for r in result]


# --- status ------------------------------------------------------------------

def counts(conn: Connection) -> dict:
    """Row counts for ``spool status`` (these do count: status is not a list command)."""
    one = lambda sql: conn.execute(text(sql)).scalar_one()  # noqa: E731
    return {
        "events": one("SELECT count(*) FROM raw_events"),
        "sessions": one("SELECT count(*) FROM sessions"),
        "traces": one("SELECT count(*) FROM traces"),
        "quarantined": one("SELECT count(*) FROM quarantine"),
    }


def paused_at(conn: Connection, project: str) -> float | None:
    """When ``project`` (or a directory above it) was paused, else None."""
    return conn.execute(text(
        f"SELECT min(paused_at) FROM pauses WHERE {under(':p', 'project')}"),
        {"p": project}).scalar()


# --- history -------------------------------------------------------------------

def history(conn: Connection, limit: int) -> list[dict]:
    """The ``limit`` newest traces, newest first, one row per trace x sink.

    Keys: trace_id, kind, name, session_id, project, created_at, sink, state,
    attempts, sent_at, last_status, last_error, next_attempt_at.  A trace with
    no outbox row yet has sink/state/... None.
    """
    return _rows(conn.execute(text(
        "SELECT t.trace_id, t.kind, t.name, t.session_id, t.project, t.created_at,"
        " o.sink, o.state, o.attempts, o.sent_at, o.last_status, o.last_error,"
        " o.next_attempt_at"
        " FROM (SELECT trace_id, kind, name, session_id, project, created_at FROM traces"
        "       ORDER BY created_at DESC LIMIT :n) AS t"
        " LEFT JOIN outbox AS o ON o.trace_id = t.trace_id"
        " ORDER BY t.created_at DESC, t.trace_id, o.sink"), {"n": limit}))


def clear_delivered(conn: Connection) -> dict:
    """Forget delivered history: traces whose *every* outbox row is 'sent'.

    Deletes their attempts, outbox rows and trace rows; a trace with any row
    not yet sent (or with no outbox row at all) is never touched.  Run inside
    ``db.write``.  Returns {"traces": n, "outbox": n, "attempts": n}.
    """
    return outbox.delete_traces(conn, select=outbox.DELIVERED)


# --- errors ----------------------------------------------------------------------

def errors(conn: Connection, limit: int,
           hook_lines: Iterable[tuple[str, str]] = ()) -> list[dict]:
    """Every kind of problem, merged, newest first, at most ``limit``.

    Keys: at (epoch seconds), kind ("delivery" | "quarantine" | "worker" | the
    ``errors.source`` | "hook"), message, trace_id, sink, http_status,
    error_class (None where they do not apply).  ``hook_lines`` are the
    (ISO timestamp, message) pairs of ``spool.ingest.hook_error_lines``.
    """
    out: list[dict] = []
    # Newest failed attempts through the partial index ix_attempts_failed.
    for r in conn.execute(text(
            "SELECT started_at, trace_id, sink, http_status, outcome, error_class, message"
            " FROM delivery_attempts"
            " WHERE outcome != 'sent' ORDER BY started_at DESC LIMIT :n"), {"n": limit}):
        m = r._mapping
        out.append({"at": m["started_at"], "kind": "delivery", "message": m["message"] or "",
                    "trace_id": m["trace_id"], "sink": m["sink"],
                    "http_status": m["http_status"], "error_class": m["error_class"],
                    "outcome": m["outcome"]})
    for r in conn.execute(text(
            "SELECT quarantined_at, raw_event_id, source, reason FROM quarantine"
            " ORDER BY quarantined_at DESC LIMIT :n"), {"n": limit}):
        m = r._mapping
        out.append({"at": m["quarantined_at"], "kind": "quarantine",
                    "message": f"event {m['raw_event_id'] or '?'} ({m['source']}) quarantined:"
                               f" {m['reason']}",
                    "trace_id": None, "sink": None, "http_status": None,
                    "error_class": None, "outcome": None})
    for r in conn.execute(text(
            "SELECT at, source, message FROM errors ORDER BY at DESC LIMIT :n"), {"n": limit}):
        m = r._mapping
        out.append({"at": m["at"], "kind": m["source"], "message": m["message"],
                    "trace_id": None, "sink": None, "http_status": None,
                    "error_class": None, "outcome": None})
    for stamp, message in hook_lines:
        out.append({"at": _parse_iso(stamp), "kind": "hook", "message": message,
                    "trace_id": None, "sink": None, "http_status": None,
                    "error_class": None, "outcome": None})
    out.sort(key=lambda e: e["at"] or 0.0, reverse=True)
    return out[:limit]


def _parse_iso(stamp: str) -> float | None:
    from datetime import datetime, timezone

    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


# --- trace ids ---------------------------------------------------------------------

def resolve_trace_id(conn: Connection, prefix: str) -> str | list[str]:
    """The one trace id starting with ``prefix`` (exact ids win).

    Returns the id, or a list of the (up to 5) candidates when there is not
    exactly one (empty: unknown).
    """
    exact = conn.execute(text("SELECT trace_id FROM traces WHERE trace_id = :p"),
                         {"p": prefix}).scalar()
    if exact is not None:
        return exact
    found = [r[0] for r in conn.execute(text(
        "SELECT trace_id FROM traces WHERE trace_id >= :p AND trace_id < :hi"
        " ORDER BY trace_id LIMIT 5"), {"p": prefix, "hi": prefix + _MAX_CHAR})]
    return found[0] if len(found) == 1 else found


def get_trace(conn: Connection, trace_id: str) -> dict | None:
    """The trace row (body as the stored JSON text) plus its outbox rows under "outbox"."""
    row = conn.execute(text("SELECT * FROM traces WHERE trace_id = :t"), {"t": trace_id}).first()
    if row is None:
        return None
    out = dict(row._mapping)
    out["outbox"] = _rows(conn.execute(text(
        "SELECT sink, state, attempts, sent_at, next_attempt_at, last_status, last_error,"
        " held_reason, response_id FROM outbox WHERE trace_id = :t ORDER BY sink"),
        {"t": trace_id}))
    return out


# --- retry ------------------------------------------------------------------------

def unknown_trace_ids(conn: Connection, trace_ids: Sequence[str]) -> list[str]:
    if not trace_ids:
        return []
    known = {r[0] for r in conn.execute(text(
        "SELECT trace_id FROM traces WHERE trace_id IN :ids").bindparams(
        bindparam("ids", expanding=True)), {"ids": list(trace_ids)})}
    return [t for t in trace_ids if t not in known]


# --- pause / resume -------------------------------------------------------------------

def pause(conn: Connection, project: str, now: float) -> dict:
    """Pause ``project``: the hook records nothing there, and its undelivered
    rows (pending / failed) are held with held_reason 'project paused'.

    Run inside ``db.write``.  Returns {"already": bool, "held": n}.
    """
    already = conn.execute(text("SELECT 1 FROM pauses WHERE project = :p"),
                           {"p": project}).first() is not None
    if not already:
        conn.execute(text("INSERT INTO pauses (project, paused_at) VALUES (:p, :now)"),
                     {"p": project, "now": now})
    held = hold_paused(conn, now, project)
    return {"already": already, "held": held}


def resume(conn: Connection, project: str, now: float) -> dict:
    """Un-pause ``project`` and release its 'project paused' rows (due now).

    Run inside ``db.write``.  Returns {"was_paused": bool, "released": n}.
    """
    was = conn.execute(text("DELETE FROM pauses WHERE project = :p"), {"p": project}).rowcount
    released = outbox.release_paused(conn, project, now)
    return {"was_paused": bool(was), "released": released}


# --- sessions ------------------------------------------------------------------------

def sessions(conn: Connection, limit: int, run: str | None = None) -> list[dict]:
    """The ``limit`` most recently active sessions, newest first (only run ``run``'s
    when given: ix_sessions_run).

    Keys: session_id, project, cwd, model, state, first_event_at,
    last_event_at, events, turns, traces, run_id.
    """
    where = " WHERE s.run_id = :run" if run is not None else ""
    return _rows(conn.execute(text(
        "SELECT s.session_id, s.project, s.cwd, s.model, s.state, s.first_event_at,"
        " s.last_event_at, s.event_count AS events,"
        " (SELECT count(*) FROM turns AS u WHERE u.session_id = s.session_id) AS turns,"
        " (SELECT count(*) FROM traces AS t WHERE t.session_id = s.session_id) AS traces,"
        f" s.run_id FROM sessions AS s{where} ORDER BY s.last_event_at DESC LIMIT :n"),
        {"n": limit, "run": run}))


# --- uninstall ---------------------------------------------------------------------

def undelivered_trace_ids(conn: Connection, project: str) -> list[str]:
    """Trace ids of ``project`` with an outbox row not yet sent (sorted)."""
    return [r[0] for r in conn.execute(text(
        "SELECT DISTINCT t.trace_id FROM traces AS t JOIN outbox AS o ON o.trace_id = t.trace_id"
        " WHERE t.project = :p AND o.state != 'sent' ORDER BY t.trace_id"), {"p": project})]
