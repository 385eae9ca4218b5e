"""Rollout lines -> the hook events Codex would have sent (pure; no I/O, no clock).

``spool import`` feeds a Codex rollout file, line by line, to ``Converter``;
what comes out is the list of hook payloads (SessionStart, UserPromptSubmit,
Pre/PostModelRequest with the request's ``token_usage``, Pre/PostToolUse with
``tool_use_id``/command/output, Stop with ``last_assistant_message``,
SessionEnd; a subagent's rollout as SubagentStart ... SubagentStop in the parent
session, as the hooks report it) with the rollout's own timestamps as arrival
times and the real session and turn ids.  Stored as ``raw_events`` (source
``import``), they go through the normal aggregate -> deliver pipeline, so an imported
session gets the same traces, with the same deterministic ids, as a hooked one.
Exit codes and command durations are not put in the events: the aggregator
reads them from the rollout through ``transcript_path``, as for hooks.

Turns come out whole (``Block``), when the line that ends them is read
(``task_complete`` / ``turn_aborted``), so the caller can skip a turn the hooks
already captured.  ``finish`` gives what the end of the file decides: a last
turn still open (only when the file has settled) and the SessionEnd.

Every event has a dedup key (``import:<session>:<turn>:<n>``), stable across
runs over the same file, stored in ``raw_events.dedup_key``: importing twice
inserts nothing new.

Lines are classified from their first bytes; only the ones that carry facts
are parsed (one ``orjson.loads`` each): ``response_item`` lines (but a
function_call's), ``world_state`` lines, reasoning items, repeated token counts
- most of a rollout's bytes - are skipped unparsed.

Not reconstructed: compactions (PreCompact/PostCompact), permission requests,
and where a resumed session's SessionEnd/SessionStart pairs fell (one
SessionStart and one SessionEnd per file), so a session summary's lifecycle
steps can differ from the hooked one; its turns do not.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from .rollout import epoch
from .rollout_tools import TOOL_ITEMS, tool_call

SOURCE = "import"
MARK = "spool_source"  # payload key that marks an imported event (value: SOURCE)

# Top-level line types of Codex 0.1xx rollouts: read (response_item only for a
# function_call's arguments), known and skipped, anything else counted as unknown.
_READ = {b"session_meta", b"turn_context", b"event_msg", b"token_usage_record",
         b"response_item"}
_SKIP = {b"world_state", b"compacted", b"thread_rolled_back",
         b"session_state", b"thread_name"}
# The line's type and, when the payload starts with one, the payload's type.
_HEAD = re.compile(rb'"type"\s*:\s*"([A-Za-z_]+)"'
                   rb'(?:\s*,\s*"payload"\s*:\s*\{\s*"type"\s*:\s*"([A-Za-z_]+)")?')
_EVENT_MSGS = {b"task_started", b"task_complete", b"turn_aborted", b"item_completed",
               b"token_count"}
# item_completed item types that are read (the prompt, tool calls).
_ITEM = re.compile(rb'"item"\s*:\s*\{\s*"type"\s*:\s*"([A-Za-z_]+)"')
_ITEMS_READ = {b"UserMessage", b"CommandExecution", b"CollabAgentToolCall", b"FileChange",
               b"McpToolCall", b"WebSearch", b"DynamicToolCall"}
_NOTHING: tuple = ()
_BOM = b"\xef\xbb\xbf"


def permission_mode(ctx: dict) -> str:
    """The hook's permission_mode, from a turn_context (approval policy + sandbox)."""
    sandbox = ctx.get("sandbox_policy")
    sandbox = sandbox.get("type") if isinstance(sandbox, dict) else sandbox
    if ctx.get("approval_policy") == "never" and sandbox == "danger-full-access":
        return "bypassPermissions"
    return "default"


@dataclass(slots=True)
class Event:
    key: str
    at: float
    cwd: str | None
    payload: dict


