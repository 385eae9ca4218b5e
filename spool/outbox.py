"""The outbox: every statement on ``outbox`` and ``delivery_attempts``.

One row per trace x sink.  States (:class:`OutboxState`)::

    pending -> in_flight -> sent
                         -> failed  (due again at next_attempt_at)
                         -> dead    (gave up, see spool.retry)
                         -> held    (cannot be sent now: no credentials, auth
                                     rejected, sink or project paused ...)

A claim leases due rows to one owner (``lease_owner``, ``lease_until``;
``next_attempt_at`` is set to the lease expiry too, so the partial index
``ix_outbox_due`` alone finds expired leases).  Acks, renewals and releases
are conditional on the lease, so a worker whose lease was taken over cannot
overwrite the new owner's work.  Every attempt becomes a
``delivery_attempts`` row.

Functions taking a ``Connection`` run inside the caller's transaction
(:func:`transaction`); the ones taking an ``Engine`` open their own.  State
literals are written into the SQL text (never bound) so SQLite can prove the
partial indexes' conditions.
"""
from __future__ import annotations

import enum
import json
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Sequence

from sqlalchemy import Connection, Engine, bindparam, text

from . import db
from .errors import SpoolError


class OutboxState(str, enum.Enum):
    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    SENT = "sent"
    FAILED = "failed"
    DEAD = "dead"
    HELD = "held"

    def __str__(self) -> str:
        return self.value


S = OutboxState
RETRY_STATES = (S.FAILED, S.DEAD, S.HELD)
PAUSED_REASON = "project paused"
GENERATION_KEY = "deliver.generation"


def _q(*states: OutboxState) -> str:
    """``'pending', 'failed'``: states as SQL literals."""
    return ", ".join(f"'{s.value}'" for s in states)


def under(child: str, parent: str) -> str:
    """SQL: the path ``child`` is ``parent`` or below it (both SQL expressions).

    The one "project under a paused path" predicate (spool/hook.py keeps a
    stdlib copy)."""
    return (f"({child} = {parent} OR substr({child}, 1, length({parent}) + 1)"
            f" = {parent} || '/')")


# A trace whose project ("t.project") lies under some paused path.
_PAUSED_TRACE = f"EXISTS (SELECT 1 FROM pauses AS p WHERE {under('t.project', 'p.project')})"


def _due(a: str = "") -> str:
    """Rows a claim may take (``a``: table alias with its dot): due pending/failed rows,
    and in-flight rows whose lease expired."""
    return (f"{a}state IN ({_q(S.PENDING, S.FAILED, S.IN_FLIGHT)}) AND {a}next_attempt_at <= :now"
            f" AND ({a}state <> '{S.IN_FLIGHT.value}' OR {a}lease_until < :now)")


# Unfinished rows (the worker is not idle while there are some).
UNFINISHED = (f"EXISTS(SELECT 1 FROM outbox WHERE state IN"
              f" ({_q(S.PENDING, S.IN_FLIGHT, S.FAILED, S.HELD)}))")
# Rows the worker has to act on by ``:horizon`` (held rows wait for a person; a failed
# row only from its next attempt): what keeps an idle-exiting worker alive.
DUE_BY = (f"EXISTS(SELECT 1 FROM outbox WHERE state IN ({_q(S.PENDING, S.IN_FLIGHT)})"
          f" OR (state = '{S.FAILED.value}' AND next_attempt_at <= :horizon))")

# qmark style, for the aggregator's raw sqlite3 connection: one row per trace x sink.
ENQUEUE_SQL = (
    "INSERT OR IGNORE INTO outbox (trace_id, sink, state, attempts, created_at, next_attempt_at)"
    f" VALUES (?, ?, '{S.PENDING.value}', 0, ?, ?)")


@contextmanager
def transaction(bind: Engine | Connection) -> Iterator[Connection]:
    """One ``BEGIN IMMEDIATE`` transaction on an engine (a fresh connection) or on a
    connection kept open by its owner; commits on success, rolls back on error."""
    if isinstance(bind, Engine):
        with db.write(bind) as conn:
            yield conn
        return
    with bind.begin():
        yield bind


