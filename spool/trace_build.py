"""Building traces: turn parts -> the neutral model of spool.trace (pure).

``build_turn_trace`` makes one turn's trace, ``build_session_trace`` a
session's summary, from ``TurnPart``s (spool.turn_part: the event state
machine that turns events into steps and usage).  No I/O, no clock, so a
re-run over the same events builds the same body.
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Mapping, Sequence

from .trace import (DESCRIPTION_CHARS, INPUT_SUMMARY_MAX, OUTPUT_SUMMARY_MAX, WS, Event, Limits,
                    SessionFacts, Step, Trace, add_usage, clip, empty_usage, short_name, trace_id)
from .turn_part import TurnPart, build_part

__all__ = ["TurnPart", "build_part", "build_session_trace", "build_turn_trace"]


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


def _nested(parts: Sequence[TurnPart],
            agents: Mapping[str, Mapping[str, Any]]) -> dict[tuple[str | None, int], list]:
    """Where a summary places each subagent's turn: right after the spawn step that
    started it, when its parent turn is among ``parts``: (parent turn id, spawn step
    place) -> the children's parts."""
    here = {p.turn_id for p in parts}
    out: dict[tuple[str | None, int], list] = {}
    for p in parts:
        link = agents.get(p.turn_id or "") or {}
        parent, at = link.get("parent_turn_id"), link.get("spawn_step")
        if p.agent_id and parent in here and parent != p.turn_id and isinstance(at, int):
            out.setdefault((parent, at), []).append(p)
    return out


def build_session_trace(session: SessionFacts, parts: Sequence[TurnPart], *,
                        lifecycle: Sequence[Event] = (), revision: int = 1,
                        supersedes: str | None = None, end_reason: str = "ended",
                        turn_trace_ids: Mapping[str, str] | None = None,
                        rollout_total: Mapping[str, int] | None = None,
                        agents: Mapping[str, Mapping[str, Any]] | None = None) -> Trace:
    """The summary of a whole session: every turn's steps, in order, totals
    (subagents' turns included, each right after its spawn step; ``agents``: their
    links, by turn id)."""
    tid = trace_id(session.session_id, None, "session", revision)
    turn_trace_ids = turn_trace_ids or {}
    ordered = sorted((p for p in parts if p.events), key=lambda p: p.events[0].id)
    # Lifecycle steps (SessionStart/End) are placed among the turns by arrival order.
    red = session.redact
    life_steps = build_part(None, list(lifecycle), Limits(redact=red)).steps if lifecycle else []
    life = sorted(zip([e.id for e in lifecycle], life_steps), key=lambda x: x[0])
    nested = _nested(ordered, agents or {})
    inner = {id(c) for kids in nested.values() for c in kids}
    steps: list[Step] = []
    emitted: set[int] = set()

    def emit(part: TurnPart) -> None:
        emitted.add(id(part))
        for i, s in enumerate(part.steps, 1):
            steps.append(s)
            for child in nested.get((part.turn_id, i), ()):
                if id(child) not in emitted:
                    emit(child)

    li = 0
    for part in ordered:
        if id(part) in emitted or id(part) in inner:
            continue
        while li < len(life) and life[li][0] < part.events[0].id:
            steps.append(life[li][1])
            li += 1
        emit(part)
    for part in ordered:  # nested under a turn that never came out (a loop of links)
        if id(part) not in emitted:
            emit(part)
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
        if part.agent_id is None:  # the user's prompts and answers; a subagent's are its own
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
