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

from typing import Any, Iterable, Sequence

from sqlalchemy import Connection, bindparam, text

RETRY_STATES = ("failed", "dead", "held")
# What became of a failed delivery, by its outbox row's state now (`spool errors`).
RESULT_OF_STATE = {"sent": "later sent", "dead": "dead", "held": "held", "failed": "retrying",
                   "pending": "retrying", "in_flight": "retrying"}
# Requests really made for an outbox row: its attempts, less the ones held before
# sending (no credentials, paused...).  `retry` resets outbox.attempts; this is not reset.
_REQUESTS = ("(SELECT count(*) FROM delivery_attempts AS da WHERE da.outbox_id = o.id"
             " AND NOT (da.outcome = 'held' AND da.http_status IS NULL))")
PAUSED_REASON = "project paused"
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


def outbox_by_state(conn: Connection) -> dict[str, int]:
    """{state: rows} for every outbox state (zeros included)."""
    from .schema import OUTBOX_STATES

    out = {s: 0 for s in OUTBOX_STATES}
    for state, n in conn.execute(text("SELECT state, count(*) FROM outbox GROUP BY state")):
        out[state] = n
    return out


def next_attempt_at(conn: Connection) -> float | None:
    """When the worker will next try a pending or failed row (None: nothing due)."""
    # One MIN per state keeps each on an index (ix_outbox_state then ix_outbox_due).
    values = [conn.execute(text(
        "SELECT min(next_attempt_at) FROM outbox WHERE state = :s"), {"s": s}).scalar()
        for s in ("pending", "failed")]
    values = [v for v in values if v is not None]
    return min(values) if values else None


def paused_at(conn: Connection, project: str) -> float | None:
    """When ``project`` (or a directory above it) was paused, else None."""
    return conn.execute(text(
        "SELECT min(paused_at) FROM pauses WHERE :p = project "
        "OR substr(:p, 1, length(project) + 1) = project || '/'"), {"p": project}).scalar()


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


_DELIVERED = (
    "SELECT trace_id FROM outbox GROUP BY trace_id HAVING sum(state != 'sent') = 0"
)


def count_delivered(conn: Connection) -> int:
    """Traces whose every outbox row is 'sent' (what ``history --clear`` forgets)."""
    return conn.execute(text(f"SELECT count(*) FROM ({_DELIVERED})")).scalar_one()


def clear_delivered(conn: Connection) -> dict:
    """Forget delivered history: traces whose *every* outbox row is 'sent'.

    Deletes their attempts, outbox rows and trace rows; a trace with any row
    not yet sent (or with no outbox row at all) is never touched.  Run inside
    ``db.write``.  Returns {"traces": n, "outbox": n, "attempts": n}.
    """
    conn.exec_driver_sql("DROP TABLE IF EXISTS temp.spool_forget")
    conn.exec_driver_sql(f"CREATE TEMP TABLE spool_forget AS {_DELIVERED}")
    try:
        attempts = conn.exec_driver_sql(
            "DELETE FROM delivery_attempts WHERE outbox_id IN (SELECT id FROM outbox"
            " WHERE trace_id IN (SELECT trace_id FROM temp.spool_forget))").rowcount
        outbox = conn.exec_driver_sql(
            "DELETE FROM outbox WHERE trace_id IN (SELECT trace_id FROM temp.spool_forget)"
        ).rowcount
        traces = conn.exec_driver_sql(
            "DELETE FROM traces WHERE trace_id IN (SELECT trace_id FROM temp.spool_forget)"
        ).rowcount
    finally:
        conn.exec_driver_sql("DROP TABLE IF EXISTS temp.spool_forget")
    return {"traces": traces, "outbox": outbox, "attempts": attempts}


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
        out.append({"at": m["quarantined_at"], "kind": "quarantine",
                    "message": f"event {m['raw_event_id'] or '?'} ({m['source']}) quarantined:"
                               f" {m['reason']}",
                    "trace_id": None, "sink": None, "http_status": None,
                    "error_class": None, "outcome": None, "result": None})
    # The delivery side also logs dead/held rows as "deliver:<sink>" errors: the
    # attempts above already list each of them once.
    for r in conn.execute(text(
            "SELECT at, source, message FROM errors WHERE source NOT LIKE 'deliver:%'"
            " ORDER BY at DESC LIMIT :n"), {"n": limit}):
        m = r._mapping
        out.append({"at": m["at"], "kind": m["source"], "message": m["message"],
                    "trace_id": None, "sink": None, "http_status": None,
                    "error_class": None, "outcome": None, "result": None})
    for stamp, message in hook_lines:
        out.append({"at": _parse_iso(stamp), "kind": "hook", "message": message,
                    "trace_id": None, "sink": None, "http_status": None,
                    "error_class": None, "outcome": None, "result": None})
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
        f"SELECT o.sink, o.state, {_REQUESTS} AS attempts, o.sent_at, o.next_attempt_at,"
        " o.last_status, o.last_error, o.held_reason, o.response_id FROM outbox AS o"
        " WHERE o.trace_id = :t ORDER BY o.sink"),
        {"t": trace_id}))
    return out