# --- claiming and acknowledging (the dispatcher's steps) -------------------------

_HOLD_PAUSED_SINKS = text(f"""
UPDATE outbox
SET state = '{S.HELD.value}', lease_owner = NULL, lease_until = NULL, updated_at = :now,
    held_reason = COALESCE((SELECT s.held_reason FROM sink_state s WHERE s.sink = outbox.sink),
                           'sink ' || outbox.sink || ' is paused')
WHERE {_due()} AND sink IN (SELECT sink FROM sink_state WHERE paused = 1)
""")

# Projects paused with `spool pause`: their due rows wait, held, until `spool resume`
# (traces made from events recorded before the pause included).  Only run when
# the pauses table is not empty; reads only unfinished rows (ix_outbox_due).
_ANY_PAUSE = text("SELECT 1 FROM pauses LIMIT 1")
_HOLD_PAUSED_DUE = text(f"""
UPDATE outbox
SET state = '{S.HELD.value}', held_reason = :reason, lease_owner = NULL, lease_until = NULL,
    updated_at = :now
WHERE id IN (
    SELECT o.id FROM outbox AS o INDEXED BY ix_outbox_due
    JOIN traces AS t ON t.trace_id = o.trace_id
    WHERE {_due("o.")}
      AND {_PAUSED_TRACE})
""")

CLAIM = text(f"""
UPDATE outbox
SET state = '{S.IN_FLIGHT.value}', lease_owner = :owner, lease_until = :lease_until,
    next_attempt_at = :lease_until, updated_at = :now
WHERE id IN (
    SELECT id FROM outbox INDEXED BY ix_outbox_due WHERE {_due()}
    ORDER BY next_attempt_at
    LIMIT :limit)
RETURNING id, trace_id, sink, attempts, first_attempt_at, created_at
""")

# The same for one sink's rows only (a batching sink's claim topped up to a full batch).
_CLAIM_SINK = text(f"""
UPDATE outbox
SET state = '{S.IN_FLIGHT.value}', lease_owner = :owner, lease_until = :lease_until,
    next_attempt_at = :lease_until, updated_at = :now
WHERE id IN (
    SELECT id FROM outbox INDEXED BY ix_outbox_due WHERE {_due()} AND sink = :sink
    ORDER BY next_attempt_at
    LIMIT :limit)
RETURNING id, trace_id, sink, attempts, first_attempt_at, created_at
""")

_TRACES = text("""
SELECT trace_id, kind, session_id, turn_id, revision, project, name, created_at, body
FROM traces WHERE trace_id IN :ids
""").bindparams(bindparam("ids", expanding=True))

_RENEW = text(f"""
UPDATE outbox SET lease_until = :lease_until, next_attempt_at = :lease_until, updated_at = :now
WHERE id IN :ids AND lease_owner = :owner AND state = '{S.IN_FLIGHT.value}'
RETURNING id
""").bindparams(bindparam("ids", expanding=True))

# A leased row given back: 'failed' if tried before (keeps its history), else 'pending'.
_UNLEASE = (f"state = CASE WHEN attempts > 0 THEN '{S.FAILED.value}' ELSE '{S.PENDING.value}'"
            " END, lease_owner = NULL, lease_until = NULL, next_attempt_at = :due,"
            " updated_at = :now")
_RELEASE = text(f"""
UPDATE outbox SET {_UNLEASE}
WHERE id IN :ids AND lease_owner = :owner AND state = '{S.IN_FLIGHT.value}'
""").bindparams(bindparam("ids", expanding=True))
_RELEASE_OWNER = text(f"UPDATE outbox SET {_UNLEASE}"
                      f" WHERE state = '{S.IN_FLIGHT.value}' AND lease_owner = :owner")

