"""Batches: which claimed rows the dispatcher sends together in one request.

A sink that has ``render_batch(rows) -> bytes``, ``send_batch(rows, payload) -> Outcome``
and ``batch_key(row)`` (the OTLP sink) takes many rows per request: rows of one sink
with the same ``batch_key`` (one endpoint and its settings), at most
``sink.max_batch_rows`` of them.  The byte bound (``sink.max_batch_bytes``) is only
known once rendered: the dispatcher halves a batch whose payload is larger
(:func:`halves`).  Every other row, and a row whose trace cannot be read or keyed,
is sent alone, so its problem stays its own.  Pure: no I/O beyond the sinks'
cached configuration.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from .outbox import Claimed
from .sinks import Sink, TraceRow

DEFAULT_ROWS = 200
DEFAULT_BYTES = 4 << 20


def batching(sink: Sink | None) -> bool:
    return sink is not None and hasattr(sink, "send_batch") and hasattr(sink, "render_batch")


def max_rows(sink: Sink) -> int:
    return max(1, int(getattr(sink, "max_batch_rows", DEFAULT_ROWS)))


def max_bytes(sink: Sink) -> int:
    return int(getattr(sink, "max_batch_bytes", DEFAULT_BYTES))


def claim_sizes(sinks: Mapping[str, Sink]) -> dict[str, int]:
    """{sink: rows of one full request} for the batching sinks (a claim's top-up)."""
    return {name: max_rows(s) for name, s in sinks.items() if batching(s)}


@dataclass
class Unit:
    """What one request carries: one row (``traces`` empty: the dispatcher reads and renders
    it), or a batch of rows of ``sink`` with their parsed traces."""
    rows: list[Claimed]
    sink: str
    traces: list[TraceRow] = field(default_factory=list)

    @property
    def batch(self) -> bool:
        return bool(self.traces)


def plan(rows: Sequence[Claimed], traces: Mapping[str, dict],
         sinks: Mapping[str, Sink]) -> list[Unit]:
    """The claimed ``rows`` (in id order) as requests: the batches first (in the order of
    their first row), then the rows sent alone."""
    alone: list[Unit] = []
    groups: dict[tuple, list[tuple[Claimed, TraceRow]]] = {}
    for row in rows:
        sink = sinks.get(row.sink)
        trace = traces.get(row.trace_id)
        if trace is None or not batching(sink):
            alone.append(Unit([row], row.sink))
            continue
        try:
            tr = TraceRow.from_db(trace)
            key = (row.sink, sink.batch_key(tr))
        except Exception:  # noqa: BLE001 - sent (and its problem recorded) alone
            alone.append(Unit([row], row.sink))
            continue
        groups.setdefault(key, []).append((row, tr))
    out: list[Unit] = []
    for (name, _key), members in groups.items():
        limit = max_rows(sinks[name])
        for i in range(0, len(members), limit):
            chunk = members[i:i + limit]
            out.append(Unit([r for r, _ in chunk], name, [t for _, t in chunk]))
    return out + alone


def halves(unit: Unit) -> tuple[Unit, Unit]:
    half = len(unit.rows) // 2
    return (Unit(unit.rows[:half], unit.sink, unit.traces[:half]),
            Unit(unit.rows[half:], unit.sink, unit.traces[half:]))


def only(unit: Unit, ids: set[int]) -> Unit:
    """``unit`` without the rows whose id is not in ``ids`` (leases lost)."""
    keep = [i for i, r in enumerate(unit.rows) if r.id in ids]
    return Unit([unit.rows[i] for i in keep], unit.sink,
                [unit.traces[i] for i in keep] if unit.traces else [])
