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

from typing import Iterable

from sqlalchemy import Connection, text

from . import outbox
from .outbox import under
# The outbox statements the read commands use live in spool.outbox (their one owner).
from .outbox import (PAUSED_REASON, count_delivered, hold_paused,  # noqa: F401
                     next_attempt_at, retry_candidates)
from .outbox import by_state as outbox_by_state  # noqa: F401
from .outbox import requeue_candidates as requeue  # noqa: F401
# What became of a failed delivery, by its outbox row's state now (`spool errors`).
RESULT_OF_STATE = {"sent": "later sent", "dead": "dead", "held": "held", "failed": "retrying",
                   "pending": "retrying", "in_flight": "retrying"}
# Requests really made for an outbox row: its attempts, less the ones held before
# sending (no credentials, paused...).  `retry` resets outbox.attempts; this is not reset.
_REQUESTS = ("(SELECT count(*) FROM delivery_attempts AS da WHERE da.outbox_id = o.id"
             " AND NOT (da.outcome = 'held' AND da.http_status IS NULL))")
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

def _history_where(session: str | None, project: str | None, state: str | None,
                   since: float | None) -> tuple[str, dict]:
    where, params = [], {}
    if session:  # an id or a unique-ish prefix, through ix_traces_session
        where.append("session_id >= :sess AND session_id < :sess_hi")
        params.update(sess=session, sess_hi=session + _MAX_CHAR)
    if project:  # the project or a directory under it
        where.append("(project = :proj OR substr(project, 1, length(:proj) + 1) = :proj || '/')")
        params["proj"] = project.rstrip("/") or "/"
    if state:
        where.append("EXISTS (SELECT 1 FROM outbox AS f WHERE f.trace_id = traces.trace_id"
                     " AND f.state = :state)")
        params["state"] = state
    if since is not None:
        where.append("created_at >= :since")
        params["since"] = since
    return (" WHERE " + " AND ".join(where)) if where else "", params


def history(conn: Connection, limit: int, *, session: str | None = None,
            project: str | None = None, state: str | None = None,
            since: float | None = None) -> list[dict]:
    """The ``limit`` newest traces, newest first, one row per trace x sink.

    Filters: ``session`` (id or prefix), ``project`` (it or below it),
    ``state`` (traces with an outbox row in it; only those rows are listed),
    ``since`` (created at or after, epoch).  Keys: trace_id, kind, name,
    session_id, project, created_at, sink, state, attempts, sent_at,
    last_status, last_error, next_attempt_at.  A trace with no outbox row yet
    has sink/state/... None.
    """
    where, params = _history_where(session, project, state, since)
    return _rows(conn.execute(text(
        "SELECT t.trace_id, t.kind, t.name, t.session_id, t.project, t.created_at,"
        f" o.sink, o.state, {_REQUESTS} AS attempts, o.sent_at, o.last_status, o.last_error,"
        " o.next_attempt_at"
        " FROM (SELECT trace_id, kind, name, session_id, project, created_at FROM traces"
        f"       {where} ORDER BY created_at DESC LIMIT :n) AS t"
        " LEFT JOIN outbox AS o ON o.trace_id = t.trace_id"
        + (" AND o.state = :state" if state else "") +
        " ORDER BY t.created_at DESC, t.trace_id, o.sink"), {"n": limit, **params}))


def last_trace_rowid(conn: Connection) -> int:
    """The newest traces rowid (0: none); `history --follow` lists what comes after."""
    return conn.execute(text("SELECT coalesce(max(rowid), 0) FROM traces")).scalar_one()


