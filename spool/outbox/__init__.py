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

Three modules, one namespace (``from spool import outbox; outbox.claim(...)``):
``core`` (states, shared SQL fragments, the transaction helper), ``lease`` (the
dispatcher's steps) and ``manage`` (the commands' and retention's writes and reads).
"""
from __future__ import annotations

from .core import (DUE_BY, ENQUEUE_SQL, GENERATION_KEY, PAUSED_REASON, RETRY_STATES, UNFINISHED, S,
                   OutboxState, transaction, under)
from .lease import (CLAIM, Claimed, ack, ack_sent, claim, counted_attempts, generation,
                    record_attempt, record_attempts, release, release_leases, renew, traces_of)
from .manage import (DELIVERED, SESSION_SENT_BEFORE, TRACE_SENT_BEFORE, by_state,
                     count_delivered, delete_traces, hold_paused, next_attempt_at, release_held,
                     release_paused, requeue, requeue_candidates, retry_candidates,
                     undelivered_by_state)

__all__ = ["ack", "ack_sent", "by_state", "CLAIM", "claim", "Claimed", "count_delivered",
           "counted_attempts", "delete_traces", "DELIVERED", "DUE_BY", "ENQUEUE_SQL",
           "generation", "GENERATION_KEY", "hold_paused", "next_attempt_at", "OutboxState",
           "PAUSED_REASON", "record_attempt", "record_attempts", "release", "release_held",
           "release_leases", "release_paused", "renew", "requeue", "requeue_candidates",
           "retry_candidates", "RETRY_STATES", "S", "SESSION_SENT_BEFORE", "TRACE_SENT_BEFORE",
           "traces_of", "transaction", "UNFINISHED", "undelivered_by_state", "under"]
