"""The conversation a Codex rollout file records: prompts, model responses, tool outputs.

spool.rollout reads the *facts* of a rollout (usage, exit codes) incrementally
for the aggregator; this module reads its *conversation*, per turn, for an
export (spool.atif): the user's prompts (``item_completed`` UserMessage), and
each model response's assistant message, reasoning summary and function calls
(``response_item`` lines), plus every tool call's complete output
(``function_call_output`` / ``custom_tool_call_output``) by call id.

A response ends at the token usage line Codex writes after it
(``token_usage_record`` or an ``event_msg`` ``token_count``): the assistant
items after such a line belong to the next model request.  Items name their
turn (``internal_chat_message_metadata_passthrough.turn_id``); older files
do not, and the turn of the last ``turn_context``/``task_started`` is used.

``parse_lines`` is pure; ``read`` is the file edge.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterable

_MARKERS = (b'"response_item"', b'"item_completed"', b'"task_started"', b'"turn_context"',
            b'"token_count"', b'"token_usage_record"')
_CALLS = ("function_call", "custom_tool_call", "local_shell_call")
_OUTPUTS = ("function_call_output", "custom_tool_call_output")


@dataclass
class Call:
    call_id: str
    name: str
    arguments: Any  # the parsed JSON object when it is one, else the raw text


@dataclass
class Response:
    """One model response: what the model said, thought and called."""

    messages: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)

    @property
    def message(self) -> str:
        return "\n\n".join(m for m in self.messages if m)

    @property
    def reasoning_text(self) -> str:
        return "\n\n".join(r for r in self.reasoning if r)


@dataclass
class Turn:
    prompts: list[str] = field(default_factory=list)
    responses: list[Response] = field(default_factory=list)
    closed: bool = True  # the last response ended: the next assistant item starts one


@dataclass
class Transcript:
    turns: dict[str, Turn] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)  # call id -> complete output

    def turn(self, turn_id: str | None) -> Turn | None:
        return self.turns.get(turn_id or "")

    def merge(self, other: "Transcript") -> "Transcript":
        """This transcript plus another rollout's (a subagent's: its own turns and
        calls); what this one already has is kept."""
        for tid, turn in other.turns.items():
            self.turns.setdefault(tid, turn)
        for cid, out in other.outputs.items():
            self.outputs.setdefault(cid, out)
        return self


def _text(content: Any) -> str:
    """The text of a message's content list (input_text/output_text/text items)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = []
    for c in content:
        if isinstance(c, dict) and isinstance(c.get("text"), str):
            parts.append(c["text"])
    return "".join(parts)


def _arguments(raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def parse_lines(lines: Iterable[bytes]) -> Transcript:
    out = Transcript()
    current = ""

    def turn_of(payload: dict) -> Turn:
        meta = payload.get("internal_chat_message_metadata_passthrough")
        tid = meta.get("turn_id") if isinstance(meta, dict) else None
        if not isinstance(tid, str) or not tid:
            tid = payload.get("turn_id") if isinstance(payload.get("turn_id"), str) else current
        return out.turns.setdefault(tid, Turn())

    def response(t: Turn) -> Response:
        if t.closed or not t.responses:
            t.responses.append(Response())
            t.closed = False
        return t.responses[-1]

    for line in lines:
        if not any(m in line for m in _MARKERS):
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("payload"), dict):
            continue
        kind, p = obj.get("type"), obj["payload"]
        ptype = p.get("type")
        if kind == "turn_context" or (kind == "event_msg" and ptype == "task_started"):
            if isinstance(p.get("turn_id"), str) and p["turn_id"]:
                current = p["turn_id"]
                out.turns.setdefault(current, Turn())
        elif kind == "token_usage_record" or (kind == "event_msg" and ptype == "token_count"):
            if kind == "token_usage_record" or p.get("info"):
                turn_of(p).closed = True
        elif kind == "event_msg" and ptype == "item_completed":
            item = p.get("item")
            if isinstance(item, dict) and item.get("type") == "UserMessage":
                turn_of(p).prompts.append(_text(item.get("content")))
        elif kind == "response_item":
            if ptype == "message" and p.get("role") == "assistant":
                response(turn_of(p)).messages.append(_text(p.get("content")))
            elif ptype == "reasoning":
                summary = p.get("summary")
                texts = [_text([s]) for s in summary] if isinstance(summary, list) else []
                response(turn_of(p)).reasoning.append("\n".join(t for t in texts if t))
            elif ptype in _CALLS:
                cid = p.get("call_id") or p.get("id")
                if isinstance(cid, str):
                    raw = p.get("arguments") if "arguments" in p else p.get("input", p.get("action"))
                    response(turn_of(p)).calls.append(
                        Call(cid, str(p.get("name") or ptype), _arguments(raw)))
            elif ptype in _OUTPUTS:
                cid = p.get("call_id")
                if isinstance(cid, str):
                    o = p.get("output")
                    if isinstance(o, dict):  # {"content": ..., "success": ...}
                        o = o.get("content", o)
                    out.outputs[cid] = o if isinstance(o, str) else (
                        _text(o) or json.dumps(o, ensure_ascii=False))
    return out


def read(path: str | os.PathLike | None) -> Transcript | None:
    """The transcript of the rollout at ``path`` (None: no path, or unreadable)."""
    if not path:
        return None
    try:
        with open(path, "rb") as fh:
            return parse_lines(fh)
    except OSError:
        return None
