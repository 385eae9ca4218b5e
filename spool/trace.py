"""The neutral internal trace model.

A *trace* is what one sink delivery carries: a closed turn (``kind='turn'``)
or a session summary (``kind='session'``).  Sinks render it (spool.render);
``traces.body`` stores ``Trace.to_dict()`` as JSON.  The pure functions that
build it from parsed events are in spool.turn_part and spool.trace_build.
"""
from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import orjson

from .redact import cut, redact_text, scrub_tail

# uuid5 namespace of spool trace ids (a fixed random UUID: never change it).
TRACE_NAMESPACE = uuid.UUID("6f1d2a52-9a4e-4d59-8a53-0c3a3b7f1e27")

LIFECYCLE_EVENTS = ("SessionStart", "SessionEnd")
INPUT_SUMMARY_MAX = 3000
OUTPUT_SUMMARY_MAX = 8000
NAME_CHARS = 30
DESCRIPTION_CHARS = 200
USAGE_KEYS = ("input", "cached", "cache_write", "output", "reasoning", "total", "requests")
# PostModelRequest.token_usage / rollout token_count key -> our key
_USAGE_MAP = (("input_tokens", "input"), ("cached_input_tokens", "cached"),
              ("cache_write_input_tokens", "cache_write"), ("output_tokens", "output"),
              ("reasoning_output_tokens", "reasoning"), ("total_tokens", "total"))


def trace_id(session_id: str, turn_id: str | None, kind: str, revision: int = 0) -> str:
    """Deterministic trace id: a re-run over the same events gives the same id."""
    key = f"{session_id}\x1f{turn_id or ''}\x1f{kind}"
    if revision:
        key += f"\x1f{revision}"
    return str(uuid.uuid5(TRACE_NAMESPACE, key))


