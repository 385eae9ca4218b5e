"""Delivery sinks: where traces go (spool/sinks/base.py: the interface).

``SINKS`` maps an ``outbox.sink`` name to its class; a new sink adds one line
here.  ``default_sinks(env)`` is one instance of each (a dispatcher's set).
"""
from __future__ import annotations

from typing import Mapping

from .atif import AtifSink
from .base import Sink, TraceRow
from .file import FileSink
from .infinium import InfiniumSink
from .otlp import OtlpSink
from .size import MAX_BODY, shrink

SINKS: dict[str, type[Sink]] = {
    InfiniumSink.name: InfiniumSink,
    FileSink.name: FileSink,
    AtifSink.name: AtifSink,
    OtlpSink.name: OtlpSink,
}


def default_sinks(env: Mapping[str, str] | None = None) -> dict[str, Sink]:
    """One instance of every registered sink, by name."""
    return {name: cls(env=env) for name, cls in SINKS.items()}


__all__ = ["MAX_BODY", "SINKS", "Sink", "TraceRow", "default_sinks", "shrink"]
