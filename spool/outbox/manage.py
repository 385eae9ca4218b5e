"""The commands' and retention's writes and reads on the outbox: held rows, retries, pauses,
counts, deleting traces with their rows."""
from __future__ import annotations

import json
from typing import Iterable, Sequence

from sqlalchemy import Connection, Engine, bindparam, text

from .. import db
from ..errors import SpoolError
from .core import PAUSED_REASON, RETRY_STATES, S, _PAUSED_TRACE, _q, transaction, under
from .lease import _bump_generation

# --- held rows, retries, pauses (the commands' writes) ----------------------------

def _filters(sink: str | None, trace_ids: Iterable[str] | None, params: dict) -> str:
    sql = ""
    if sink is not None:
        sql += " AND sink = :sink"
        params["sink"] = sink
    if trace_ids is not None:
        sql += " AND trace_id IN (SELECT value FROM json_each(:ids))"
        params["ids"] = json.dumps(list(trace_ids))
    return sql


def release_held(engine: Engine, now: float, *, sink: str | None = None,
                 trace_ids: Iterable[str] | None = None) -> int:
    """Held rows -> pending, due at ``now``; running dispatchers drop cached credentials.
    Returns the number of rows released."""
    params: dict = {"now": now}
    where = _filters(sink, trace_ids, params)
    with transaction(engine) as conn:
        n = conn.execute(text(
            f"UPDATE outbox SET state = '{S.PENDING.value}', held_reason = NULL,"
            f" next_attempt_at = :now, updated_at = :now WHERE state = '{S.HELD.value}'"
            + where), params).rowcount
        _bump_generation(conn)
    return n


def requeue(engine: Engine, now: float, *, trace_ids: Iterable[str] | None = None,
            states: Iterable[str] = RETRY_STATES, dry_run: bool = False) -> list[dict]:
    """Rows in ``states`` (optionally only these traces) made pending and due at ``now``,
    with a fresh attempt budget.  Returns what was (or, with ``dry_run``, would be)
    requeued: outbox_id, trace_id, sink, state, attempts, last_error, held_reason.
    ``dry_run`` changes nothing."""
    states = tuple(str(s) for s in states)
    bad = [s for s in states if s not in (S.PENDING, S.FAILED, S.DEAD, S.HELD, S.SENT)]
    if bad or not states:
        raise SpoolError(f"cannot requeue rows in state {', '.join(bad) or '(none)'}.",
                         "Choose among failed, dead, held (and sent to resend).")
    params: dict = {"now": now, "states": json.dumps(states)}
    where = " WHERE state IN (SELECT value FROM json_each(:states))" + _filters(
        None, trace_ids, params)
    select = text("SELECT id AS outbox_id, trace_id, sink, state, attempts, last_error, "
                  "held_reason FROM outbox" + where + " ORDER BY id")
    if dry_run:
        with db.read(engine) as conn:
            return [dict(r._mapping) for r in conn.execute(select, params)]
    with transaction(engine) as conn:
        found = [dict(r._mapping) for r in conn.execute(select, params)]
        if found:
            conn.execute(text(
                f"UPDATE outbox SET state = '{S.PENDING.value}', attempts = 0,"
                " first_attempt_at = NULL, held_reason = NULL, next_attempt_at = :now,"
                " lease_owner = NULL, lease_until = NULL, updated_at = :now" + where), params)
        _bump_generation(conn)
    return found


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
           f" AND NOT (o.state = '{S.HELD.value}' AND coalesce(o.held_reason, '') = :paused)")
    params: dict = {"states": [str(s) for s in states], "paused": PAUSED_REASON}
    bind = [bindparam("states", expanding=True)]
    if trace_ids is not None:
        sql += " AND o.trace_id IN :ids"
        params["ids"] = list(trace_ids)
        bind.append(bindparam("ids", expanding=True))
    sql += " ORDER BY o.id"
    return [dict(r._mapping) for r in conn.execute(text(sql).bindparams(*bind), params)]


def requeue_candidates(conn: Connection, now: float, trace_ids: Sequence[str] | None = None,
                       states: Sequence[str] = RETRY_STATES) -> list[dict]:
    """Make the retry candidates due now (state 'pending'), keeping their attempt
    counts.  Returns the rows as they were before."""
    rows = retry_candidates(conn, trace_ids, states)
    if rows:
        conn.execute(text(
            f"UPDATE outbox SET state = '{S.PENDING.value}', next_attempt_at = :now,"
            " held_reason = NULL, lease_owner = NULL, lease_until = NULL, updated_at = :now"
            " WHERE id IN :ids").bindparams(bindparam("ids", expanding=True)),
            {"now": now, "ids": [r["outbox_id"] for r in rows]})
    return rows


def hold_paused(conn: Connection, now: float, project: str | None = None) -> int:
    """Hold the pending / failed rows of paused projects (all, or those under ``project``).

    Idempotent; ``spool pause`` calls it, and ``spool retry`` after requeueing."""
    if project is not None:
        where, params = under("t.project", ":p"), {"p": project}
    else:
        where, params = _PAUSED_TRACE, {}
    return conn.execute(text(
        f"UPDATE outbox SET state = '{S.HELD.value}', held_reason = :reason, updated_at = :now"
        f" WHERE state IN ({_q(S.PENDING, S.FAILED)}) AND trace_id IN"
        f" (SELECT t.trace_id FROM traces AS t WHERE {where})"),
        {"reason": PAUSED_REASON, "now": now, **params}).rowcount


