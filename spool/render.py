"""Renderings of the neutral trace model (spool/trace.py) for sinks.

``to_infinium`` builds the body of ``POST /agents/{id}/trace`` (see the
Infinium API notes): field names as the existing connector sends them, the
trace kind in ``environment.custom_tags.trace_type``, ``llm_usage.prompt_tokens``
= input tokens *including* cached ones (as OpenAI counts), cached and reasoning
counts in ``custom_tags``, tool steps with ``action: "tool_use"`` and the
command in ``description`` and ``input_preview``.  A subagent's trace names
its parent (``custom_tags.parent_trace_id``, ``parent_spawn_step``, tag
``subagent``); a parent turn names its children (``child_trace_ids``).  At most ``MAX_STEPS``
steps: very long traces keep their first and last steps and say how many were
left out (``custom_tags.steps_left_out``).  The 1 MiB size limit is the sink's
(spool.sinks.size.shrink).  With ``redact`` every text is redacted before it is cut
(spool.redact.cut).
"""
from __future__ import annotations

import json
import platform
import re
from typing import Any, Mapping

from . import __version__ as _spool_version
from .redact import cut

NAME_MAX = 100
DESCRIPTION_MAX = 200
INPUT_SUMMARY_MAX = 3000
OUTPUT_SUMMARY_MAX = 8000
ERROR_MESSAGE_MAX = 1000
MAX_STEPS = 1000

_PATCH_FILE = re.compile(r"\*\*\* (?:Add|Update|Delete) File: ([^\n]+)")


def _clip(text: Any, limit: int, redact: bool) -> str:
    if text is None:
        return ""
    if not isinstance(text, str):
        text = json.dumps(text, ensure_ascii=False, default=str)
    return cut(text, limit, redact=redact)


def _int(v: Any) -> int:
    try:
        return int(v or 0)
    except (TypeError, ValueError):
        return 0


