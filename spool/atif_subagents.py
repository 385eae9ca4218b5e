"""Which of a session's turns are subagents', and how an embedded ATIF subagent names
itself (pure; spool.atif builds the trajectories).

A subagent's turn is a trace of its own whose ``agent`` names its parent
(spool.aggregate.links); a session summary marks such turns in its ``turns``.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence


def child_turns(bodies: Sequence[Mapping]) -> dict[str, Mapping]:
    """Subagent turn id -> its link (``agent``), from child turn traces and summaries."""
    out: dict[str, Mapping] = {}
    for b in bodies:
        if b.get("kind") == "turn" and isinstance(b.get("agent"), Mapping) and b.get("turn_id"):
            out[b["turn_id"]] = b["agent"]
        for t in b.get("turns") or []:
            if t.get("agent_id") and t.get("turn_id"):
                out.setdefault(t["turn_id"], {"agent_id": t["agent_id"],
                                              "agent_type": t.get("agent_type")})
    return out


def codex_version(bodies: Sequence[Mapping]) -> str:
    return next((str(b["environment"]["codex_version"]) for b in bodies
                 if (b.get("environment") or {}).get("codex_version")), "unknown")


def _drop_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def describe(link: Mapping[str, Any], agent_id: str, version: str,
             turn_ids: list) -> tuple[dict, dict]:
    """(the trajectory's ``agent``, its ``extra``) for one subagent."""
    agent = {"name": str(link.get("agent_type") or "agent"), "version": version,
             "extra": _drop_none({"agent_id": agent_id, "nickname": link.get("nickname")})}
    extra = {"spool": _drop_none({
        "turn_ids": turn_ids, "depth": link.get("depth"),
        "parent_agent_id": link.get("parent_agent_id"),
        "parent_turn_id": link.get("parent_turn_id"),
        "parent_trace_id": link.get("parent_trace_id"),
        "spawn_tool_use_id": link.get("spawn_tool_use_id")})}
    return agent, extra
