"""The outbox dispatcher: at-least-once delivery with leases, backoff and held rows.

One pass (:func:`deliver` / :meth:`Dispatcher.run_once`):

1. In one ``BEGIN IMMEDIATE`` transaction: rows of paused sinks (``sink_state``)
   that are due become ``held``; then up to ``limit`` due rows are claimed with
   ``UPDATE … RETURNING`` (``state='in_flight'``, ``lease_owner``,
   ``lease_until = now + SPOOL_LEASE_SECONDS``; ``next_attempt_at`` is set to the
   lease expiry too, so the partial index ``ix_outbox_due`` alone finds expired
   leases).  Due = state pending/failed and ``next_attempt_at <= now``, or
   in_flight with an expired lease (its worker died).  The claim only touches
   ``ix_outbox_due`` (rows not finished), so its cost does not grow with the
   number of sent rows.
2. Outside any transaction, each row is rendered and sent by its sink
   (spool/sinks).  Before each send the remaining leases are renewed when
   less than half the lease is left, so a long batch is never stolen mid-way.
3. Each result is acknowledged in its own short transaction, conditionally on
   the lease (``WHERE id=? AND lease_owner=? AND state='in_flight'``): a worker
   whose lease expired and was taken over cannot overwrite the new owner's work.
   Every attempt becomes a ``delivery_attempts`` row (when, duration, HTTP
   status, error class, message, response id, outcome).

States: pending -> in_flight -> sent | failed (waits for ``next_attempt_at``) |
dead (gave up: a non-retryable answer, or the retry limits of spool.retry) |
held (cannot be sent now: no credentials, auth rejected, sink paused, insecure
URL; only the attempt that discovered it counts).  ``release_held`` (called by
``spool update-credentials`` / ``spool retry``) turns held rows back into
pending and tells running dispatchers to drop cached credentials.

A crash anywhere leaves rows in_flight with a lease that expires: they are sent
again, with the same ``Idempotency-Key`` (the trace id), so delivery is at
least once and duplicates are recognisable.

The worker keeps one :class:`Dispatcher` for its run (pooled HTTP clients,
credentials read once) and calls ``dispatcher.run_once(stop=stop_event)``
about every second; ``dispatcher.close()`` on shutdown.  Nothing here sleeps:
a backoff is only a later ``next_attempt_at``; ``stop.set()`` makes a pass
release its unsent claimed rows and return after the current send (at most one
request timeout); ``release_leases(engine, owner, now)`` frees whatever a
stopping worker still holds.
"""
from __future__ import annotations

import os
import random
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from sqlalchemy import Connection, Engine, bindparam, text

from . import db
from .errors import SpoolError
from .retry import Decision, Outcome, RetryConfig, classify, decide
from .sinks.base import Sink, TraceRow, default_sinks

GENERATION_KEY = "deliver.generation"
MAX_MESSAGE = 1000

_HOLD_PAUSED = text("""
UPDATE outbox
SET state = 'held', lease_owner = NULL, lease_until = NULL, updated_at = :now,
    held_reason = COALESCE((SELECT s.held_reason FROM sink_state s WHERE s.sink = outbox.sink),
                           'sink ' || outbox.sink || ' is paused')
WHERE state IN ('pending', 'failed', 'in_flight') AND next_attempt_at <= :now
  AND (state <> 'in_flight' OR lease_until < :now)
  AND sink IN (SELECT sink FROM sink_state WHERE paused = 1)
""")

# Projects paused with `spool pause`: their due rows wait, held, until `spool resume`
# (traces made from events recorded before the pause included).  Only run when
# the pauses table is not empty; reads only unfinished rows (ix_outbox_due).
_ANY_PAUSE = text("SELECT 1 FROM pauses LIMIT 1")
_HOLD_PAUSED_PROJECTS = text("""
UPDATE outbox
SET state = 'held', held_reason = 'project paused', lease_owner = NULL, lease_until = NULL,
    updated_at = :now
WHERE id IN (
    SELECT o.id FROM outbox AS o INDEXED BY ix_outbox_due
    JOIN traces AS t ON t.trace_id = o.trace_id
    WHERE o.state IN ('pending', 'failed', 'in_flight') AND o.next_attempt_at <= :now
      AND (o.state <> 'in_flight' OR o.lease_until < :now)
      AND EXISTS (SELECT 1 FROM pauses AS p WHERE t.project = p.project
                  OR substr(t.project, 1, length(p.project) + 1) = p.project || '/'))
""")