@dataclass
class Block:
    """What is imported together: one turn's events, or a lifecycle event (turn_id None)."""

    session_id: str
    turn_id: str | None
    events: list[Event]
    usage: dict[str, int] = field(default_factory=dict)  # Codex token keys, summed


@dataclass
class _Turn:
    turn_id: str
    started_at: float
    cwd: str | None
    model: str | None = None
    pmode: str | None = None
    items: list = field(default_factory=list)  # ("prompt"|"model"|"tool"|"stop", ...)
    records: int = 0  # token_usage_record lines seen (preferred over token_count)
    args: dict = field(default_factory=dict)  # call id -> the model's arguments
    last_at: float = 0.0


class NotARollout(ValueError):
    pass


class Converter:
    """Feed complete lines in file order; collect the blocks they complete."""

    def __init__(self, path: str):
        self.path = path
        self.meta: dict | None = None
        self.session_id: str | None = None
        self.agent_id: str | None = None  # set for a subagent's rollout
        self.cwd: str | None = None
        self.turn: _Turn | None = None
        self.started = False
        self.last_at: float | None = None
        self.last_total: Any = None
        self.lines = 0
        self.bad_lines = 0
        self.unknown: Counter = Counter()
        self._pending: list[Block] = []  # blocks a line closed in passing

    # -- the common fields of a payload --
    def _payload(self, name: str, turn: _Turn | None, **fields) -> dict:
        p: dict[str, Any] = {"session_id": self.session_id}
        if turn is not None:
            p["turn_id"] = turn.turn_id
        p["transcript_path"] = self.path
        p["cwd"] = (turn.cwd if turn else None) or self.cwd
        p["hook_event_name"] = name
        if turn is not None:
            if turn.model:
                p["model"] = turn.model
            if turn.pmode:
                p["permission_mode"] = turn.pmode
        if self.agent_id:
            p["agent_id"] = self.agent_id
        p.update(fields)
        p[MARK] = SOURCE
        return p

    def feed(self, line: bytes) -> list[Block]:
        self.lines += 1
        m = _HEAD.search(line, 0, 300)
        kind, ptype = m.group(1, 2) if m else (None, None)
        if self.meta is None:
            if kind != b"session_meta":
                if not line.strip():
                    return _NOTHING  # a blank line ("\r\n", spaces): nothing to read
                raise NotARollout("the first line is not a Codex session_meta line")
            if line[:3] == _BOM:  # written by an editor, not by Codex: read it all the same
                line = line[3:]
        elif kind == b"response_item":
            if ptype != b"function_call" or self.turn is None:
                return _NOTHING  # only a call's arguments are needed (what the hooks show)
        elif kind == b"event_msg":
            if ptype is not None:
                if ptype not in _EVENT_MSGS:
                    return _NOTHING
                if ptype == b"token_count" and self.turn is not None and self.turn.records:
                    return _NOTHING  # the turn's token_usage_record lines count
                if ptype == b"item_completed":
                    im = _ITEM.search(line, m.end(), m.end() + 400)
                    if im and im.group(1) not in _ITEMS_READ:
                        return _NOTHING
        elif kind in _SKIP:
            return _NOTHING
        elif kind not in _READ:
            if kind is not None or line.strip():  # a blank line is nothing unknown
                self.unknown[(kind or b"?").decode("ascii", "replace")] += 1
            return _NOTHING
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            if self.meta is None:
                raise NotARollout("the first line is not JSON") from None
            self.bad_lines += 1
            return []
        if not isinstance(obj, dict) or not isinstance(obj.get("payload"), dict):
            if self.meta is None:
                raise NotARollout("the first line is not a Codex session_meta line")
            self.bad_lines += 1
            return []
        try:
            return self._line(kind, obj)
        except (TypeError, AttributeError, KeyError, IndexError):
            self.bad_lines += 1  # a field of a type Codex never wrote there: not a crash
            return []

    def _line(self, kind: bytes, obj: dict) -> list[Block]:
        at = epoch(obj.get("timestamp"))
        if at is None:
            at = self.last_at if self.last_at is not None else 0.0
        self.last_at = at
        p = obj["payload"]
        if kind == b"response_item":
            cid, args = p.get("call_id"), p.get("arguments")
            if isinstance(cid, str) and isinstance(args, str):
                try:
                    self.turn.args[cid] = orjson.loads(args)
                except orjson.JSONDecodeError:
                    pass
            return _NOTHING
        if kind == b"session_meta":
            out = self._meta(p, at)
        elif kind == b"turn_context":
            self._context(p, at)
            out = []
        elif kind == b"token_usage_record":
            self._record(p, at)
            out = []
        else:
            out = self._event_msg(p, at)
        if self._pending:
            out, self._pending = self._pending + out, []
        return out

    # -- line kinds --
    def _meta(self, p: dict, at: float) -> list[Block]:
        if self.meta is not None:
            return []  # a resumed/forked file may repeat it: keep the first
        sid = p.get("session_id") or p.get("id")
        if not isinstance(sid, str) or not sid:
            raise NotARollout("its session_meta line has no session id")
        self.meta = p
        self.session_id = sid
        if isinstance(p.get("source"), dict) and "subagent" in p["source"]:
            self.agent_id = p.get("id") if isinstance(p.get("id"), str) else None
        self.cwd = p.get("cwd") if isinstance(p.get("cwd"), str) else None
        return []

    def _open(self, turn_id: Any, at: float) -> list[Block]:
        out = []
        if self.turn is not None and self.turn.turn_id != turn_id:
            out = self._close(self.turn)
        if self.turn is None and isinstance(turn_id, str) and turn_id:
            self.turn = _Turn(turn_id, at, self.cwd, last_at=at)
        return out

    def _context(self, p: dict, at: float) -> None:
        tid = p.get("turn_id")
        if isinstance(tid, str) and tid and (self.turn is None or self.turn.turn_id != tid):
            self._pending += self._open(tid, at)  # rare: a context without task_started
        t = self.turn
        if t is None:
            return
        if isinstance(p.get("model"), str):
            t.model = p["model"]
        if isinstance(p.get("cwd"), str):
            t.cwd = p["cwd"]
        t.pmode = permission_mode(p)

    def _record(self, p: dict, at: float) -> None:
        t = self.turn
        usage = p.get("usage")
        if t is None or not isinstance(usage, dict):
            return
        if t.records == 0:  # token_count lines so far were a fallback: drop them
            t.items = [i for i in t.items if i[0] != "model"]
        t.records += 1
        t.items.append(("model", t.last_at, at, usage))
        t.last_at = at

    def _token_count(self, p: dict, at: float) -> None:
        t = self.turn
        info = p.get("info")
        if t is None or t.records or not isinstance(info, dict):
            return
        total, last = info.get("total_token_usage"), info.get("last_token_usage")
        if total is not None and total == self.last_total:
            return  # a repeat (rate-limit refresh): nothing new was used
        self.last_total = total
        if isinstance(last, dict) and any(last.get(k) for k in ("input_tokens", "output_tokens",
                                                                 "total_tokens")):
            t.items.append(("model", t.last_at, at, last))
            t.last_at = at

    def _event_msg(self, p: dict, at: float) -> list[Block]:
        ptype = p.get("type")
        out: list[Block] = []
        if ptype == "task_started":
            out += self._open(p.get("turn_id"), at)
        elif ptype == "token_count":
            self._token_count(p, at)
        elif ptype == "item_completed":
            self._item(p, at)
        elif ptype in ("task_complete", "turn_aborted"):
            t = self.turn
            if t is not None and p.get("turn_id") in (None, t.turn_id):
                if ptype == "task_complete":
                    t.items.append(("stop", at, p.get("last_agent_message")))
                else:
                    t.items.append(("interrupt", at))
                out += self._close(t)
        return out

    def _item(self, p: dict, at: float) -> None:
        t = self.turn
        item = p.get("item")
        if t is None or not isinstance(item, dict) or not isinstance(item.get("type"), str):
            return
        itype = item["type"]
        if itype == "UserMessage":
            content = item.get("content")
            if not isinstance(content, list):
                return
            texts = [c.get("text") for c in content
                     if isinstance(c, dict) and isinstance(c.get("text"), str)]
            t.items.append(("prompt", at, "\n".join(texts)))
            t.last_at = at
        elif itype in TOOL_ITEMS and isinstance(item.get("id"), str):
            start, end = p.get("started_at_ms"), p.get("completed_at_ms")
            start = start / 1000.0 if isinstance(start, (int, float)) else t.last_at
            end = end / 1000.0 if isinstance(end, (int, float)) else at
            name, tool_input, output = tool_call(item, t.args.get(item["id"]))
            t.items.append(("tool", start, end, item["id"], name, tool_input, output))
            t.last_at = end

    # -- making the events --
    def _start_block(self, turn: _Turn) -> list[Block]:
        if self.started or self.agent_id:
            return []
        self.started = True
        at = epoch(self.meta.get("timestamp")) or turn.started_at
        p = self._payload("SessionStart", None, model=turn.model, permission_mode=turn.pmode,
                          source="startup")
        return [Block(self.session_id, None,
                      [Event(f"import:{self.session_id}::start", at, p["cwd"], p)])]

    def _close(self, t: _Turn) -> list[Block]:
        self.turn = None
        out = self._start_block(t)
        evs: list[Event] = []
        usage: dict[str, int] = {}

        base = self._payload("", t)  # the fields every event of the turn carries
        cwd = base["cwd"]
        prefix = f"import:{self.session_id}:{t.turn_id}:"

        def add(name: str, at: float, **fields) -> None:
            evs.append(Event(prefix + str(len(evs)), at, cwd,
                             {**base, "hook_event_name": name, **fields}))

        if self.agent_id:  # a subagent's turn: the hooks report it in the parent session
            add("SubagentStart", t.started_at, agent_type="default")
        for item in t.items:
            k = item[0]
            if k == "prompt":
                add("UserPromptSubmit", item[1], prompt=item[2])
            elif k == "model":
                _, pre, post, tokens = item
                add("PreModelRequest", pre)
                add("PostModelRequest", post, status="completed", error=None,
                    token_usage=tokens)
                for key, v in tokens.items():
                    if isinstance(v, int) and not isinstance(v, bool):
                        usage[key] = usage.get(key, 0) + v
            elif k == "tool":
                _, start, end, tid, name, tool_input, output = item
                add("PreToolUse", start, tool_name=name, tool_input=tool_input, tool_use_id=tid)
                add("PostToolUse", end, tool_name=name, tool_input=tool_input,
                    tool_response=output, tool_use_id=tid)
            elif k == "stop" and self.agent_id:
                add("SubagentStop", item[1], stop_hook_active=False, agent_type="default",
                    last_assistant_message=item[2])
            elif k == "stop":
                add("Stop", item[1], stop_hook_active=False, last_assistant_message=item[2])
            elif k == "interrupt":
                add("Interrupt", item[1])
        if evs:
            out.append(Block(self.session_id, t.turn_id, evs, usage))
        return out

    def finish(self, *, settled: bool) -> list[Block]:
        """At the end of what could be read.  ``settled``: the file ended with a
        complete line and has not been written to for a while (it will not grow):
        an open last turn is imported as unfinished, and the session is ended."""
        if self.meta is None:
            return []
        out, self._pending = self._pending, []
        if self.turn is not None:
            if not settled:
                return out  # still being written: left for a later import
            out += self._close(self.turn)
        if settled and self.started and not self.agent_id:
            at = self.last_at or 0.0
            p = self._payload("SessionEnd", None, reason="other")
            out.append(Block(self.session_id, None, [
                Event(f"import:{self.session_id}::end:{self.lines}", at, p["cwd"], p)]))
        return out
