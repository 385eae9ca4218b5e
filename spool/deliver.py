"""The dispatcher: at-least-once delivery with leases, backoff and held rows.

The statements it runs live in spool/outbox/ (states, claim, ack, release).

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
   (spool/sinks); rows of a batching sink (OTLP) go many per request, as
   spool.batches groups them (a batch that cannot be rendered is sent one by
   one, so each row's problem stays its own).  With ``full_batches`` (the
   worker) a batching sink among the claimed rows gets more of its due rows,
   up to one full request.  Before each send the remaining leases are renewed
   when less than half the lease is left, so a long pass is never stolen mid-way.
   With ``rounds`` > 1 (the worker: :data:`ROUNDS`) a pass claims again while a
   batching sink has a full request due, and a batch request flies on a helper
   thread while the next claim is made and rendered (spool.inflight: one request
   in flight at a time, settled on the dispatcher's thread).
3. Each request's result is acknowledged in its own short transaction (every
   row of a batch with its own decision: its attempts, its age; a delivered
   batch in one statement), conditionally on
   the lease (``WHERE id=? AND lease_owner=? AND state='in_flight'``): a worker
   whose lease expired and was taken over cannot overwrite the new owner's work.
   Every attempt becomes a ``delivery_attempts`` row (when, duration, HTTP
   status, error class, message, response id, outcome); a delivery with a
   warning (OTLP ``partial_success``) is also a line in ``errors``.

States: pending -> in_flight -> sent | failed (waits for ``next_attempt_at``) |
dead (gave up: a non-retryable answer, or the retry limits of spool.retry) |
held (cannot be sent now: no credentials, auth rejected, sink paused, insecure
URL; only the attempt that discovered it counts).  ``outbox.release_held`` (called by
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
request timeout); ``outbox.release_leases(engine, owner, now)`` frees whatever a
stopping worker still holds.
"""
from __future__ import annotations

import functools
import os
import random
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable, Mapping

from sqlalchemy import Connection, Engine

from . import batches, inflight, outbox, problems
from .outbox import Claimed, OutboxState
from .retry import Decision, Outcome, RetryConfig, classify, decide
from .sinks import Sink, TraceRow, default_sinks