_CLAIM = text("""
UPDATE outbox
SET state = 'in_flight', lease_owner = :owner, lease_until = :lease_until,
    next_attempt_at = :lease_until, updated_at = :now
WHERE id IN (
    SELECT id FROM outbox INDEXED BY ix_outbox_due
    WHERE state IN ('pending', 'failed', 'in_flight') AND next_attempt_at <= :now
      AND (state <> 'in_flight' OR lease_until < :now)
    ORDER BY next_attempt_at
    LIMIT :limit)
RETURNING id, trace_id, sink, attempts, first_attempt_at, created_at
""")

_TRACES = text("""
SELECT trace_id, kind, session_id, turn_id, revision, project, name, created_at, body
FROM traces WHERE trace_id IN :ids
""").bindparams(bindparam("ids", expanding=True))

_RENEW = text("""
UPDATE outbox SET lease_until = :lease_until, next_attempt_at = :lease_until, updated_at = :now
WHERE id IN :ids AND lease_owner = :owner AND state = 'in_flight'
RETURNING id
""").bindparams(bindparam("ids", expanding=True))

_RELEASE = text("""
UPDATE outbox
SET state = CASE WHEN attempts > 0 THEN 'failed' ELSE 'pending' END,
    lease_owner = NULL, lease_until = NULL, next_attempt_at = :due, updated_at = :now
WHERE id IN :ids AND lease_owner = :owner AND state = 'in_flight'
""").bindparams(bindparam("ids", expanding=True))

