"""The sink interface: the dispatcher knows nothing else about a destination.

A sink has a ``name`` (the ``outbox.sink`` value it serves) and two steps:

* ``render(row) -> bytes``: the bytes to send for one trace row (a
  :class:`TraceRow`: the ``traces`` columns, ``body`` parsed);
* ``send(row, payload) -> Outcome``: deliver them once, never raising for a
  delivery problem: transport errors, HTTP statuses, missing credentials all
  become an :class:`spool.retry.Outcome`, which the dispatcher classifies with
  :mod:`spool.retry` (a sink may force a classification with ``Outcome.kind``).

``reset()`` drops cached configuration and credentials (called when the user
updated credentials or asked for a retry); ``close()`` releases connections.
The dispatcher calls ``render`` then ``send`` for each claimed row, outside any
database transaction.  An exception escaping either is treated as a retryable
failure (``SpoolError``: held with its message) so a buggy sink cannot lose rows.

A sink may also take many rows per request: ``render_batch(rows)``,
``send_batch(rows, payload)``, ``batch_key(row)`` and the bounds
``max_batch_rows``/``max_batch_bytes`` (see spool.batches; the OTLP sink).  Its
``send_batch`` may run on the dispatcher's helper thread while ``render_batch`` renders the
next batch on the dispatcher's own (spool.inflight; never two sends at once).

Every sink gets the same :class:`TraceRow` (the neutral trace of spool/trace.py
in ``body``) and keeps its body under 1 MiB with :func:`spool.sinks.size.shrink`.
Adding a sink (OTLP, ATIF): subclass :class:`Sink` (its ``__init__`` takes
``env=``), add it to ``SINKS`` in spool/sinks/__init__.py; the dispatcher and
the outbox need no change.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

import orjson

from ..retry import Outcome


def _loads(raw: str | bytes) -> Any:
    """json.loads, with orjson's speed for what it takes (NaN, huge ints: the stdlib)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


@dataclass(frozen=True)
class TraceRow:
    trace_id: str
    kind: str
    project: str | None
    name: str
    body: Mapping[str, Any] = field(repr=False)
    session_id: str | None = None
    turn_id: str | None = None
    revision: int = 0
    created_at: float = 0.0

    @classmethod
    def from_db(cls, row: Mapping[str, Any]) -> "TraceRow":
        raw = row["body"]
        body = _loads(raw) if isinstance(raw, (str, bytes)) else dict(raw)
        return cls(trace_id=row["trace_id"], kind=row["kind"], project=row.get("project"),
                   name=row["name"], body=body, session_id=row.get("session_id"),
                   turn_id=row.get("turn_id"), revision=row.get("revision") or 0,
                   created_at=row.get("created_at") or 0.0)


class Sink:
    """Base class of every sink (override ``render`` and ``send``)."""

    name: str = "sink"

    def render(self, row: TraceRow) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError

    def send(self, row: TraceRow, payload: bytes) -> Outcome:  # pragma: no cover
        raise NotImplementedError

    def reset(self) -> None:
        """Forget cached config/credentials (they may have changed)."""

    def close(self) -> None:
        """Release connections."""