_ACK = text(f"""
UPDATE outbox
SET state = :state, attempts = attempts + :inc,
    first_attempt_at = CASE WHEN :inc > 0 THEN COALESCE(first_attempt_at, :started)
                            ELSE first_attempt_at END,
    next_attempt_at = :next, lease_owner = NULL, lease_until = NULL,
    last_status = COALESCE(:status, last_status), last_error = :error, held_reason = :held,
    sent_at = :sent_at, response_id = COALESCE(:rid, response_id), updated_at = :now
WHERE id = :id AND lease_owner = :owner AND state = '{S.IN_FLIGHT.value}'
""")

# Many rows delivered by one request: the _ACK of state 'sent' for all of them at once.
_ACK_SENT = text(f"""
UPDATE outbox
SET state = '{S.SENT.value}', attempts = attempts + :inc,
    first_attempt_at = CASE WHEN :inc > 0 THEN COALESCE(first_attempt_at, :started)
                            ELSE first_attempt_at END,
    next_attempt_at = :now, lease_owner = NULL, lease_until = NULL,
    last_status = COALESCE(:status, last_status), last_error = NULL, held_reason = NULL,
    sent_at = :now, response_id = COALESCE(:rid, response_id), updated_at = :now
WHERE id IN :ids AND lease_owner = :owner AND state = '{S.IN_FLIGHT.value}'
RETURNING id
""").bindparams(bindparam("ids", expanding=True))

# Recorded only while the outbox row exists (`spool uninstall` may have deleted
# a row mid-delivery: its attempt has nothing left to belong to).
_ATTEMPT = text("""
INSERT INTO delivery_attempts (outbox_id, trace_id, sink, attempt, started_at, duration_ms,
                               http_status, outcome, error_class, message, response_id)
SELECT :id, :trace_id, :sink,
       (SELECT COUNT(*) FROM delivery_attempts WHERE outbox_id = :id) + 1,
       :started, :duration, :status, :outcome, :error_class, :message, :rid
WHERE EXISTS (SELECT 1 FROM outbox WHERE id = :id)
""")

# Attempts counted against SPOOL_MAX_ATTEMPTS since the row's first attempt:
# the ones the server answered, and sink failures (not plain "no response").
_COUNTED = text("""
SELECT COUNT(*) FROM delivery_attempts
WHERE outbox_id = :id AND started_at >= :since AND outcome = 'retry'
  AND (http_status IS NOT NULL OR error_class LIKE 'SinkError%')
""")


@dataclass
class Claimed:
    id: int
    trace_id: str
    sink: str
    attempts: int
    first_attempt_at: float | None
    created_at: float


def claim(conn: Connection, *, owner: str, now: float, lease_until: float,
          limit: int, top_up: Mapping[str, int] | None = None) -> tuple[int, list[Claimed]]:
    """Hold the due rows of paused sinks and projects, then lease up to ``limit`` due
    rows to ``owner``.  ``top_up`` ({sink: n}): a sink among the claimed rows gets more
    of its due rows, up to ``n`` in all (a batching sink's full request).
    Returns (rows held, rows claimed)."""
    held = conn.execute(_HOLD_PAUSED_SINKS, {"now": now}).rowcount
    if conn.execute(_ANY_PAUSE).first():
        held += conn.execute(_HOLD_PAUSED_DUE, {"now": now, "reason": PAUSED_REASON}).rowcount
    params = {"owner": owner, "lease_until": lease_until, "now": now}
    rows = [Claimed(*r) for r in conn.execute(CLAIM, {**params, "limit": int(limit)}).all()]
    for sink, n in (top_up or {}).items():
        have = sum(1 for r in rows if r.sink == sink)
        if 0 < have < n:
            rows += [Claimed(*r) for r in conn.execute(_CLAIM_SINK, {
                **params, "sink": sink, "limit": int(n - have)}).all()]
    return max(held, 0), rows


def traces_of(conn: Connection, trace_ids: Iterable[str]) -> dict[str, dict]:
    """The ``traces`` rows (body as stored) of claimed rows, by trace id."""
    ids = sorted(set(trace_ids))
    if not ids:
        return {}
    return {t.trace_id: dict(t._mapping) for t in conn.execute(_TRACES, {"ids": ids})}