MAX_MESSAGE = inflight.MAX_MESSAGE
ROUNDS = 8  # claims per worker pass while a batching sink has a backlog (run_once rounds)


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
class _Pass:
    """What one :meth:`Dispatcher.run_once` pass carries through its rounds."""
    result: DeliverResult
    start: float  # released rows are due again at once, as of the pass's start
    current: Callable[[], float]
    stop: threading.Event | None
    reported: set[tuple[str, str]] = field(default_factory=set)  # problems recorded
    flight: inflight.Flight = field(default=None)  # type: ignore[assignment]

    def stopping(self) -> bool:
        return self.stop is not None and self.stop.is_set()


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
        return outbox.transaction(self._conn)

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
    def run_once(self, now: float | None = None, *, limit: int = 50, full_batches: bool = False,
                 rounds: int = 1, stop: threading.Event | None = None) -> DeliverResult:
        """Claim up to ``limit`` due rows (with ``full_batches``, a batching sink among them
        gets more of its due rows, up to one full request: ``sink.max_batch_rows``) and
        deliver them.  ``rounds`` > 1 (with ``full_batches``): while a batching sink has a full
        request due, claim again (up to ``rounds`` claims), each claim and its rendering
        overlapping the request in flight (spool.inflight)."""
        start = now if now is not None else self.clock()
        mono = time.monotonic()

        def current() -> float:
            return start + (time.monotonic() - mono) if now is not None else self.clock()

        p = _Pass(DeliverResult(), start, current, stop)
        p.flight = inflight.Flight(lambda rows, outcome, started, seconds, end: self._settle(
            rows, outcome, started, seconds * 1000.0, current() if end is None else end,
            p.result, p.reported))
        try:
            for r in range(max(1, rounds)):
                if r and p.stopping():
                    break
                if not self._round(p, start if r == 0 else current(), limit, full_batches,
                                   r + 1 < rounds):
                    break
        finally:
            p.flight.close()
        return p.result

    def _round(self, p: "_Pass", start: float, limit: int, full_batches: bool,
               more: bool) -> bool:
        """One claim and its requests (the last one may still be in flight); True when
        another round may follow (``more``, and a batching sink had a full request due)."""
        lease = self.retry.lease_seconds
        lease_until = start + lease
        sizes = batches.claim_sizes(self.sinks) if full_batches else {}
        with self._write() as conn:
            self._check_generation(conn)
            held, rows = outbox.claim(
                conn, owner=self.owner, now=start, lease_until=lease_until, limit=limit,
                top_up=sizes or None)
            traces = outbox.traces_of(conn, (r.trace_id for r in rows))
        p.result.held += held
        p.result.claimed += len(rows)
        more = more and any(sum(1 for r in rows if r.sink == s) >= n for s, n in sizes.items())
        rows.sort(key=lambda r: r.id)
        units = batches.plan(rows, traces, self.sinks)
        live = {r.id for r in rows}
        done: set[int] = set()
        for i, unit in enumerate(units):
            ahead = [r.id for u in units[i:] for r in u.rows if r.id in live]
            if p.stopping():  # due again at once, for the next worker run
                p.flight.land()
                p.result.released += self._release(ahead, p.start, p.current())
                return False
            t = p.current()
            if lease_until - t < lease / 2:
                lease_until = t + lease
                kept = self._renew(ahead, lease_until, t)
                p.result.lost += len(live - kept - done)
                live = kept | done
            unit = batches.only(unit, live)
            if not unit.rows:
                continue
            if unit.batch:  # the last request of a pass is waited for where it is sent
                self._send_batch(p, unit, traces, wait=not more and i == len(units) - 1)
            else:
                p.flight.land()  # one request at a time
                self._one(p, unit.rows[0], traces.get(unit.rows[0].trace_id))
            done.update(r.id for r in unit.rows)
        return more

    def _one(self, p: "_Pass", row: Claimed, trace: dict | None) -> None:
        started = p.current()
        t0 = time.perf_counter()
        outcome = self._attempt(row, trace)
        duration_ms = (time.perf_counter() - t0) * 1000.0
        self._settle([row], outcome, started, duration_ms, p.current(), p.result, p.reported)

    def _send_batch(self, p: "_Pass", unit: batches.Unit, traces: Mapping[str, dict],
                    wait: bool = True) -> None:
        """One request for a batch (halved while its payload is over the sink's byte bound),
        rendered while the request before it flies, then sent through the pass's flight
        (``wait``: in place); rows of a batch that cannot be rendered are sent one by one, to
        find the culprit.  Stop set meanwhile: the rows are released."""
        sink = self.sinks[unit.sink]
        try:
            payload = sink.render_batch(unit.traces)
        except Exception:  # noqa: BLE001 - each row's own problem, found one by one
            p.flight.land()
            for row in unit.rows:
                self._one(p, row, traces.get(row.trace_id))
            return
        if len(unit.rows) > 1 and len(payload) > batches.max_bytes(sink):
            first, second = batches.halves(unit)
            self._send_batch(p, first, traces, wait=False)
            self._send_batch(p, second, traces, wait=wait)
            return
        p.flight.land()
        if p.stopping():  # set while the request before flew: this one is not sent
            p.result.released += self._release([r.id for r in unit.rows], p.start, p.current())
            return
        p.flight.send(unit.rows, p.current(),
                      functools.partial(sink.send_batch, unit.traces, payload), wait=wait)

    def _settle(self, rows: list[Claimed], outcome: Outcome, started: float,
                duration_ms: float, finished: float, result: DeliverResult,
                reported: set) -> None:
        """Record one attempt's ``outcome`` for each of ``rows`` (one request carried them
        all) in one transaction: each row's own decision (its attempts, its age)."""
        if len(rows) > 1 and classify(outcome) == "sent":
            return self._settle_sent(rows, outcome, started, duration_ms, finished, result)
        done = []
        with self._write() as conn:
            for row in rows:
                decision = self._decide(conn, row, outcome, started, finished)
                done.append((row, decision, self._ack(conn, row, outcome, decision, started,
                                                      duration_ms, finished, reported)))
        for row, decision, acked in done:
            if not acked:
                result.lost += 1
                continue
            state = decision.state.value
            setattr(result, state, getattr(result, state) + 1)
            result.outcomes.append((row.trace_id, row.sink, state))

    def _decide(self, conn: Connection, row: Claimed, outcome: Outcome, started: float,
                finished: float) -> Decision:
        attempts = row.attempts + (1 if outcome.attempted else 0)
        first = row.first_attempt_at if row.first_attempt_at is not None else (
            started if outcome.attempted else None)
        counted = 0
        if classify(outcome) == "retry" and (outcome.status is not None
                                             or outcome.kind is not None):
            counted = 1 + (outbox.counted_attempts(conn, row.id, first)
                           if row.first_attempt_at is not None else 0)
        return decide(outcome, attempts=attempts, first_attempt_at=first, now=finished,
                      cfg=self.retry, rand=self.rand, http_attempts=counted)

    def _settle_sent(self, rows: list[Claimed], outcome: Outcome, started: float,
                     duration_ms: float, finished: float, result: DeliverResult) -> None:
        """:meth:`_settle` for a delivered batch: one UPDATE and one executemany INSERT."""
        message = (outcome.message or "")[:MAX_MESSAGE] or None
        with self._write() as conn:
            acked = outbox.ack_sent(conn, rows, owner=self.owner, attempted=outcome.attempted,
                                    started=started, status=outcome.status,
                                    response_id=outcome.response_id, now=finished)
            outbox.record_attempts(
                conn, [(r, message if r.id in acked else f"(lease lost, not recorded) {message}")
                       for r in rows if r.id in acked or outcome.attempted],
                started=started, duration_ms=duration_ms, status=outcome.status,
                outcome=OutboxState.SENT.value, error_class=outcome.error_class,
                response_id=outcome.response_id)
            if acked and outcome.error_class == "PartialSuccess":
                # A sent attempt is not listed among failures: its own `spool errors` kind.
                problems.record(conn, f"{rows[0].sink} partial success",
                                f"sent {len(acked)} traces with a warning: {message}", finished)
        for r in rows:
            if r.id in acked:
                result.sent += 1
                result.outcomes.append((r.trace_id, r.sink, OutboxState.SENT.value))
            else:
                result.lost += 1

    def _attempt(self, row: Claimed, trace: dict | None) -> Outcome:
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
        # an exception from the sink is an outcome (held or retried): it never loses the row
        return inflight.attempt(lambda: sink.send(trace_row, sink.render(trace_row)))[0]

    # -- database steps ------------------------------------------------------
    def _ack(self, conn: Connection, row: Claimed, outcome: Outcome, decision: Decision, started: float,
             duration_ms: float, now: float, reported: set) -> bool:
        message = (outcome.message or "")[:MAX_MESSAGE] or None
        reason = (decision.reason or "")[:MAX_MESSAGE] or None
        state = decision.state
        acked = outbox.ack(
            conn, row, owner=self.owner, state=state, attempted=outcome.attempted,
            started=started,
            next_attempt_at=decision.next_attempt_at if state == OutboxState.FAILED else now,
            status=outcome.status, error=None if state == OutboxState.SENT else reason,
            held_reason=reason if state == OutboxState.HELD else None,
            response_id=outcome.response_id, now=now)
        if acked or outcome.attempted:
            outbox.record_attempt(
                conn, row, started=started, duration_ms=duration_ms, status=outcome.status,
                outcome=decision.outcome, error_class=outcome.error_class,
                message=message if acked else f"(lease lost, not recorded) {message}",
                response_id=outcome.response_id)
        if acked and state == OutboxState.SENT and outcome.error_class == "PartialSuccess":
            problems.record(conn, f"{row.sink} partial success",
                            f"sent {row.trace_id} with a warning: {message}", now)
        if acked and state in (OutboxState.DEAD, OutboxState.HELD):
            key = (row.sink, outcome.error_class or state.value)
            if state == OutboxState.DEAD or outcome.attempted or key not in reported:
                reported.add(key)
                problems.record(conn, f"deliver:{row.sink}",
                                f"{state.value} {row.trace_id}: {reason}", now)
        return acked

    def _renew(self, ids: list[int], lease_until: float, now: float) -> set[int]:
        if not ids:
            return set()
        with self._write() as conn:
            return outbox.renew(conn, ids, owner=self.owner, lease_until=lease_until, now=now)

    def _release(self, ids: list[int], due: float, now: float) -> int:
        if not ids:
            return 0
        with self._write() as conn:
            return outbox.release(conn, ids, owner=self.owner, due=due, now=now)

    def _check_generation(self, conn: Connection) -> None:
        gen = outbox.generation(conn)
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
