"""A turn's events -> its steps, usage and summary facts (``TurnPart``; pure).

``build_part`` is the event state machine: one turn's events (sorted by id;
async hooks settled first, spool/reconcile.py) become steps - model requests,
tool calls, prompts, compactions, subagent starts/stops, lifecycle - plus the
turn's usage, last message and the subagents it spawned.  spool.trace_build
makes traces of parts; spool.aggregate.links links a subagent's part to the
part that spawned it.  No I/O, no clock (times are the events' arrival stamps).

Token usage: ``input`` includes ``cached`` (as OpenAI counts) and ``output``
includes ``reasoning``.  It comes from PostModelRequest payloads; a turn with
none (older Codex) takes the rollout's ``last_token_usage`` lines of that turn.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

from .reconcile import reconcile, settle_order
from .redact import redact_text
from .trace import (LIFECYCLE_EVENTS, OUTPUT_SUMMARY_MAX, Event, Limits, RolloutFacts, Step,
                    StepError, add_usage, clip, empty_usage, usage_from_tokens)


@dataclass(slots=True)
class TurnPart:
    """The steps and facts of one turn's events (shared by turn and session traces)."""

    turn_id: str | None
    events: list[Event]
    steps: list[Step]
    prompts: list[str]
    last_message: str | None
    has_stop: bool
    usage: dict[str, int]
    usage_source: str
    model: str | None
    permission_mode: str | None
    cwd: str | None
    notes: list[str]

    # The first event's arrival, the latest arrival, how many came late.
    started_at: float | None = None
    ended_at: float | None = None
    late_count: int = 0
    # A subagent's turn: the child's agent id and type (its events carry them).
    agent_id: str | None = None
    agent_type: str | None = None
    # The subagents this turn spawned: {agent_id, nickname, tool_use_id, step}
    # from each spawn_agent PostToolUse (step: the spawn step's place, 1-based).
    spawns: list[dict] = field(default_factory=list)


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _red(text: Any, on: bool) -> Any:
    """``text`` redacted when redaction is on (spool.redact: before anything is cut)."""
    return redact_text(text) if on and isinstance(text, str) and text else text


def _command_of(tool_input: Any, red: bool = True) -> str | None:
    if isinstance(tool_input, dict):  # payloads are JSON: dicts, never other Mappings
        for k in ("command", "cmd"):
            c = tool_input.get(k)
            if isinstance(c, str):
                return _red(c, red)
            if isinstance(c, list) and all(isinstance(x, str) for x in c):
                return _red(" ".join(c), red)
        if not tool_input:
            return None
    if tool_input is None:
        return None
    return clip(tool_input, 10_000, red)


