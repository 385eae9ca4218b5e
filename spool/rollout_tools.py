"""A rollout's tool-call items as the hooks show them (pure).

``tool_call(item, args)`` turns one ``item_completed`` tool item of a Codex
rollout into what PreToolUse/PostToolUse carry for it: the tool name the hooks
use, ``tool_input`` and ``tool_response`` (a string).  ``args`` are the model's
own arguments for the call (from the rollout's ``function_call`` line) when
known: the hooks show those.
"""
from __future__ import annotations

from typing import Any

import orjson

# item type -> the tool name the hooks report (None: from the item's server/tool)
TOOL_ITEMS = {"CommandExecution": "Bash", "FileChange": "apply_patch",
              "McpToolCall": None, "WebSearch": "web_search", "DynamicToolCall": None,
              "CollabAgentToolCall": None}


def command_text(cmd: Any) -> str | None:
    """["/bin/bash", "-lc", "echo hi"] -> "echo hi" (as the hook's tool_input.command)."""
    if isinstance(cmd, list):
        if len(cmd) == 3 and cmd[1] in ("-lc", "-c") and isinstance(cmd[2], str):
            return cmd[2]
        return " ".join(str(c) for c in cmd)
    return cmd if isinstance(cmd, str) else None


def _text(output: Any) -> str | None:
    if output is None or isinstance(output, str):
        return output
    return orjson.dumps(output).decode()


def _collab(item: dict) -> tuple[str, Any, Any]:
    """A multi-agent call (spawn_agent / wait), named as the hooks name it."""
    targets = item.get("receiver_thread_ids")
    targets = targets if isinstance(targets, list) else []
    if item.get("tool") == "spawn_agent":
        agents = item.get("receiver_agents")
        first = agents[0] if isinstance(agents, list) and agents else None
        return ("spawn_agent", {"message": item.get("prompt")},
                {"agent_id": (targets or [None])[0],
                 "nickname": first.get("agent_nickname") if isinstance(first, dict) else None})
    tool = "wait_agent" if item.get("tool") == "wait" else str(item.get("tool"))
    return ("multi_agent_v1" + tool, {"targets": targets},
            {"status": item.get("agents_states"), "timed_out": False})


def tool_call(item: dict, args: Any = None) -> tuple[str, Any, str | None]:
    """(tool_name, tool_input, tool_response) of a tool item."""
    itype = item.get("type")
    if itype == "CommandExecution":
        return ("Bash", {"command": command_text(item.get("command"))},
                _text(item.get("aggregated_output")))
    if itype == "CollabAgentToolCall":
        name, tool_input, output = _collab(item)
    else:
        name = TOOL_ITEMS.get(itype) or "__".join(
            str(item.get(k)) for k in ("server", "tool") if item.get(k)) or str(itype)
        tool_input = {k: v for k, v in item.items() if k not in ("type", "id", "result")}
        output = item.get("result") or item.get("status")
    if isinstance(args, dict):
        tool_input = args
    return name, tool_input, _text(output)