def release_paused(conn: Connection, project: str, now: float) -> int:
    """Release the 'project paused' rows under ``project`` (due now) unless a directory
    above it is still paused.  Run after deleting its pause."""
    return conn.execute(text(
        f"UPDATE outbox SET state = '{S.PENDING.value}', held_reason = NULL,"
        " next_attempt_at = :now, updated_at = :now"
        f" WHERE state = '{S.HELD.value}' AND held_reason = :reason AND trace_id IN"
        f" (SELECT t.trace_id FROM traces AS t WHERE {under('t.project', ':p')})"
        " AND NOT EXISTS (SELECT 1 FROM pauses AS p, traces AS t2"
        f"  WHERE t2.trace_id = outbox.trace_id AND {under('t2.project', 'p.project')})"),
        {"p": project, "now": now, "reason": PAUSED_REASON}).rowcount


# --- reading ------------------------------------------------------------------------

def by_state(conn: Connection) -> dict[str, int]:
    """{state: rows} for every outbox state (zeros included)."""
    out = {s.value: 0 for s in S}
    for state, n in conn.execute(text("SELECT state, count(*) FROM outbox GROUP BY state")):
        out[state] = n
    return out


def undelivered_by_state(conn: Connection) -> dict[str, int]:
    """{state: rows} for every state but 'sent' (one indexed count per state through
    ix_outbox_state: the cost grows with the undelivered rows, not with history)."""
    return {s.value: conn.execute(text("SELECT count(*) FROM outbox WHERE state = :s"),
                                  {"s": s.value}).scalar_one()
            for s in S if s is not S.SENT}


def next_attempt_at(conn: Connection) -> float | None:
    """When the worker will next try a pending or failed row (None: nothing due)."""
    # One MIN per state keeps each on an index (ix_outbox_state then ix_outbox_due).
    values = [conn.execute(text(
        "SELECT min(next_attempt_at) FROM outbox WHERE state = :s"), {"s": s.value}).scalar()
        for s in (S.PENDING, S.FAILED)]
    values = [v for v in values if v is not None]
    return min(values) if values else None


# --- deleting traces -----------------------------------------------------------------

# Traces whose every outbox row is sent (what `spool history --clear` forgets).
DELIVERED = ("SELECT trace_id FROM outbox GROUP BY trace_id"
             f" HAVING sum(state != '{S.SENT.value}') = 0")
# For retention: no row of the session's traces ("s.session_id") is unsent, or sent
# at or after :cutoff.
SESSION_SENT_BEFORE = (
    "NOT EXISTS (SELECT 1 FROM traces AS t JOIN outbox AS o ON o.trace_id = t.trace_id"
    " WHERE t.session_id = s.session_id"
    f" AND (o.state != '{S.SENT.value}' OR o.sent_at IS NULL OR o.sent_at >= :cutoff))")
# The same for a trace ("t.trace_id") without a session.
TRACE_SENT_BEFORE = (
    "NOT EXISTS (SELECT 1 FROM outbox AS o WHERE o.trace_id = t.trace_id"
    f"   AND (o.state != '{S.SENT.value}' OR o.sent_at IS NULL OR o.sent_at >= :cutoff))")


def count_delivered(conn: Connection) -> int:
    return conn.execute(text(f"SELECT count(*) FROM ({DELIVERED})")).scalar_one()


def delete_traces(conn: Connection, trace_ids: Iterable[str] | None = None, *,
                  select: str | None = None) -> dict:
    """Delete traces with their outbox rows and attempts: the ``trace_ids`` given, or
    those the SQL ``select`` (one trace_id column) returns.  Run in a write
    transaction.  Returns {"traces": n, "outbox": n, "attempts": n}."""
    conn.exec_driver_sql("DROP TABLE IF EXISTS temp.spool_forget")
    if select is not None:
        conn.exec_driver_sql(f"CREATE TEMP TABLE spool_forget AS {select}")
    else:
        conn.exec_driver_sql("CREATE TEMP TABLE spool_forget (trace_id TEXT)")
        ids = [(t,) for t in trace_ids or ()]
        if ids:
            conn.exec_driver_sql("INSERT INTO temp.spool_forget VALUES (?)", ids)
    forget = "(SELECT trace_id FROM temp.spool_forget)"
    try:
        attempts = conn.exec_driver_sql(
            "DELETE FROM delivery_attempts WHERE outbox_id IN"
            f" (SELECT id FROM outbox WHERE trace_id IN {forget})").rowcount
        outbox = conn.exec_driver_sql(f"DELETE FROM outbox WHERE trace_id IN {forget}").rowcount
        traces = conn.exec_driver_sql(f"DELETE FROM traces WHERE trace_id IN {forget}").rowcount
    finally:
        conn.exec_driver_sql("DROP TABLE IF EXISTS temp.spool_forget")
    return {"traces": traces, "outbox": outbox, "attempts": attempts}