def build_part(turn_id: str | None, events: Sequence[Event], limits: Limits,
               rollout: RolloutFacts | None = None) -> TurnPart:
    """Steps, usage and summary facts of one turn's events (sorted by id)."""
    rollout = rollout or RolloutFacts()
    events = settle_order(events)  # async hooks: each Pre before its Post (spool/reconcile.py)
    li, lo, red = limits.max_input_preview, limits.max_output_preview, limits.redact
    steps: list[Step] = []
    prompts: list[str] = []
    notes: list[str] = []
    last_message = None
    has_stop = False
    hook_usage = empty_usage()
    hook_usage_seen = False
    pending_models: list[Step] = []
    pending_tools: dict[str, Step] = {}
    pending_compact: list[Step] = []
    seen_tool_posts: set[str] = set()
    spawns: list[dict] = []
    agent_id = agent_type = None

    # Steps are made as Step(action, description, turn_id, number, started_at,
    # ended_at) and completed by attribute.
    started_at = events[0].received_at if events else None
    ended_at = started_at
    late_count = 0
    for ev in events:
        p = ev.payload
        name = ev.event
        t = ev.received_at
        if t > ended_at:
            ended_at = t
        if ev.late:
            late_count += 1
        get = p.get
        if agent_id is None and ev.turn_id is not None and _str(get("agent_id")):
            agent_id, agent_type = get("agent_id"), _str(get("agent_type")) or "agent"
        if name == "PostModelRequest":
            if pending_models:
                s = pending_models.pop(0)
            else:
                s = Step("model_request", "Model request", ev.turn_id, 0, t)
                s.model = _str(get("model"))
                steps.append(s)
            s.ended_at = t
            status = _str(get("status"))
            s.status = status
            tu = get("token_usage")
            if isinstance(tu, dict):
                u = usage_from_tokens(tu)
                s.usage = u
                add_usage(hook_usage, u)
                hook_usage_seen = True
            err = get("error")
            if err or (status and status != "completed"):
                s.error = StepError("ModelError", clip(
                    f"model request {status or 'failed'}: {clip(err, 500, red) if err else ''}"
                    .strip(": "), 1000, red))
        elif name == "PreModelRequest":
            s = Step("model_request", "Model request", ev.turn_id, 0, t)
            s.model = _str(get("model"))
            steps.append(s)
            pending_models.append(s)
        elif name == "PreToolUse" or name == "PostToolUse" or name == "PermissionRequest":
            tool_use_id = _str(get("tool_use_id"))
            tool_name = _str(get("tool_name")) or "tool"
            if name == "PreToolUse":
                if tool_use_id and tool_use_id in pending_tools:
                    continue  # a duplicate Pre: keep the first
                s = _tool_step(ev.turn_id, t, tool_name, tool_use_id,
                               _command_of(get("tool_input"), red), li, red)
                steps.append(s)
                if tool_use_id:
                    pending_tools[tool_use_id] = s
                continue
            if name == "PermissionRequest":
                command = _command_of(get("tool_input"), red)
                s = Step("permission_request", f"Permission request: {tool_name}",
                         ev.turn_id, 0, t, t)
                s.tool_name = tool_name
                s.tool_use_id = tool_use_id
                s.command = command
                if command:
                    s.input_preview = clip(command, li, red)
                steps.append(s)
                continue
            # PostToolUse
            if tool_use_id and tool_use_id in seen_tool_posts:
                continue  # duplicate Post
            s = pending_tools.pop(tool_use_id, None) if tool_use_id else None
            if s is None:
                s = _tool_step(ev.turn_id, t, tool_name, tool_use_id,
                               _command_of(get("tool_input"), red), li, red)
                steps.append(s)
                notes.append(f"tool call {tool_use_id or '?'}: PostToolUse without PreToolUse")
            if tool_use_id:
                seen_tool_posts.add(tool_use_id)
            s.ended_at = t
            s.status = "completed"
            resp = get("tool_response")
            s.output_preview = clip(resp, lo, red) if resp is not None else ""
            if tool_name.endswith("spawn_agent"):
                child = _spawned(resp)
                if child is not None:
                    s.agent_id = child[0]
                    spawns.append({"agent_id": child[0], "nickname": child[1],
                                   "tool_use_id": tool_use_id, "step": s})
        elif name == "UserPromptSubmit":
            prompt = get("prompt")
            prompt = _red(prompt, red) if isinstance(prompt, str) else (
                "" if prompt is None else clip(prompt, 10_000, red))
            prompts.append(prompt)
            s = Step("user_prompt", "User prompt", ev.turn_id, 0, t, t)
            s.input_preview = clip(prompt, li, red)
            steps.append(s)
        elif name == "Stop":
            has_stop = True
            msg = get("last_assistant_message")
            if msg is not None:
                last_message = _red(msg, red) if isinstance(msg, str) else clip(
                    msg, OUTPUT_SUMMARY_MAX, red)
        elif name == "PreCompact":
            s = Step("compaction", f"Context compaction ({_str(get('trigger')) or 'auto'})",
                     ev.turn_id, 0, t)
            steps.append(s)
            pending_compact.append(s)
        elif name == "PostCompact":
            if pending_compact:
                s = pending_compact.pop(0)
            else:
                s = Step("compaction", f"Context compaction ({_str(get('trigger')) or 'auto'})",
                         ev.turn_id, 0, t)
                steps.append(s)
            s.ended_at = t
            s.status = "completed"
        elif name == "SubagentStart" or name == "SubagentStop":
            agent = _str(get("agent_id"))
            kind = _str(get("agent_type")) or "agent"
            start = name == "SubagentStart"
            s = Step("subagent_start" if start else "subagent_stop",
                     f"Subagent {'started' if start else 'stopped'}: {kind}", ev.turn_id, 0, t, t)
            s.agent_id = agent
            if not start and get("last_assistant_message") is not None:
                s.output_preview = clip(get("last_assistant_message"), lo, red)
            if not start and agent is not None and agent == agent_id:
                # A subagent's own turn ends here (the child fires no Stop).
                has_stop = True
                msg = get("last_assistant_message")
                if msg is not None:
                    last_message = _red(msg, red) if isinstance(msg, str) else clip(
                        msg, OUTPUT_SUMMARY_MAX, red)
            steps.append(s)
        elif name == "Interrupt":
            s = Step("interrupt", "Turn interrupted", ev.turn_id, 0, t, t)
            s.error = StepError("Interrupted", "the turn was interrupted")
            steps.append(s)
        elif name == "SessionStart":
            src = _str(get("source")) or "startup"
            s = Step("session_start", f"Session started ({src})", None, 0, t, t)
            s.model = _str(get("model"))
            steps.append(s)
        elif name == "SessionEnd":
            reason = _str(get("reason")) or "unknown"
            steps.append(Step("session_end", f"Session ended ({reason})", None, 0, t, t))
        else:
            steps.append(Step("event", f"{name or 'unknown'} event", ev.turn_id, 0, t, t))

    for s in pending_models:
        s.status = "no_response"
    for s in pending_tools.values():
        s.status = "no_result"
        notes.append(f"tool call {s.tool_use_id}: no PostToolUse received")
    _exit_codes(steps, rollout, li, red)

    real = any(e.event not in LIFECYCLE_EVENTS for e in events)
    if hook_usage_seen:
        usage, source = hook_usage, "hooks"
        usage["requests"] = max(usage["requests"], 0)
    elif turn_id is not None and turn_id in rollout.turn_usage:
        usage, source = add_usage(empty_usage(), rollout.turn_usage[turn_id]), "rollout"
    else:
        usage, source = empty_usage(), "none"
        usage["requests"] = sum(1 for s in steps if s.action == "model_request")
    # The last event that says wins (scanned from the end: usually the last one).
    model, permission_mode, cwd = (_last_str(events, "model"),
                                   _last_str(events, "permission_mode"), _last_str(events, "cwd"))
    if real and turn_id is not None:
        model = model or rollout.turn_models.get(turn_id)
    part = TurnPart(turn_id, list(events), steps, prompts, last_message, has_stop, usage, source,
                    model, permission_mode, cwd, notes, started_at, ended_at, late_count,
                    agent_id, agent_type, spawns)
    # Async hook events lost at exit: filled in from the rollout (spool/reconcile.py).
    if real:
        part = reconcile(part, rollout, li)
    for sp in spawns:  # the step object -> its place among the turn's steps
        sp["step"] = next(i for i, x in enumerate(part.steps, 1) if x is sp["step"])
    return part