def traces_after(conn: Connection, rowid: int, *, session: str | None = None,
                 project: str | None = None, state: str | None = None,
                 since: float | None = None, limit: int = 500) -> list[dict]:
    """Traces added after ``rowid``, oldest first, one row per trace x sink (as
    :func:`history`, plus ``rowid``), same filters."""
    where, params = _history_where(session, project, state, since)
    where = (where + " AND" if where else " WHERE") + " rowid > :after"
    return _rows(conn.execute(text(
        "SELECT t.rowid, t.trace_id, t.kind, t.name, t.session_id, t.project, t.created_at,"
        f" o.sink, o.state, {_REQUESTS} AS attempts, o.sent_at, o.last_status, o.last_error,"
        " o.next_attempt_at"
        " FROM (SELECT rowid, trace_id, kind, name, session_id, project, created_at FROM traces"
        f"       {where} ORDER BY rowid LIMIT :n) AS t"
        " LEFT JOIN outbox AS o ON o.trace_id = t.trace_id"
        + (" AND o.state = :state" if state else "") +
        " ORDER BY t.rowid, o.sink"), {"n": limit, "after": rowid, **params}))


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
    # Newest failed attempts through the partial index ix_attempts_failed, each with
    # what became of its delivery since (the outbox row's state now).
    for r in conn.execute(text(
            "SELECT a.started_at, a.trace_id, a.sink, a.http_status, a.outcome, a.error_class,"
            " a.message, o.state AS now_state"
            " FROM (SELECT * FROM delivery_attempts WHERE outcome != 'sent'"
            "       ORDER BY started_at DESC LIMIT :n) AS a"
            " LEFT JOIN outbox AS o ON o.id = a.outbox_id ORDER BY a.started_at DESC"),
            {"n": limit}):
        m = r._mapping
        out.append({"at": m["started_at"], "kind": "delivery", "message": m["message"] or "",
                    "trace_id": m["trace_id"], "sink": m["sink"],
                    "http_status": m["http_status"], "error_class": m["error_class"],
                    "outcome": m["outcome"],
                    "result": RESULT_OF_STATE.get(m["now_state"], "forgotten")})
    for r in conn.execute(text(
            "SELECT quarantined_at, raw_event_id, source, reason FROM quarantine"
            " ORDER BY quarantined_at DESC LIMIT :n"), {"n": limit}):
        m = r._mapping
        out.append(_problem(m["quarantined_at"], "quarantine",
                            f"event {m['raw_event_id'] or '?'} ({m['source']}) quarantined:"
                            f" {m['reason']}"))
    # The delivery side also logs dead/held rows as "deliver:<sink>" errors: the
    # attempts above already list each of them once.
    for r in conn.execute(text(
            "SELECT at, source, message FROM errors WHERE source NOT LIKE 'deliver:%'"
            " ORDER BY at DESC LIMIT :n"), {"n": limit}):
        out.append(_problem(r.at, r.source, r.message))
    out += [_problem(_parse_iso(stamp), "hook", message) for stamp, message in hook_lines]
    out.sort(key=lambda e: e["at"] or 0.0, reverse=True)
    return out[:limit]


def _problem(at: float | None, kind: str, message: str) -> dict:
    """An `errors` row that is not a delivery attempt: no trace, sink or status."""
    return {"at": at, "kind": kind, "message": message, "trace_id": None, "sink": None,
            "http_status": None, "error_class": None, "outcome": None, "result": None}


def _parse_iso(stamp: str) -> float | None:
    from datetime import datetime, timezone

    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


# --- trace ids ---------------------------------------------------------------------

def _resolve_prefix(conn: Connection, table: str, column: str, prefix: str) -> str | list[str]:
    """The one ``column`` value of ``table`` starting with ``prefix`` (exact ids win);
    else a list of the (up to 5) candidates (empty: unknown).  Walks the column's index."""
    exact = conn.execute(text(f"SELECT {column} FROM {table} WHERE {column} = :p"),
                         {"p": prefix}).scalar()
    if exact is not None:
        return exact
    found = [r[0] for r in conn.execute(text(
        f"SELECT {column} FROM {table} WHERE {column} >= :p AND {column} < :hi"
        f" ORDER BY {column} LIMIT 5"), {"p": prefix, "hi": prefix + _MAX_CHAR})]
    return found[0] if len(found) == 1 else found


def resolve_trace_id(conn: Connection, prefix: str) -> str | list[str]:
    """The one trace id starting with ``prefix`` (exact ids win), else the candidates."""
    return _resolve_prefix(conn, "traces", "trace_id", prefix)


