"""The outbox's states, shared SQL fragments and its one transaction helper."""
from __future__ import annotations

import enum
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import Connection, Engine

from .. import db

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
