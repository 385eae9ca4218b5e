"""Subagent links: which turn spawned which child, read from a session's events.

A Codex subagent's hook events carry the parent's ``session_id`` plus
``agent_id``/``agent_type`` and the child's own ``turn_id``; spool traces the
child's turn as a trace of its own (its steps, tokens and cost) and links it:
the child trace's ``agent`` names the parent turn, its (deterministic) trace id
and the ``spawn_agent`` step that started it; the parent turn's ``subagents``
name each child's turn and trace.  The link is the spawn_agent PostToolUse
(its ``tool_response`` holds the child's ``agent_id``); SubagentStart gives
the child's turn id.  When the other side is not among the turns being traced
(a child that outlived its parent's turn, a parent still open), its events are
read here, for the link only.
"""
from __future__ import annotations

import sqlite3
from typing import Iterable

from ..trace import Event, Limits, trace_id
from ..turn_part import TurnPart, build_part
from .connection import tx

MAX_DEPTH = 16  # a guard against a loop of links, far above what Codex nests


def _turn_events(con: sqlite3.Connection, sid: str, last_id: int, turn_id: str) -> list[Event]:
    return [Event.from_row(*r) for r in con.execute(
        "SELECT id, received_at, event, turn_id, payload, late FROM raw_events"
        " WHERE session_id = ? AND turn_id = ? AND id <= ? AND status = 'ok' ORDER BY id",
        (sid, turn_id, last_id))]


def _spawning_turns(con: sqlite3.Connection, sid: str, last_id: int, agent_id: str) -> list[str]:
    """The turns with a PostToolUse naming ``agent_id`` (the spawn_agent call's output)."""
    return [r[0] for r in con.execute(
        "SELECT DISTINCT turn_id FROM raw_events WHERE session_id = ? AND id <= ?"
        " AND status = 'ok' AND event = 'PostToolUse' AND turn_id IS NOT NULL"
        " AND instr(CAST(payload AS TEXT), ?) > 0", (sid, last_id, agent_id))]


def _child_turns(con: sqlite3.Connection, sid: str, last_id: int) -> dict[str, str]:
    """agent_id -> the child's turn id, from the session's SubagentStart events."""
    out: dict[str, str] = {}
    for ev in (Event.from_row(*r) for r in con.execute(
            "SELECT id, received_at, event, turn_id, payload, late FROM raw_events"
            " WHERE session_id = ? AND id <= ? AND status = 'ok' AND event = 'SubagentStart'"
            " ORDER BY id", (sid, last_id))):
        aid = ev.payload.get("agent_id")
        if isinstance(aid, str) and ev.turn_id:
            out.setdefault(aid, ev.turn_id)
    return out


def resolve(con: sqlite3.Connection, sid: str, last_id: int, parts: dict[str, TurnPart],
            limits: Limits) -> tuple[dict[str, dict], dict[str, list[dict]]]:
    """(child turn id -> its ``agent`` link, parent turn id -> its ``subagents`` links)
    for the turns in ``parts`` (reads what else it needs in a read transaction)."""
    known: dict[str, TurnPart] = dict(parts)
    if not any(p.agent_id or p.spawns for p in known.values()):
        return {}, {}
    with tx(con, immediate=False):
        spawn_of = _spawns(known.items())
        # Parents not among the parts (and their parents, for the depth).
        for _ in range(MAX_DEPTH):
            missing = {p.agent_id for p in known.values() if p.agent_id} - spawn_of.keys()
            found = False
            for aid in sorted(missing):
                for ptid in _spawning_turns(con, sid, last_id, aid):
                    if ptid not in known:
                        known[ptid] = build_part(ptid, _turn_events(con, sid, last_id, ptid),
                                                 limits)
                        found = True
            if not found:
                break
            spawn_of = _spawns(known.items())
        child_turn = {p.agent_id: tid for tid, p in known.items() if p.agent_id}
        if any(sp["agent_id"] not in child_turn for p in parts.values() for sp in p.spawns):
            for aid, tid in _child_turns(con, sid, last_id).items():
                child_turn.setdefault(aid, tid)

    def depth(agent_id: str) -> int:
        d, aid = 0, agent_id
        while aid is not None and d < MAX_DEPTH:
            d += 1
            site = spawn_of.get(aid)
            aid = known[site[0]].agent_id if site else None
        return d

    agents: dict[str, dict] = {}
    children: dict[str, list[dict]] = {}
    for tid, p in parts.items():
        if p.agent_id:
            link = {"agent_id": p.agent_id, "agent_type": p.agent_type, "depth": depth(p.agent_id)}
            site = spawn_of.get(p.agent_id)
            if site is not None:
                ptid, sp = site
                link.update({
                    "nickname": sp["nickname"], "parent_session_id": sid,
                    "parent_turn_id": ptid, "parent_trace_id": trace_id(sid, ptid, "turn"),
                    "parent_agent_id": known[ptid].agent_id,
                    "spawn_tool_use_id": sp["tool_use_id"], "spawn_step": sp["step"]})
            agents[tid] = link
        if p.spawns:
            children[tid] = [{
                "agent_id": sp["agent_id"], "agent_type": (
                    known[child_turn[sp["agent_id"]]].agent_type
                    if child_turn.get(sp["agent_id"]) in known else None),
                "nickname": sp["nickname"], "spawn_tool_use_id": sp["tool_use_id"],
                "spawn_step": sp["step"], "turn_id": child_turn.get(sp["agent_id"]),
                "trace_id": (trace_id(sid, child_turn[sp["agent_id"]], "turn")
                             if sp["agent_id"] in child_turn else None)}
                for sp in p.spawns]
    return agents, children


def _spawns(items: Iterable[tuple[str, TurnPart]]) -> dict[str, tuple[str, dict]]:
    """agent_id -> (the spawning turn id, its spawn record)."""
    return {sp["agent_id"]: (tid, sp) for tid, p in items for sp in p.spawns}