def get_trace(conn: Connection, trace_id: str) -> dict | None:
    """The trace row (body as the stored JSON text) plus its outbox rows under "outbox"."""
    row = conn.execute(text("SELECT * FROM traces WHERE trace_id = :t"), {"t": trace_id}).first()
    if row is None:
        return None
    out = dict(row._mapping)
    out["outbox"] = _rows(conn.execute(text(
        f"SELECT o.sink, o.state, {_REQUESTS} AS attempts, o.sent_at, o.next_attempt_at,"
        " o.last_status, o.last_error, o.held_reason, o.response_id FROM outbox AS o"
        " WHERE o.trace_id = :t ORDER BY o.sink"),
        {"t": trace_id}))
    return out


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


# --- show <session> ----------------------------------------------------------------

def resolve_session_id(conn: Connection, prefix: str) -> str | list[str]:
    """The one session id starting with ``prefix`` (exact ids win), else the candidates."""
    return _resolve_prefix(conn, "sessions", "session_id", prefix)


def session_trace_ids(conn: Connection, session_id: str) -> list[str]:
    """The session's trace ids, oldest first (through ix_traces_session)."""
    return [r[0] for r in conn.execute(text(
        "SELECT trace_id FROM traces WHERE session_id = :s ORDER BY created_at, trace_id"),
        {"s": session_id})]


# --- spool ui ------------------------------------------------------------------------

def session_page(conn: Connection, limit: int, *, after: tuple[float, int] | None = None,
                 project: str | None = None, state: str | None = None,
                 since: float | None = None, until: float | None = None,
                 run: str | None = None) -> list[dict]:
    """One page of sessions for `spool ui`, newest activity first (keyset pagination).

    ``after`` is the (last_event_at, row) of the previous page's last row: the query
    walks ``ix_sessions_last`` (``ix_sessions_open`` for a state other than 'final')
    backwards from there and stops at ``LIMIT``, so a page costs the same on any
    history; a filter on a rare project or day still walks past the rows it skips.  ``since``/``until`` bound last_event_at [since,
    until).  ``run``: only that run's sessions (their SPOOL_RUN_ID), found through
    ``ix_sessions_run`` (a run's few sessions, sorted).  Keys: row, session_id, project,
    cwd, model, state, first_event_at, last_event_at, events, turns, run_id.
    """
    where, params = ["1"], {"n": limit}
    if after is not None:
        where.append("s.last_event_at <= :at AND (s.last_event_at < :at OR s.rowid < :row)")
        params.update(at=after[0], row=after[1])
    if until is not None:
        where.append("s.last_event_at < :until")
        params["until"] = until
    if since is not None:
        where.append("s.last_event_at >= :since")
        params["since"] = since
    if project:
        where.append("s.project = :project")
        params["project"] = project
    index = "ix_sessions_last"
    if state:
        where.append("s.state = :state")
        params["state"] = state
        if state != "final":  # the few not-final sessions have their own partial index
            where.append("s.state != 'final'")
            index = "ix_sessions_open"
    if run:
        where.append("s.run_id = :run")
        params["run"] = run
        index = "ix_sessions_run"
    return _rows(conn.execute(text(
        "SELECT s.rowid AS row, s.session_id, s.project, s.cwd, s.model, s.state,"
        " s.first_event_at, s.last_event_at, s.event_count AS events,"
        " (SELECT count(*) FROM turns AS u WHERE u.session_id = s.session_id) AS turns,"
        f" s.run_id FROM sessions AS s INDEXED BY {index}"
        f" WHERE {' AND '.join(where)}"
        " ORDER BY s.last_event_at DESC, s.rowid DESC LIMIT :n"), params))


def session_info(conn: Connection, session_id: str) -> dict | None:
    """One session's row for `spool ui` (None: unknown)."""
    row = conn.execute(text(
        "SELECT session_id, project, cwd, model, state, first_event_at, last_event_at,"
        " event_count AS events, codex_version, git_branch, source, ended_at, run_id"
        " FROM sessions WHERE session_id = :s"), {"s": session_id}).first()
    return dict(row._mapping) if row is not None else None
