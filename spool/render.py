"""Renderings of the neutral trace model (spool/trace.py) for sinks.

STUB: the aggregation work replaces this with the full Infinium rendering.
The signature is the contract the Infinium sink codes against.
"""
from __future__ import annotations

from typing import Any, Mapping


def to_infinium(trace: Mapping[str, Any], *, max_input_preview: int = 200,
                max_output_preview: int = 300) -> dict:
    """The Infinium API body (see infinium-api.md) for one trace (the dict in traces.body)."""
    return {
        "name": str(trace.get("name", "trace"))[:60],
        "description": str(trace.get("description", ""))[:200],
        "current_datetime": trace.get("current_datetime", ""),
        "duration": float(trace.get("duration_ms", 0) or 0) / 1000.0,
        "input_summary": str(trace.get("input_summary", ""))[:3000],
        "output_summary": str(trace.get("output_summary", ""))[:8000],
        "steps": [],
        "errors": [],
        "environment": {"framework": "codex-cli",
                        "custom_tags": {"trace_type": trace.get("kind", "turn")}},
    }
