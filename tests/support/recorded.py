"""The recorded Codex 0.169.0 session in tests/fixtures, and Codex-like sessions made up."""
from __future__ import annotations

import json
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SESSION_DIR = FIXTURES / "codex-0.169.0" / "two-turn-echo"

def fixture_payloads() -> list[tuple[str, bytes]]:
    """(event name, raw bytes) of the recorded Codex 0.169.0 session, in order."""
    out = []
    for p in sorted((SESSION_DIR / "payloads").glob("*.json")):
        out.append((p.stem.split("-", 1)[1], p.read_bytes().strip()))
    return out



def codex_like_session(sid: str, turns: int = 2, cwd: str = "/nonexistent") -> list[dict]:
    """A Codex-like session as hook payloads: start, ``turns`` full turns (prompt, one model
    request with usage, one tool call, Stop), end."""
    evs = [{"hook_event_name": "SessionStart", "source": "startup"}]
    for t in range(turns):
        tid = f"{sid}-t{t}"
        turn = [{"hook_event_name": "UserPromptSubmit", "prompt": "hi " + tid},
                {"hook_event_name": "PreModelRequest"},
                {"hook_event_name": "PostModelRequest", "status": "completed",
                 "token_usage": {"input_tokens": 10, "cached_input_tokens": 1,
                                 "output_tokens": 2, "reasoning_output_tokens": 0,
                                 "total_tokens": 12}},
                {"hook_event_name": "PreToolUse", "tool_name": "Bash",
                 "tool_input": {"command": "true"}, "tool_use_id": tid + "-c"},
                {"hook_event_name": "PostToolUse", "tool_name": "Bash",
                 "tool_input": {"command": "true"}, "tool_response": "",
                 "tool_use_id": tid + "-c"},
                {"hook_event_name": "Stop", "last_assistant_message": "ok"}]
        for e in turn:
            e["turn_id"] = tid
        evs.extend(turn)
    evs.append({"hook_event_name": "SessionEnd", "reason": "exit"})
    for e in evs:
        e["session_id"] = sid
        e["cwd"] = cwd
    return evs



def fixture_rollout() -> Path:
    return next((SESSION_DIR / "rollouts").glob("*.jsonl"))



def with_cwd(payload: bytes, cwd: str) -> bytes:
    obj = json.loads(payload)
    obj["cwd"] = cwd
    return json.dumps(obj).encode()