def iso(ts: float | None) -> str:
    if ts is None:
        return ""
    # as datetime.fromtimestamp: rounded to the microsecond, then to the second below
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(round(ts * 1e6) // 1_000_000))


def clip(text: Any, limit: int, redact: bool = False) -> str:
    """``text`` as a string of at most ``limit`` characters ("..." marks a cut).  With
    ``redact``, secrets are redacted in the whole text before it is cut and the cut never
    leaves a secret's first characters (spool.redact.cut)."""
    if text is None:
        return ""
    if not isinstance(text, str):
        try:
            text = json.dumps(text, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = str(text)
    return cut(text, limit, redact=redact)


WS = re.compile(r"\s+")


def short_name(prompt: str, chars: int = NAME_CHARS, redact: bool = False) -> str:
    flat = WS.sub(" ", redact_text(prompt) if redact else prompt).strip()
    if len(flat) <= chars:
        return flat
    kept = flat[:chars].rstrip()
    return (scrub_tail(kept).rstrip() if redact else kept) + "..."


def empty_usage() -> dict[str, int]:
    return dict.fromkeys(USAGE_KEYS, 0)


def _count(v: Any) -> int:
    """A token count: numbers (not booleans) as int, anything else 0."""
    t = type(v)  # JSON numbers: int or float (bool is a subclass of int: not a count)
    return int(v) if t is int or t is float else 0


def usage_from_tokens(tokens: Mapping[str, Any]) -> dict[str, int]:
    """Our usage dict from a Codex token usage object (requests = 1)."""
    usage = {ours: _count(tokens.get(theirs)) for theirs, ours in _USAGE_MAP}
    usage["requests"] = 1
    return usage


def add_usage(into: dict[str, int], other: Mapping[str, int]) -> dict[str, int]:
    for k in USAGE_KEYS:
        into[k] += int(other.get(k, 0) or 0)
    return into


# --- inputs ------------------------------------------------------------------


@dataclass(slots=True)
class Event:
    """One parsed raw event (a ``raw_events`` row with status 'ok')."""

    id: int
    received_at: float
    event: str
    turn_id: str | None
    payload: dict
    late: bool = False

    @classmethod
    def from_row(cls, id: int, received_at: float, event: str, turn_id: str | None,
                 payload: bytes | str | None, late: int = 0) -> "Event":
        try:
            obj = orjson.loads(payload) if payload else {}
        except (ValueError, RecursionError, TypeError):  # truncated payload kept by ingest
            obj = {}
        if not isinstance(obj, dict):
            obj = {}
        return cls(id, received_at, event, turn_id, obj, bool(late))


@dataclass(slots=True)
class SessionFacts:
    session_id: str
    cwd: str | None = None
    project: str | None = None
    model: str | None = None
    permission_mode: str | None = None
    source: str | None = None
    codex_version: str | None = None
    git_branch: str | None = None
    git_commit: str | None = None
    run_id: str | None = None  # SPOOL_RUN_ID: the run (several sessions) it belongs to
    redact: bool = True  # SPOOL_REDACT, for the texts the trace builders cut


@dataclass(slots=True)
class Limits:
    max_input_preview: int = 200
    max_output_preview: int = 300
    redact: bool = True  # SPOOL_REDACT: secrets redacted before any text is cut


@dataclass(slots=True)
class CommandFacts:
    """What the rollout's item_completed CommandExecution says about one tool call."""

    exit_code: int | None = None
    status: str | None = None
    duration_ms: float | None = None
    command: str | None = None
    turn_id: str | None = None
    started_at: float | None = None  # epoch seconds (item_completed started_at_ms)
    ended_at: float | None = None
    source: str | None = None  # "unified_exec_startup" (the model's), "user_shell"…


@dataclass(slots=True)
class RolloutFacts:
    """The rollout facts the builders use (see spool.rollout.RolloutState.facts)."""

    commands: Mapping[str, CommandFacts] = field(default_factory=dict)
    turn_usage: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    turn_models: Mapping[str, str] = field(default_factory=dict)
    total_usage: Mapping[str, int] | None = None
    # turn id -> each model request's usage in order (+ "at": its time), token_usage_record
    turn_requests: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)


# --- the model -----------------------------------------------------------------


@dataclass(slots=True)
class StepError:
    type: str
    message: str
    recoverable: bool = True

    def to_dict(self) -> dict:
        return {"type": self.type, "message": self.message, "recoverable": self.recoverable}


@dataclass(slots=True)
class Step:
    action: str  # user_prompt|model_request|tool_use|compaction|subagent_start|...
    description: str
    turn_id: str | None = None
    number: int = 0
    started_at: float | None = None
    ended_at: float | None = None
    input_preview: str | None = None
    output_preview: str | None = None
    tool_name: str | None = None
    tool_use_id: str | None = None
    command: str | None = None
    exit_code: int | None = None
    status: str | None = None
    exec_duration_ms: float | None = None
    model: str | None = None
    usage: dict | None = None
    agent_id: str | None = None
    error: StepError | None = None

    @property
    def duration_ms(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return round(max(0.0, self.ended_at - self.started_at) * 1000.0, 3)

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"number": self.number, "action": self.action,
                             "description": self.description}
        if self.turn_id is not None:
            d["turn_id"] = self.turn_id
        if self.started_at is not None:
            d["started_at"] = self.started_at
        if self.ended_at is not None:
            d["ended_at"] = self.ended_at
        duration = self.duration_ms
        if duration is not None:
            d["duration_ms"] = duration
        if self.input_preview is not None:
            d["input_preview"] = self.input_preview
        if self.output_preview is not None:
            d["output_preview"] = self.output_preview
        if self.tool_name is not None:  # a tool step always says these, None or not
            d["tool_name"] = self.tool_name
            d["tool_use_id"] = self.tool_use_id
            d["command"] = self.command
            d["exit_code"] = self.exit_code
            if self.exec_duration_ms is not None:
                d["exec_duration_ms"] = self.exec_duration_ms
        if self.status is not None:
            d["status"] = self.status
        if self.model is not None:
            d["model"] = self.model
        if self.usage is not None:
            d["usage"] = self.usage
        if self.agent_id is not None:
            d["agent_id"] = self.agent_id
        if self.error is not None:
            d["error"] = self.error.to_dict()
        return d


@dataclass(slots=True)
class Trace:
    trace_id: str
    kind: str  # turn|session
    name: str
    description: str
    session_id: str
    turn_id: str | None
    revision: int
    supersedes: str | None
    started_at: float | None
    ended_at: float | None
    input_summary: str
    output_summary: str
    steps: list[Step]
    usage: dict[str, int]
    environment: dict[str, Any]
    project: str | None
    event_count: int
    late_event_count: int
    incomplete: bool = False
    usage_source: str = "none"  # hooks|rollout|mixed|none
    notes: list[str] = field(default_factory=list)
    turns: list[dict] | None = None  # session summaries: one line per turn
    # A subagent's turn trace: its link to the parent (agent id/type, parent
    # session/turn/trace, the spawn step, depth).  Its steps and usage are its own.
    agent: dict | None = None
    # A parent turn: one link per subagent it spawned (agent id, child turn and
    # trace ids, the spawn step).  The children's steps/usage are never in this trace.
    subagents: list[dict] | None = None

    @property
    def duration_ms(self) -> float:
        if self.started_at is None or self.ended_at is None:
            return 0.0
        return round(max(0.0, self.ended_at - self.started_at) * 1000.0, 3)

    @property
    def errors(self) -> list[dict]:
        out = []
        for s in self.steps:
            if s.error is not None:
                e = s.error.to_dict()
                e["step_number"] = s.number
                out.append(e)
        return out

    def to_dict(self, step_memo: dict[int, dict] | None = None) -> dict:
        """The JSON-ready body.

        ``step_memo`` (optional, keyed by ``id(step)``) shares the step dicts
        between traces built from the same steps (a turn trace and the session
        summary): each step is turned into a dict once and only its ``number``
        differs.  The steps must not change between the calls sharing a memo.
        """
        if step_memo is None:
            steps = [s.to_dict() for s in self.steps]
        else:
            steps = []
            for s in self.steps:
                sd = step_memo.get(id(s))
                if sd is None:
                    sd = step_memo[id(s)] = s.to_dict()
                    steps.append(sd)
                else:  # a copy (never mutate a dict another body holds)
                    sd = dict(sd)
                    sd["number"] = s.number
                    steps.append(sd)
        d = {
            "schema": "spool.trace/1",
            "trace_id": self.trace_id,
            "kind": self.kind,
            "name": self.name,
            "description": self.description,
            "session_id": self.session_id,
            "turn_id": self.turn_id,
            "revision": self.revision,
            "supersedes": self.supersedes,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_ms": self.duration_ms,
            "current_datetime": iso(self.ended_at),
            "input_summary": self.input_summary,
            "output_summary": self.output_summary,
            "steps": steps,
            "errors": self.errors,
            "usage": dict(self.usage),
            "usage_source": self.usage_source,
            "environment": dict(self.environment),
            "project": self.project,
            "event_count": self.event_count,
            "late_event_count": self.late_event_count,
            "incomplete": self.incomplete,
            "notes": list(self.notes),
        }
        if self.turns is not None:
            d["turns"] = self.turns
        if self.agent is not None:
            d["agent"] = self.agent
        if self.subagents is not None:
            d["subagents"] = self.subagents
        return d