def renew(conn: Connection, ids: list[int], *, owner: str, lease_until: float,
          now: float) -> set[int]:
    """Extend ``owner``'s leases; returns the ids still leased by it."""
    if not ids:
        return set()
    return {r[0] for r in conn.execute(_RENEW, {
        "ids": ids, "lease_until": lease_until, "owner": owner, "now": now})}


def release(conn: Connection, ids: list[int], *, owner: str, due: float, now: float) -> int:
    """Give back claimed rows not sent (due at ``due``).  Returns how many."""
    if not ids:
        return 0
    return conn.execute(_RELEASE, {"ids": ids, "owner": owner, "due": due,
                                   "now": now}).rowcount


def counted_attempts(conn: Connection, outbox_id: int, since: float) -> int:
    return int(conn.execute(_COUNTED, {"id": outbox_id, "since": since}).scalar() or 0)


def ack(conn: Connection, row: Claimed, *, owner: str, state: str, attempted: bool,
        started: float, next_attempt_at: float, status: int | None, error: str | None,
        held_reason: str | None, response_id: str | None, now: float) -> bool:
    """Record the end of a leased row's attempt; False when the lease was lost."""
    return conn.execute(_ACK, {
        "id": row.id, "owner": owner, "state": str(state), "inc": 1 if attempted else 0,
        "started": started, "next": next_attempt_at, "status": status, "error": error,
        "held": held_reason, "sent_at": now if state == S.SENT else None,
        "rid": response_id, "now": now}).rowcount == 1


def ack_sent(conn: Connection, rows: Sequence[Claimed], *, owner: str, attempted: bool,
             started: float, status: int | None, response_id: str | None,
             now: float) -> set[int]:
    """:func:`ack` as 'sent' for many rows one request delivered (one statement);
    returns the ids acknowledged (the others' leases were lost)."""
    return {r[0] for r in conn.execute(_ACK_SENT, {
        "ids": [r.id for r in rows], "owner": owner, "inc": 1 if attempted else 0,
        "started": started, "status": status, "rid": response_id, "now": now})}


def record_attempts(conn: Connection, attempts: Sequence[tuple[Claimed, str | None]], *,
                    started: float, duration_ms: float, status: int | None, outcome: str,
                    error_class: str | None, response_id: str | None) -> None:
    """:func:`record_attempt` for many rows of one request ((row, message) pairs), in one
    executemany."""
    if attempts:
        conn.execute(_ATTEMPT, [{
            "id": row.id, "trace_id": row.trace_id, "sink": row.sink, "started": started,
            "duration": duration_ms, "status": status, "outcome": outcome,
            "error_class": error_class, "message": message, "rid": response_id}
            for row, message in attempts])


def record_attempt(conn: Connection, row: Claimed, *, started: float, duration_ms: float,
                   status: int | None, outcome: str, error_class: str | None,
                   message: str | None, response_id: str | None) -> None:
    conn.execute(_ATTEMPT, {
        "id": row.id, "trace_id": row.trace_id, "sink": row.sink, "started": started,
        "duration": duration_ms, "status": status, "outcome": outcome,
        "error_class": error_class, "message": message, "rid": response_id})


def generation(conn: Connection) -> str:
    """Bumped whenever held rows are released (credentials may have changed)."""
    return conn.execute(text("SELECT value FROM kv WHERE key = :k"),
                        {"k": GENERATION_KEY}).scalar() or "0"


def _bump_generation(conn: Connection) -> None:
    conn.execute(text(
        "INSERT INTO kv (key, value) VALUES (:k, '1') ON CONFLICT(key) DO UPDATE "
        "SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)"), {"k": GENERATION_KEY})


def release_leases(engine: Engine, owner: str, now: float) -> int:
    """Rows still leased by ``owner`` (a stopping worker) made due again at ``now``:
    'failed' if tried before, else 'pending'.  Returns how many."""
    with transaction(engine) as conn:
        return conn.execute(_RELEASE_OWNER, {"due": now, "now": now, "owner": owner}).rowcount


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
