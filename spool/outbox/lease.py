"""The dispatcher's steps on the outbox: claim, renew, release, acknowledge, record attempts."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from sqlalchemy import Connection, Engine, bindparam, text

from .core import GENERATION_KEY, PAUSED_REASON, S, _due, _PAUSED_TRACE, transaction

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

def _claim_sql(where: str) -> str:
    return f"""
UPDATE outbox
SET state = '{S.IN_FLIGHT.value}', lease_owner = :owner, lease_until = :lease_until,
    next_attempt_at = :lease_until, updated_at = :now
WHERE id IN (
    SELECT id FROM outbox INDEXED BY ix_outbox_due WHERE {where}
    ORDER BY next_attempt_at
    LIMIT :limit)
RETURNING id, trace_id, sink, attempts, first_attempt_at, created_at
"""


CLAIM = text(_claim_sql(_due()))
# The same for one sink's rows only (a batching sink's claim topped up to a full batch).
_CLAIM_SINK = text(_claim_sql(f"{_due()} AND sink = :sink"))

_TRACES = text("""
SELECT trace_id, kind, session_id, turn_id, revision, project, name, created_at, body
FROM traces WHERE trace_id IN (SELECT value FROM json_each(:ids))
""")

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

# Many rows delivered by one request: the _ACK of state 'sent' for all of them at once
# (the ids as one JSON array: one statement text, prepared once, whatever the batch size).
_ACK_SENT = text(f"""
UPDATE outbox
SET state = '{S.SENT.value}', attempts = attempts + :inc,
    first_attempt_at = CASE WHEN :inc > 0 THEN COALESCE(first_attempt_at, :started)
                            ELSE first_attempt_at END,
    next_attempt_at = :now, lease_owner = NULL, lease_until = NULL,
    last_status = COALESCE(:status, last_status), last_error = NULL, held_reason = NULL,
    sent_at = :now, response_id = COALESCE(:rid, response_id), updated_at = :now
WHERE id IN (SELECT value FROM json_each(:ids)) AND lease_owner = :owner
  AND state = '{S.IN_FLIGHT.value}'
RETURNING id
""")

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

# The _ATTEMPT of many rows of one request (same attempt, same message) in one statement;
# trace_id and sink are the outbox row's (as a Claimed row carries them).
_ATTEMPTS = text("""
INSERT INTO delivery_attempts (outbox_id, trace_id, sink, attempt, started_at, duration_ms,
                               http_status, outcome, error_class, message, response_id)
SELECT o.id, o.trace_id, o.sink,
       (SELECT COUNT(*) FROM delivery_attempts AS d WHERE d.outbox_id = o.id) + 1,
       :started, :duration, :status, :outcome, :error_class, :message, :rid
FROM outbox AS o WHERE o.id IN (SELECT value FROM json_each(:ids))
ORDER BY o.id
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
    result = conn.execute(_TRACES, {"ids": json.dumps(ids)})
    keys = tuple(result.keys())
    return {t[0]: dict(zip(keys, t)) for t in result}


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
        "ids": _ids(r.id for r in rows), "owner": owner, "inc": 1 if attempted else 0,
        "started": started, "status": status, "rid": response_id, "now": now})}


def record_attempts(conn: Connection, attempts: Sequence[tuple[Claimed, str | None]], *,
                    started: float, duration_ms: float, status: int | None, outcome: str,
                    error_class: str | None, response_id: str | None) -> None:
    """:func:`record_attempt` for many rows of one request ((row, message) pairs): one
    statement per distinct message (a delivered batch: one, or two when leases were lost)."""
    by_message: dict[str | None, list[int]] = {}
    for row, message in attempts:
        by_message.setdefault(message, []).append(row.id)
    for message, ids in by_message.items():
        conn.execute(_ATTEMPTS, {
            "ids": _ids(ids), "started": started, "duration": duration_ms, "status": status,
            "outcome": outcome, "error_class": error_class, "message": message,
            "rid": response_id})


def _ids(ids: Iterable[int]) -> str:
    return "[" + ",".join(str(int(i)) for i in ids) + "]"


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