# --- retry ------------------------------------------------------------------------

def retry_candidates(conn: Connection, trace_ids: Sequence[str] | None = None,
                     states: Sequence[str] = RETRY_STATES) -> list[dict]:
    """Outbox rows ``spool retry`` would requeue (oldest first).

    Rows held because their project is paused stay held (``spool resume``
    releases them).  Keys: outbox_id, trace_id, sink, state, attempts,
    last_status, last_error, held_reason, next_attempt_at.
    """
    sql = ("SELECT o.id AS outbox_id, o.trace_id, o.sink, o.state, o.attempts, o.last_status,"
           " o.last_error, o.held_reason, o.next_attempt_at"
           " FROM outbox AS o INDEXED BY ix_outbox_state WHERE o.state IN :states"
           " AND NOT (o.state = 'held' AND coalesce(o.held_reason, '') = :paused)")
    params: dict[str, Any] = {"states": list(states), "paused": PAUSED_REASON}
    bind = [bindparam("states", expanding=True)]
    if trace_ids is not None:
        sql += " AND o.trace_id IN :ids"
        params["ids"] = list(trace_ids)
        bind.append(bindparam("ids", expanding=True))
    sql += " ORDER BY o.id"
    return _rows(conn.execute(text(sql).bindparams(*bind), params))


def requeue(conn: Connection, now: float, trace_ids: Sequence[str] | None = None,
            states: Sequence[str] = RETRY_STATES) -> list[dict]:
    """Make the retry candidates due now: state 'pending', next_attempt_at=now.

    Run inside ``db.write``.  Returns the rows as they were before.
    (Fallback for ``spool.deliver.requeue`` when that is not available.)
    """
    rows = retry_candidates(conn, trace_ids, states)
    if rows:
        conn.execute(text(
            "UPDATE outbox SET state = 'pending', next_attempt_at = :now, held_reason = NULL,"
            " lease_owner = NULL, lease_until = NULL, updated_at = :now WHERE id IN :ids"
        ).bindparams(bindparam("ids", expanding=True)),
            {"now": now, "ids": [r["outbox_id"] for r in rows]})
    return rows


def unknown_trace_ids(conn: Connection, trace_ids: Sequence[str]) -> list[str]:
    if not trace_ids:
        return []
    known = {r[0] for r in conn.execute(text(
        "SELECT trace_id FROM traces WHERE trace_id IN :ids").bindparams(
        bindparam("ids", expanding=True)), {"ids": list(trace_ids)})}
    return [t for t in trace_ids if t not in known]


# --- pause / resume -------------------------------------------------------------------

_UNDER = "(t.project = :p OR substr(t.project, 1, length(:p) + 1) = :p || '/')"


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