_ACK = text("""
UPDATE outbox
SET state = :state, attempts = attempts + :inc,
    first_attempt_at = CASE WHEN :inc > 0 THEN COALESCE(first_attempt_at, :started)
                            ELSE first_attempt_at END,
    next_attempt_at = :next, lease_owner = NULL, lease_until = NULL,
    last_status = COALESCE(:status, last_status), last_error = :error, held_reason = :held,
    sent_at = :sent_at, response_id = COALESCE(:rid, response_id), updated_at = :now
WHERE id = :id AND lease_owner = :owner AND state = 'in_flight'
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

# Attempts counted against SPOOL_MAX_ATTEMPTS since the row's first attempt:
# the ones the server answered, and sink failures (not plain "no response").
_COUNTED = text("""
SELECT COUNT(*) FROM delivery_attempts
WHERE outbox_id = :id AND started_at >= :since AND outcome = 'retry'
  AND (http_status IS NOT NULL OR error_class LIKE 'SinkError%')
""")

_ERROR = text("INSERT INTO errors (at, source, message) VALUES (:at, :source, :message)")

# A batch that one request delivered: every row sent at once (the _ACK of state 'sent').
_ACK_SENT = text("""
UPDATE outbox
SET state = 'sent', attempts = attempts + :inc,
    first_attempt_at = CASE WHEN :inc > 0 THEN COALESCE(first_attempt_at, :started)
                            ELSE first_attempt_at END,
    next_attempt_at = :now, lease_owner = NULL, lease_until = NULL,
    last_status = COALESCE(:status, last_status), last_error = NULL, held_reason = NULL,
    sent_at = :now, response_id = COALESCE(:rid, response_id), updated_at = :now
WHERE id IN :ids AND lease_owner = :owner AND state = 'in_flight'
RETURNING id
""").bindparams(bindparam("ids", expanding=True))


@dataclass
class DeliverResult:
    claimed: int = 0
    sent: int = 0
    failed: int = 0  # will be retried
    dead: int = 0
    held: int = 0  # held by this pass (includes rows of paused sinks)
    lost: int = 0  # our lease was taken over: the ack was refused
    released: int = 0  # claimed, but not sent because stop was set
    outcomes: list[tuple[str, str, str]] = field(default_factory=list)  # (trace, sink, state)

    @property
    def done(self) -> int:
        return self.sent + self.failed + self.dead + self.held


@dataclass
class _Claimed:
    id: int
    trace_id: str
    sink: str
    attempts: int
    first_attempt_at: float | None
    created_at: float


class _Tx:
    """``with _Tx(conn) as conn:`` one transaction (BEGIN IMMEDIATE via spool.db's hook)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.tx = None

    def __enter__(self) -> Connection:
        self.tx = self.conn.begin()
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.tx.commit()
        else:
            self.tx.rollback()


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Dispatcher:
    """Sinks (pooled clients, cached credentials) for one worker run.

    ``run_once(now=None, *, limit=50, stop=None) -> DeliverResult`` is one pass;
    ``close()`` closes its connection and the sinks it created.  Use as a context manager;
    one thread at a time (the worker's delivery job).
    """

    def __init__(self, engine: Engine, *, owner: str | None = None,
                 sinks: Mapping[str, Sink] | None = None, retry: RetryConfig | None = None,
                 clock: Callable[[], float] | None = None,
                 rand: Callable[[], float] | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.engine = engine
        self.owner = owner or default_owner()
        self._own_sinks = sinks is None
        self.sinks: dict[str, Sink] = dict(sinks) if sinks is not None else default_sinks(env)
        self.retry = retry or RetryConfig.from_env(env)
        self.clock = clock or time.time
        self.rand = rand or random.random
        self._generation: str | None = None
        self._conn: Connection | None = None

    def _write(self):
        """A BEGIN IMMEDIATE transaction on the dispatcher's own connection (kept open for
        its run: no reconnect, and no WAL checkpoint on every close)."""
        if self._conn is None or self._conn.closed:
            self._conn = self.engine.connect()
        return _Tx(self._conn)

    def __enter__(self) -> "Dispatcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._own_sinks:
            for sink in self.sinks.values():
                try:
                    sink.close()
                except Exception:  # noqa: BLE001 - closing must not fail shutdown
                    pass

    # -- one pass ----------------------------------------------------------
    def run_once(self, now: float | None = None, *, limit: int = 50,
                 stop: threading.Event | None = None) -> DeliverResult:
        start = now if now is not None else self.clock()
        mono = time.monotonic()

        def current() -> float:
            return start + (time.monotonic() - mono) if now is not None else self.clock()

        result = DeliverResult()
        lease = self.retry.lease_seconds
        lease_until = start + lease
        with self._write() as conn:
            self._check_generation(conn)
            held = conn.execute(_HOLD_PAUSED, {"now": start}).rowcount
            if conn.execute(_ANY_PAUSE).first():
                held += conn.execute(_HOLD_PAUSED_PROJECTS, {"now": start}).rowcount
            rows = [_Claimed(*r) for r in conn.execute(_CLAIM, {
                "owner": self.owner, "lease_until": lease_until, "now": start,
                "limit": int(limit)}).all()]
            traces = {}
            if rows:
                for t in conn.execute(_TRACES, {"ids": sorted({r.trace_id for r in rows})}):
                    traces[t.trace_id] = dict(t._mapping)
        result.held += max(held, 0)
        result.claimed = len(rows)
        rows.sort(key=lambda r: r.id)
        reported: set[tuple[str, str]] = set()
        rows = self._batches(rows, traces, result, current, reported, stop)
        live = {r.id for r in rows}
        for i, row in enumerate(rows):
            if row.id not in live:
                continue
            if stop is not None and stop.is_set():
                # due again at once (as of this pass), for the next worker run
                result.released = self._release([r.id for r in rows[i:] if r.id in live],
                                                start, current())
                break
            t = current()
            if lease_until - t < lease / 2:
                lease_until = t + lease
                kept = self._renew([r.id for r in rows[i:] if r.id in live], lease_until, t)
                result.lost += len(live - kept - {r.id for r in rows[:i]})
                live = kept | {r.id for r in rows[:i]}
                if row.id not in live:
                    continue
            self._one(row, traces.get(row.trace_id), result, current, reported)
        return result

    def _one(self, row: _Claimed, trace: dict | None, result: DeliverResult,
             current: Callable[[], float], reported: set) -> None:
        started = current()
        t0 = time.perf_counter()
        outcome = self._attempt(row, trace)
        duration_ms = (time.perf_counter() - t0) * 1000.0
        self._settle([row], outcome, started, duration_ms, current(), result, reported)

    def _settle(self, rows: list[_Claimed], outcome: Outcome, started: float,
                duration_ms: float, finished: float, result: DeliverResult,
                reported: set) -> None:
        """Record one attempt's ``outcome`` for each of ``rows`` (one request carried them
        all) in one transaction: each row's own decision (its attempts, its age)."""
        if len(rows) > 1 and classify(outcome) == "sent":
            return self._settle_sent(rows, outcome, started, duration_ms, finished, result)
        done = []
        with self._write() as conn:
            for row in rows:
                attempts = row.attempts + (1 if outcome.attempted else 0)
                first = row.first_attempt_at if row.first_attempt_at is not None else (
                    started if outcome.attempted else None)
                counts = classify(outcome) == "retry" and (outcome.status is not None
                                                            or outcome.kind is not None)
                counted = 0
                if counts:
                    counted = 1 + (int(conn.execute(_COUNTED, {"id": row.id, "since": first})
                                       .scalar() or 0) if row.first_attempt_at is not None else 0)
                decision = decide(outcome, attempts=attempts, first_attempt_at=first,
                                  now=finished, cfg=self.retry, rand=self.rand,
                                  http_attempts=counted)
                done.append((row, decision, self._ack(conn, row, outcome, decision, started,
                                                      duration_ms, finished, reported)))
        for row, decision, acked in done:
            if not acked:
                result.lost += 1
                continue
            setattr(result, decision.state, getattr(result, decision.state) + 1)
            result.outcomes.append((row.trace_id, row.sink, decision.state))

    def _settle_sent(self, rows: list[_Claimed], outcome: Outcome, started: float,
                     duration_ms: float, finished: float, result: DeliverResult) -> None:
        """:meth:`_settle` for a delivered batch: one UPDATE and one executemany INSERT."""
        message = (outcome.message or "")[:MAX_MESSAGE] or None
        with self._write() as conn:
            acked = {r[0] for r in conn.execute(_ACK_SENT, {
                "ids": [r.id for r in rows], "owner": self.owner,
                "inc": 1 if outcome.attempted else 0, "started": started,
                "status": outcome.status, "rid": outcome.response_id, "now": finished})}
            conn.execute(_ATTEMPT, [{
                "id": r.id, "trace_id": r.trace_id, "sink": r.sink, "started": started,
                "duration": duration_ms, "status": outcome.status, "outcome": "sent",
                "error_class": outcome.error_class,
                "message": message if r.id in acked else f"(lease lost, not recorded) {message}",
                "rid": outcome.response_id} for r in rows if r.id in acked or outcome.attempted])
            if outcome.error_class == "PartialSuccess":
                conn.execute(_ERROR, {"at": finished, "source": f"deliver:{rows[0].sink}",
                                      "message": f"sent {len(acked)} traces with a warning: "
                                                 f"{message}"})
        for r in rows:
            if r.id in acked:
                result.sent += 1
                result.outcomes.append((r.trace_id, r.sink, "sent"))
            else:
                result.lost += 1

    def _batches(self, rows: list[_Claimed], traces: dict, result: DeliverResult,
                 current: Callable[[], float], reported: set,
                 stop: threading.Event | None) -> list[_Claimed]:
        """Rows of sinks with ``render_batch``/``send_batch`` (OTLP) sent many per request;
        returns the other rows (sent one by one).  A batch is rows of one sink with the same
        ``batch_key``, at most ``sink.max_batch_rows`` rows and ``sink.max_batch_bytes``
        rendered (a larger one is halved).  A row that cannot be read or rendered alone goes the
        one-by-one way, so its problem stays its own."""
        rest: list[_Claimed] = []
        groups: dict[tuple, list[tuple[_Claimed, TraceRow]]] = {}
        for row in rows:
            sink = self.sinks.get(row.sink)
            trace = traces.get(row.trace_id)
            if sink is None or trace is None or not hasattr(sink, "send_batch"):
                rest.append(row)
                continue
            try:
                tr = TraceRow.from_db(trace)
                key = (row.sink, sink.batch_key(tr))
            except Exception:  # noqa: BLE001 - handled (and recorded) one by one
                rest.append(row)
                continue
            groups.setdefault(key, []).append((row, tr))
        for (name, _key), members in groups.items():
            sink = self.sinks[name]
            limit = getattr(sink, "max_batch_rows", 200)
            for i in range(0, len(members), limit):
                if stop is not None and stop.is_set():
                    result.released += self._release([r.id for r, _ in members[i:]],
                                                     current(), current())
                    break
                rest += self._send_batch(sink, members[i:i + limit], result, current, reported)
        return rest

    def _send_batch(self, sink: Sink, members: list[tuple[_Claimed, TraceRow]],
                    result: DeliverResult, current: Callable[[], float],
                    reported: set) -> list[_Claimed]:
        try:
            payload = sink.render_batch([tr for _, tr in members])
        except Exception:  # noqa: BLE001 - find the culprit one by one
            return [r for r, _ in members]
        if len(members) > 1 and len(payload) > getattr(sink, "max_batch_bytes", 4 << 20):
            half = len(members) // 2
            return (self._send_batch(sink, members[:half], result, current, reported)
                    + self._send_batch(sink, members[half:], result, current, reported))
        started = current()
        t0 = time.perf_counter()
        try:
            outcome = sink.send_batch([tr for _, tr in members], payload)
        except Exception as exc:  # noqa: BLE001 - a sink bug must not lose the rows
            outcome = Outcome(kind="retry", error_class=f"SinkError:{type(exc).__name__}",
                              message=str(exc)[:MAX_MESSAGE])
        duration_ms = (time.perf_counter() - t0) * 1000.0
        self._settle([r for r, _ in members], outcome, started, duration_ms, current(), result,
                     reported)
        return []

    def _attempt(self, row: _Claimed, trace: dict | None) -> Outcome:
        sink = self.sinks.get(row.sink)
        if sink is None:
            return Outcome(kind="held", error_class="UnknownSink", attempted=False,
                           message=f"no sink named {row.sink!r} in this spool; "
                                   "upgrade spool or remove it from SPOOL_SINKS, then "
                                   "`spool retry`")
        if trace is None:
            return Outcome(kind="dead", error_class="MissingTrace", attempted=False,
                           message=f"trace {row.trace_id} is not in the traces table")
        try:
            trace_row = TraceRow.from_db(trace)
        except (ValueError, TypeError) as exc:
            return Outcome(kind="dead", error_class="BadTraceBody", attempted=False,
                           message=f"the stored trace body is not valid JSON: {exc}")
        try:
            payload = sink.render(trace_row)
            return sink.send(trace_row, payload)
        except SpoolError as exc:
            return Outcome(kind="held", error_class="SpoolError", message=str(exc),
                           attempted=False)
        except Exception as exc:  # noqa: BLE001 - a sink bug must not lose the row
            return Outcome(kind="retry", error_class=f"SinkError:{type(exc).__name__}",
                           message=str(exc)[:MAX_MESSAGE])

    # -- database steps ------------------------------------------------------
    def _ack(self, conn: Connection, row: _Claimed, outcome: Outcome, decision: Decision, started: float,
             duration_ms: float, now: float, reported: set) -> bool:
        message = (outcome.message or "")[:MAX_MESSAGE] or None
        reason = (decision.reason or "")[:MAX_MESSAGE] or None
        state = decision.state
        params = {
            "id": row.id, "owner": self.owner, "state": state,
            "inc": 1 if outcome.attempted else 0, "started": started,
            "next": decision.next_attempt_at if state == "failed" else now,
            "status": outcome.status, "error": None if state == "sent" else reason,
            "held": reason if state == "held" else None,
            "sent_at": now if state == "sent" else None,
            "rid": outcome.response_id, "now": now,
        }
        acked = conn.execute(_ACK, params).rowcount == 1
        if acked or outcome.attempted:
            conn.execute(_ATTEMPT, {
                "id": row.id, "trace_id": row.trace_id, "sink": row.sink,
                "started": started, "duration": duration_ms, "status": outcome.status,
                "outcome": decision.outcome, "error_class": outcome.error_class,
                "message": message if acked else f"(lease lost, not recorded) {message}",
                "rid": outcome.response_id,
            })
        if acked and state == "sent" and outcome.error_class == "PartialSuccess":
            conn.execute(_ERROR, {"at": now, "source": f"deliver:{row.sink}",
                                  "message": f"sent {row.trace_id} with a warning: {message}"})
        if acked and state in ("dead", "held"):
            key = (row.sink, outcome.error_class or state)
            if state == "dead" or outcome.attempted or key not in reported:
                reported.add(key)
                conn.execute(_ERROR, {"at": now, "source": f"deliver:{row.sink}",
                                      "message": f"{state} {row.trace_id}: {reason}"})
        return acked

    def _renew(self, ids: list[int], lease_until: float, now: float) -> set[int]:
        if not ids:
            return set()
        with self._write() as conn:
            return {r[0] for r in conn.execute(_RENEW, {
                "ids": ids, "lease_until": lease_until, "owner": self.owner, "now": now})}

    def _release(self, ids: list[int], due: float, now: float) -> int:
        if not ids:
            return 0
        with self._write() as conn:
            return conn.execute(_RELEASE, {"ids": ids, "owner": self.owner, "due": due,
                                           "now": now}).rowcount

    def _check_generation(self, conn: Connection) -> None:
        gen = conn.execute(text("SELECT value FROM kv WHERE key = :k"),
                           {"k": GENERATION_KEY}).scalar() or "0"
        if self._generation is not None and gen != self._generation:
            for sink in self.sinks.values():
                sink.reset()
        self._generation = gen


def deliver(engine: Engine, now: float | None = None, *, owner: str | None = None,
            limit: int = 50, sinks: Mapping[str, Sink] | None = None,
            clock: Callable[[], float] | None = None, rand: Callable[[], float] | None = None,
            stop: threading.Event | None = None) -> DeliverResult:
    """One dispatcher pass with fresh sinks (or the given ones); see the module doc."""
    dispatcher = Dispatcher(engine, owner=owner, sinks=sinks, clock=clock, rand=rand)
    try:
        return dispatcher.run_once(now, limit=limit, stop=stop)
    finally:
        dispatcher.close()


def _bump_generation(conn) -> None:
    conn.execute(text(
        "INSERT INTO kv (key, value) VALUES (:k, '1') ON CONFLICT(key) DO UPDATE "
        "SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)"), {"k": GENERATION_KEY})


def _filters(sink: str | None, trace_ids: Iterable[str] | None, params: dict) -> str:
    sql = ""
    if sink is not None:
        sql += " AND sink = :sink"
        params["sink"] = sink
    if trace_ids is not None:
        ids = list(trace_ids)
        sql += " AND trace_id IN (SELECT value FROM json_each(:ids))"
        import json

        params["ids"] = json.dumps(ids)
    return sql


def release_held(engine: Engine, now: float, *, sink: str | None = None,
                 trace_ids: Iterable[str] | None = None) -> int:
    """Held rows -> pending, due at ``now``; running dispatchers drop cached credentials.
    Returns the number of rows released."""
    params: dict = {"now": now}
    where = _filters(sink, trace_ids, params)
    with db.write(engine) as conn:
        n = conn.execute(text(
            "UPDATE outbox SET state = 'pending', held_reason = NULL, next_attempt_at = :now, "
            "updated_at = :now WHERE state = 'held'" + where), params).rowcount
        _bump_generation(conn)
    return n


def requeue(engine: Engine, now: float, *, trace_ids: Iterable[str] | None = None,
            states: Iterable[str] = ("failed", "dead", "held"),
            dry_run: bool = False) -> list[dict]:
    """Rows in ``states`` (optionally only these traces) made pending and due at ``now``,
    with a fresh attempt budget.  Returns what was (or, with ``dry_run``, would be)
    requeued: outbox_id, trace_id, sink, state, attempts, last_error, held_reason.
    ``dry_run`` changes nothing."""
    states = tuple(states)
    bad = [s for s in states if s not in ("pending", "failed", "dead", "held", "sent")]
    if bad or not states:
        raise SpoolError(f"cannot requeue rows in state {', '.join(bad) or '(none)'}.",
                         "Choose among failed, dead, held (and sent to resend).")
    import json

    params: dict = {"now": now, "states": json.dumps(states)}
    where = " WHERE state IN (SELECT value FROM json_each(:states))" + _filters(
        None, trace_ids, params)
    select = text("SELECT id AS outbox_id, trace_id, sink, state, attempts, last_error, "
                  "held_reason FROM outbox" + where + " ORDER BY id")
    if dry_run:
        with db.read(engine) as conn:
            return [dict(r._mapping) for r in conn.execute(select, params)]
    with db.write(engine) as conn:
        found = [dict(r._mapping) for r in conn.execute(select, params)]
        if found:
            conn.execute(text(
                "UPDATE outbox SET state = 'pending', attempts = 0, first_attempt_at = NULL, "
                "held_reason = NULL, next_attempt_at = :now, lease_owner = NULL, "
                "lease_until = NULL, updated_at = :now" + where), params)
        _bump_generation(conn)
    return found


def release_leases(engine: Engine, owner: str, now: float) -> int:
    """Rows still leased by ``owner`` (a stopping worker) made due again at ``now``:
    'failed' if tried before, else 'pending'.  Returns how many."""
    with db.write(engine) as conn:
        return conn.execute(text(
            "UPDATE outbox SET state = CASE WHEN attempts > 0 THEN 'failed' ELSE 'pending' END, "
            "lease_owner = NULL, lease_until = NULL, next_attempt_at = :now, updated_at = :now "
            "WHERE state = 'in_flight' AND lease_owner = :owner"),
            {"now": now, "owner": owner}).rowcount
