"""Building traces: parsed events -> the neutral model of spool.trace (pure).

``build_part`` is the event state machine: one turn's events (sorted by id)
become steps, usage and summary facts (``TurnPart``); ``build_turn_trace`` and
``build_session_trace`` turn parts into a ``Trace``.  No I/O, no clock (times
come from the events' arrival stamps), so a re-run over the same events builds
the same body.

Token usage: ``input`` includes ``cached`` (as OpenAI counts) and ``output``
includes ``reasoning``.  It comes from PostModelRequest payloads; a turn with
none (older Codex) takes the rollout's ``last_token_usage`` lines of that turn.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from .reconcile import reconcile, settle_order
from .redact import redact_text
from .trace import (DESCRIPTION_CHARS, INPUT_SUMMARY_MAX, LIFECYCLE_EVENTS, OUTPUT_SUMMARY_MAX, WS,
                    Event, Limits, RolloutFacts, SessionFacts, Step, StepError, Trace, add_usage,
                    clip, empty_usage, short_name, trace_id, usage_from_tokens)


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
    if isinstance(tool_input, Mapping):
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
            if isinstance(tu, Mapping):
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
            command = _command_of(get("tool_input"), red)
            if name == "PreToolUse":
                if tool_use_id and tool_use_id in pending_tools:
                    continue  # a duplicate Pre: keep the first
                s = Step("tool_use", command or tool_name, ev.turn_id, 0, t)
                s.tool_name = tool_name
                s.tool_use_id = tool_use_id
                s.command = command
                if command is not None:
                    s.input_preview = clip(command, li, red)
                steps.append(s)
                if tool_use_id:
                    pending_tools[tool_use_id] = s
                continue
            if name == "PermissionRequest":
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
                s = Step("tool_use", command or tool_name, ev.turn_id, 0, t)
                s.tool_name = tool_name
                s.tool_use_id = tool_use_id
                s.command = command
                if command is not None:
                    s.input_preview = clip(command, li, red)
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
    # Exit codes: the rollout's item_completed CommandExecution, by tool_use_id.
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


def _spawned(resp: Any) -> tuple[str, str | None] | None:
    """(agent_id, nickname) from a spawn_agent tool response, None if it names none."""
    if isinstance(resp, str):
        try:
            resp = json.loads(resp)
        except ValueError:
            return None
    if isinstance(resp, Mapping) and _str(resp.get("agent_id")):
        return resp["agent_id"], _str(resp.get("nickname"))
    return None


def _last_str(events: Sequence[Event], key: str) -> str | None:
    for ev in reversed(events):
        v = ev.payload.get(key)
        if v and isinstance(v, str):
            return v
    return None


def _environment(session: SessionFacts, model, permission_mode, cwd) -> dict:
    return {
        "model": model or session.model,
        "cwd": cwd or session.cwd,
        "permission_mode": permission_mode or session.permission_mode,
        "session_source": session.source,
        "codex_version": session.codex_version,
        "git_branch": session.git_branch,
        "git_commit": session.git_commit,
        **({"run_id": session.run_id} if session.run_id else {}),
    }


def _number(steps: Iterable[Step]) -> list[Step]:
    out = list(steps)
    for i, s in enumerate(out, 1):
        s.number = i
    return out


def build_turn_trace(session: SessionFacts, part: TurnPart, *, revision: int = 0,
                     supersedes: str | None = None, end_reason: str | None = None,
                     agent: Mapping[str, Any] | None = None,
                     subagents: Sequence[Mapping[str, Any]] | None = None) -> Trace:
    """The trace of one turn.  ``end_reason`` says why an unfinished turn is traced.

    A subagent's turn (``part.agent_id``) is a trace of its own: ``agent`` is
    its link to the parent (spool.aggregate.links.resolve); it ends with
    SubagentStop, not Stop.  ``subagents`` are the links a parent turn gets to
    the children it spawned."""
    tid = trace_id(session.session_id, part.turn_id, "turn", revision)
    first = part.prompts[0] if part.prompts else ""
    notes = list(part.notes)
    child = part.agent_id is not None
    incomplete = not part.has_stop
    if incomplete:
        what = "SubagentStop" if child else "Stop"
        notes.insert(0, f"incomplete turn: no {what} received ({end_reason or 'turn still open'})")
    if not part.prompts:
        notes.append("no UserPromptSubmit received for this turn")
    late = part.late_count
    if late:
        notes.append(f"{late} event(s) arrived after the turn was first traced")
    if revision:
        notes.append(f"revision {revision} of this turn, superseding {supersedes}")
    if part.usage_source == "rollout":
        notes.append("token usage from the rollout (no PostModelRequest usage)")
    if part.events and part.events[0].payload.get("spool_source") == "import":
        notes.append("imported from the Codex rollout file (spool import)")
    red = session.redact
    name = short_name(first, redact=red) if first.strip() else "Codex turn"
    if child:
        name = f"Subagent {part.agent_type or 'agent'}: {name}"
        if agent is None or not agent.get("parent_turn_id"):
            notes.append("subagent: the spawn_agent call that started it was not found")
    return Trace(
        trace_id=tid, kind="turn", name=name,
        description=clip(WS.sub(" ", first).strip(), DESCRIPTION_CHARS, red) or name,
        session_id=session.session_id, turn_id=part.turn_id, revision=revision,
        supersedes=supersedes, started_at=part.started_at, ended_at=part.ended_at,
        input_summary=clip("\n\n".join(part.prompts), INPUT_SUMMARY_MAX, red),
        output_summary=clip(part.last_message or "", OUTPUT_SUMMARY_MAX, red),
        steps=_number(part.steps), usage=dict(part.usage),
        environment=_environment(session, part.model, part.permission_mode, part.cwd),
        project=session.project, event_count=len(part.events), late_event_count=late,
        incomplete=incomplete, usage_source=part.usage_source, notes=notes,
        agent=dict(agent) if agent is not None else (
            {"agent_id": part.agent_id, "agent_type": part.agent_type} if child else None),
        subagents=[dict(x) for x in subagents] if subagents else None,
    )


def build_session_trace(session: SessionFacts, parts: Sequence[TurnPart], *,
                        lifecycle: Sequence[Event] = (), revision: int = 1,
                        supersedes: str | None = None, end_reason: str = "ended",
                        turn_trace_ids: Mapping[str, str] | None = None,
                        rollout_total: Mapping[str, int] | None = None,
                        agents: Mapping[str, Mapping[str, Any]] | None = None) -> Trace:
    """The summary of a whole session: every turn's steps, in order, totals
    (subagents' turns included; ``agents``: their links, by turn id)."""
    tid = trace_id(session.session_id, None, "session", revision)
    turn_trace_ids = turn_trace_ids or {}
    ordered = sorted((p for p in parts if p.events), key=lambda p: p.events[0].id)
    # Lifecycle steps (SessionStart/End) are placed among the turns by arrival order.
    red = session.redact
    life_steps = build_part(None, list(lifecycle), Limits(redact=red)).steps if lifecycle else []
    life = sorted(zip([e.id for e in lifecycle], life_steps), key=lambda x: x[0])
    steps: list[Step] = []
    li = 0
    for part in ordered:
        while li < len(life) and life[li][0] < part.events[0].id:
            steps.append(life[li][1])
            li += 1
        steps.extend(part.steps)
    steps.extend(s for _, s in life[li:])
    usage = empty_usage()
    sources = set()
    prompts: list[str] = []
    turns = []
    last_message = ""
    late = 0
    model = permission_mode = cwd = None
    incomplete_turns = 0
    for part in ordered:
        add_usage(usage, part.usage)
        if part.usage_source != "none":
            sources.add(part.usage_source)
        prompts.extend(part.prompts)
        if part.last_message:
            last_message = part.last_message
        late += part.late_count
        model = part.model or model
        permission_mode = part.permission_mode or permission_mode
        cwd = part.cwd or cwd
        if not part.has_stop:
            incomplete_turns += 1
        turns.append({"turn_id": part.turn_id, "trace_id": turn_trace_ids.get(part.turn_id or ""),
                      "prompt": clip(part.prompts[0], 200, red) if part.prompts else "",
                      "started_at": part.started_at, "ended_at": part.ended_at,
                      "event_count": len(part.events), "complete": part.has_stop,
                      "usage": dict(part.usage)})
        if part.agent_id:  # a subagent's turn
            link = (agents or {}).get(part.turn_id or "") or {}
            turns[-1].update(agent_id=part.agent_id, agent_type=part.agent_type,
                             depth=link.get("depth", 1),
                             parent_turn_id=link.get("parent_turn_id"))
    late += sum(1 for e in lifecycle if e.late)
    all_times = [e.received_at for p in ordered for e in p.events] + [e.received_at for e in lifecycle]
    first = prompts[0] if prompts else ""
    base = short_name(first, redact=red) if first.strip() else f"Codex session ({len(ordered)} turns)"
    notes = [f"session summary of {len(ordered)} turn(s), {end_reason}"]
    imported = sum(1 for p in ordered if p.events[0].payload.get("spool_source") == "import")
    if imported:
        notes.append(f"{imported} turn(s) imported from the Codex rollout file (spool import)")
    if revision > 1:
        notes.append(f"revision {revision}, superseding {supersedes}: the session resumed "
                     "after its previous summary")
    if incomplete_turns:
        notes.append(f"{incomplete_turns} turn(s) without a Stop")
    if late:
        notes.append(f"{late} event(s) arrived after their turn was traced")
    if rollout_total is not None:
        notes.append("rollout total_token_usage: " + json.dumps(dict(rollout_total), sort_keys=True))
    source = sources.pop() if len(sources) == 1 else ("mixed" if sources else "none")
    return Trace(
        trace_id=tid, kind="session", name="(Summary) " + base,
        description=clip(WS.sub(" ", first).strip(), DESCRIPTION_CHARS, red) or base,
        session_id=session.session_id, turn_id=None, revision=revision, supersedes=supersedes,
        started_at=min(all_times) if all_times else None,
        ended_at=max(all_times) if all_times else None,
        input_summary=clip("\n\n".join(prompts), INPUT_SUMMARY_MAX, red),
        output_summary=clip(last_message, OUTPUT_SUMMARY_MAX, red),
        steps=_number(steps), usage=usage,
        environment=_environment(session, model, permission_mode, cwd),
        project=session.project, event_count=sum(len(p.events) for p in ordered) + len(lifecycle),
        late_event_count=late, incomplete=incomplete_turns > 0, usage_source=source,
        notes=notes, turns=turns,
    )