def hold_paused(conn: Connection, now: float, project: str | None = None) -> int:
    """Hold the pending / failed outbox rows of paused projects (all, or ``project``).

    Idempotent; the delivery side can call it before claiming so traces made
    from events recorded before a pause also wait.
    """
    if project is not None:
        where, params = _UNDER, {"p": project}
    else:
        where = ("EXISTS (SELECT 1 FROM pauses AS p WHERE t.project = p.project"
                 " OR substr(t.project, 1, length(p.project) + 1) = p.project || '/')")
        params = {}
    return conn.execute(text(
        "UPDATE outbox SET state = 'held', held_reason = :reason, updated_at = :now"
        " WHERE state IN ('pending', 'failed') AND trace_id IN"
        f" (SELECT t.trace_id FROM traces AS t WHERE {where})"),
        {"reason": PAUSED_REASON, "now": now, **params}).rowcount


def resume(conn: Connection, project: str, now: float) -> dict:
    """Un-pause ``project`` and release its 'project paused' rows (due now).

    Run inside ``db.write``.  Returns {"was_paused": bool, "released": n}.
    """
    was = conn.execute(text("DELETE FROM pauses WHERE project = :p"), {"p": project}).rowcount
    released = conn.execute(text(
        "UPDATE outbox SET state = 'pending', held_reason = NULL, next_attempt_at = :now,"
        " updated_at = :now WHERE state = 'held' AND held_reason = :reason AND trace_id IN"
        f" (SELECT t.trace_id FROM traces AS t WHERE {_UNDER})"
        # A directory above it may still be paused: those rows stay held.
        " AND NOT EXISTS (SELECT 1 FROM pauses AS p, traces AS t2"
        "  WHERE t2.trace_id = outbox.trace_id AND (t2.project = p.project"
        "  OR substr(t2.project, 1, length(p.project) + 1) = p.project || '/'))"),
        {"p": project, "now": now, "reason": PAUSED_REASON}).rowcount
    return {"was_paused": bool(was), "released": released}


# --- sessions ------------------------------------------------------------------------

def sessions(conn: Connection, limit: int) -> list[dict]:
    """The ``limit`` most recently active sessions, newest first.

    Keys: session_id, project, cwd, model, state, first_event_at,
    last_event_at, events, turns, traces.
    """
    return _rows(conn.execute(text(
        "SELECT s.session_id, s.project, s.cwd, s.model, s.state, s.first_event_at,"
        " s.last_event_at, s.event_count AS events,"
        " (SELECT count(*) FROM turns AS u WHERE u.session_id = s.session_id) AS turns,"
        " (SELECT count(*) FROM traces AS t WHERE t.session_id = s.session_id) AS traces"
        " FROM sessions AS s ORDER BY s.last_event_at DESC LIMIT :n"), {"n": limit}))


# --- uninstall ---------------------------------------------------------------------

def undelivered_trace_ids(conn: Connection, project: str) -> list[str]:
    """Trace ids of ``project`` with an outbox row not yet sent (sorted)."""
    return [r[0] for r in conn.execute(text(
        "SELECT DISTINCT t.trace_id FROM traces AS t JOIN outbox AS o ON o.trace_id = t.trace_id"
        " WHERE t.project = :p AND o.state != 'sent' ORDER BY t.trace_id"), {"p": project})]


# --- show <session> ----------------------------------------------------------------

def resolve_session_id(conn: Connection, prefix: str) -> str | list[str]:
    """The one session id starting with ``prefix`` (exact ids win); else the (up to 5)
    candidates (empty: unknown)."""
    exact = conn.execute(text("SELECT session_id FROM sessions WHERE session_id = :p"),
                         {"p": prefix}).scalar()
    if exact is not None:
        return exact
    found = [r[0] for r in conn.execute(text(
        "SELECT session_id FROM sessions WHERE session_id >= :p AND session_id < :hi"
        " ORDER BY session_id LIMIT 5"), {"p": prefix, "hi": prefix + _MAX_CHAR})]
    return found[0] if len(found) == 1 else found


def session_trace_ids(conn: Connection, session_id: str) -> list[str]:
    """The session's trace ids, oldest first (through ix_traces_session)."""
    return [r[0] for r in conn.execute(text(
        "SELECT trace_id FROM traces WHERE session_id = :s ORDER BY created_at, trace_id"),
        {"s": session_id})]