def _cost(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _step(s: Mapping[str, Any], li: int, lo: int, red: bool) -> dict:
    action = str(s.get("action") or "event")
    description = str(s.get("description") or action)
    input_preview = s.get("input_preview") or ""
    if action == "tool_use":
        command = s.get("command")
        tool = s.get("tool_name") or "tool"
        if command:
            description = f"{tool}: {command}"
            input_preview = command
        else:
            description = str(tool)
        if s.get("exit_code") is not None:  # the Infinium step has no field for it
            description = f"{description} (exit {s['exit_code']})"
    out: dict[str, Any] = {
        "step_number": _int(s.get("number")),
        "action": action,
        "description": _clip(description, DESCRIPTION_MAX, red),
        "duration_ms": float(s.get("duration_ms") or 0.0),
        "input_preview": _clip(input_preview, li, red),
        "output_preview": _clip(s.get("output_preview") or "", lo, red),
    }
    err = s.get("error")
    if isinstance(err, Mapping):
        out["error"] = {
            "error_type": str(err.get("type") or "Error"),
            "message": _clip(err.get("message") or "", ERROR_MESSAGE_MAX, red),
            "recoverable": bool(err.get("recoverable", True)),
            "retry_count": 0,
        }
    return out


def _files_modified(steps) -> list[str]:
    files: list[str] = []
    for s in steps:
        if s.get("action") != "tool_use":
            continue
        for m in _PATCH_FILE.finditer(str(s.get("command") or "")):
            f = m.group(1).strip()
            if f and f not in files:
                files.append(f)
    return files


def _pick_steps(steps: list, limit: int) -> tuple[list, int]:
    if len(steps) <= limit:
        return steps, 0
    head = limit // 2
    tail = limit - head
    return steps[:head] + steps[-tail:], len(steps) - limit


def to_infinium(trace: Mapping[str, Any], *, max_input_preview: int = 200,
                max_output_preview: int = 300, redact: bool = True) -> dict:
    """The Infinium API body (see infinium-api.md) for one trace (the dict in traces.body)."""
    all_steps = [s for s in (trace.get("steps") or []) if isinstance(s, Mapping)]
    usage = trace.get("usage") or {}
    env = trace.get("environment") or {}
    kind = str(trace.get("kind") or "turn")
    model = env.get("model") or ""
    tools_used = sorted({str(s.get("tool_name")) for s in all_steps
                         if s.get("action") == "tool_use" and s.get("tool_name")})
    custom_tags = {
        "trace_type": kind,
        "model": model,
        "session_source": env.get("session_source"),
        "working_directory": env.get("cwd"),
        "permission_mode": env.get("permission_mode"),
        "session_id": trace.get("session_id"),
        "turn_id": trace.get("turn_id"),
        "trace_id": trace.get("trace_id"),
        "revision": trace.get("revision"),
        "supersedes": trace.get("supersedes"),
        "codex_version": env.get("codex_version"),
        "git_branch": env.get("git_branch"),
        "git_commit": env.get("git_commit"),
        "cached_input_tokens": _int(usage.get("cached")),
        "reasoning_output_tokens": _int(usage.get("reasoning")),
        "cache_write_input_tokens": _int(usage.get("cache_write")),
        "event_count": _int(trace.get("event_count")),
        "late_event_count": _int(trace.get("late_event_count")),
        "incomplete": bool(trace.get("incomplete")),
        "usage_source": trace.get("usage_source"),
        "run_id": env.get("run_id"),
        "cost_usd": _cost(trace.get("cost_usd")),  # None (unpriced): left out
        "cost_flags": "; ".join(str(f) for f in trace.get("cost_flags") or ()) or None,
    }
    agent = trace.get("agent") if isinstance(trace.get("agent"), Mapping) else None
    if agent is not None:  # a subagent's trace: its link to the parent turn and spawn step
        custom_tags.update({
            "agent_id": agent.get("agent_id"), "agent_type": agent.get("agent_type"),
            "agent_nickname": agent.get("nickname"), "agent_depth": agent.get("depth"),
            "parent_trace_id": agent.get("parent_trace_id"),
            "parent_turn_id": agent.get("parent_turn_id"),
            "parent_spawn_step": agent.get("spawn_step"),
            "parent_spawn_tool_use_id": agent.get("spawn_tool_use_id")})
    subagents = [x for x in (trace.get("subagents") or []) if isinstance(x, Mapping)]
    if subagents:  # a parent turn: its children's trace ids
        custom_tags["child_trace_ids"] = ",".join(str(x.get("trace_id") or "") for x in subagents)
        custom_tags["child_agent_ids"] = ",".join(str(x.get("agent_id") or "") for x in subagents)
    custom_tags = {k: v for k, v in custom_tags.items() if v is not None}
    tags = ["codex", kind]
    if agent is not None:
        tags.append("subagent")
    if trace.get("incomplete"):
        tags.append("incomplete")

    picked, left_out = _pick_steps(all_steps, MAX_STEPS)
    steps = [_step(s, max_input_preview, max_output_preview, redact) for s in picked]
    errors = [dict(s["error"], step_number=s["step_number"]) for s in steps if "error" in s]
    tags_ = dict(custom_tags)
    if left_out:
        tags_["steps_left_out"] = left_out
    return {
        "name": _clip(trace.get("name") or "Codex trace", NAME_MAX, redact),
        "description": _clip(trace.get("description") or "", DESCRIPTION_MAX, redact),
        "current_datetime": trace.get("current_datetime") or "",
        "duration": float(trace.get("duration_ms") or 0.0) / 1000.0,
        "input_summary": _clip(trace.get("input_summary") or "", INPUT_SUMMARY_MAX, redact),
        "output_summary": _clip(trace.get("output_summary") or "", OUTPUT_SUMMARY_MAX, redact),
        "steps": steps,
        "errors": errors,
        "llm_usage": {
            "model": model,
            "provider": "openai",
            "prompt_tokens": _int(usage.get("input")),  # includes cached
            "completion_tokens": _int(usage.get("output")),  # includes reasoning
            "total_tokens": _int(usage.get("total")),
            "api_calls_count": _int(usage.get("requests")),
        },
        "sections": {
            "development": {"framework_used": "codex-cli",
                            "files_modified": _files_modified(all_steps)},
            "general": {"tools_used": tools_used, "tags": tags},
        },
        "environment": {
            "framework": "codex-cli",
            "sdk_version": f"spool/{_spool_version}",
            "runtime": f"python {platform.python_version()}",
            "custom_tags": tags_,
        },
    }