def _tool_step(turn_id: str | None, t: float, tool_name: str, tool_use_id: str | None,
               command: str | None, li: int, red: bool) -> Step:
    s = Step("tool_use", command or tool_name, turn_id, 0, t)
    s.tool_name = tool_name
    s.tool_use_id = tool_use_id
    s.command = command
    if command is not None:
        s.input_preview = clip(command, li, red)
    return s


def _exit_codes(steps: list[Step], rollout: RolloutFacts, li: int, red: bool) -> None:
    """Exit codes, status and duration of the commands: the rollout's item_completed
    CommandExecution, by tool_use_id (a failed one becomes the step's error)."""
    for s in steps:
        if s.action != "tool_use" or not s.tool_use_id:
            continue
        cf = rollout.commands.get(s.tool_use_id)
        if cf is None:
            continue
        s.exit_code = cf.exit_code
        if cf.status:
            s.status = cf.status
        s.exec_duration_ms = cf.duration_ms
        if s.command is None and cf.command:
            s.command = _red(cf.command, red)
            s.description = s.command
            s.input_preview = clip(s.command, li, red)
        failed = (cf.exit_code not in (None, 0)) or (cf.status in ("failed", "declined"))
        if failed and s.error is None:
            code = "unknown" if cf.exit_code is None else str(cf.exit_code)
            what = s.command or cf.command or s.tool_name or "command"
            s.error = StepError("ToolError", clip(
                f"command exited with code {code} ({cf.status or 'failed'}): {what}", 1000, red))


def _spawned(resp: Any) -> tuple[str, str | None] | None:
    """(agent_id, nickname) from a spawn_agent tool response, None if it names none."""
    if isinstance(resp, str):
        try:
            resp = json.loads(resp)
        except ValueError:
            return None
    if isinstance(resp, dict) and _str(resp.get("agent_id")):
        return resp["agent_id"], _str(resp.get("nickname"))
    return None


def _last_str(events: Sequence[Event], key: str) -> str | None:
    for ev in reversed(events):
        v = ev.payload.get(key)
        if v and isinstance(v, str):
            return v
    return None
