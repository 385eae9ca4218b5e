"""Delivery sinks: where traces go (see spool/sinks/base.py for the interface)."""
from __future__ import annotations

from .base import Sink, TraceRow, default_sinks

__all__ = ["Sink", "TraceRow", "default_sinks"]
