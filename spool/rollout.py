"""Streaming, incremental reader of Codex rollout files (the session's ground truth).

``RolloutState`` remembers the byte offset it has read up to and the facts
extracted so far; ``read_incremental(path, state)`` reads only the bytes after
that offset, complete lines only (a line Codex is still writing is left for the
next read), and returns the updated state.  A file is never re-read as a whole
unless it shrank (replaced): then the state starts again from zero.

Facts kept (everything else in the file is skipped without parsing JSON):

* ``session_meta``: cli_version, source, originator, git branch/commit;
* ``turn_context``: the model of each turn; ``task_started`` / ``turn_context``
  also tell which turn the following ``token_count`` lines belong to (those
  lines carry no turn id);
* ``event_msg`` ``token_count``: ``last_token_usage`` summed per turn (with the
  number of requests), ``total_token_usage`` kept as the running session total.
  A line whose total did not move is a repeat (rate-limit refresh, all-zero line
  after compaction) and is not counted again;
* ``event_msg`` ``item_completed`` with a ``CommandExecution`` item: exit code,
  status, duration, command and times, by item id (= the hook's ``tool_use_id``);
* ``token_usage_record``: each model request's usage, in order, per turn (with
  the line's time): what spool.reconcile fills in for a
  Pre/PostModelRequest hook that Codex killed (async hooks, ``codex exec``);
* a forked subagent's ``subagent_history_start_ordinal``: ``token_count`` lines
  with a lower ``ordinal`` are the parent's copied history and are not counted
  (usage counted before the marker, from lines below it, is dropped).
"""
from __future__ import annotations

import gzip
import json
import os
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from .trace import CommandFacts, RolloutFacts, add_usage, empty_usage, usage_from_tokens

_MARKERS = (b'"session_meta"', b'"turn_context"', b'"task_started"', b'"token_count"',
            b'"CommandExecution"', b'"subagent_history_start_ordinal"',
            b'"token_usage_record"')
# Never hold more than this in memory for one line (a session_meta line can be
# tens of KB; an aggregated_output a few MB).  Longer lines are skipped.
MAX_LINE = 64 * 1024 * 1024


@dataclass
class RolloutState:
    offset: int = 0
    turn: str | None = None  # the turn the next token_count lines belong to
    meta: dict[str, Any] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    commands: dict[str, dict] = field(default_factory=dict)
    turns: dict[str, dict] = field(default_factory=dict)  # turn id -> usage (+requests)
    requests: dict[str, list] = field(default_factory=dict)  # turn id -> [usage + "at"]
    total: dict | None = None
    lines: int = 0
    # A forked subagent's rollout starts with a copy of the parent's history:
    # lines whose ``ordinal`` is below this were copied, not used again.
    history_below: int = 0

    # -- persistence (kv table, JSON) --
    def to_json(self) -> str:
        return json.dumps({"v": 1, "offset": self.offset, "turn": self.turn, "meta": self.meta,
                           "models": self.models, "commands": self.commands,
                           "turns": self.turns, "requests": self.requests,
                           "total": self.total, "lines": self.lines,
                           "history_below": self.history_below},
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes | None) -> "RolloutState":
        if not text:
            return cls()
        try:
            d = json.loads(text)
            return cls(offset=int(d.get("offset", 0)), turn=d.get("turn"),
                       meta=dict(d.get("meta") or {}), models=dict(d.get("models") or {}),
                       commands=dict(d.get("commands") or {}), turns=dict(d.get("turns") or {}),
                       requests=dict(d.get("requests") or {}),
                       total=d.get("total"), lines=int(d.get("lines", 0)),
                       history_below=int(d.get("history_below", 0) or 0))
        except (ValueError, TypeError, AttributeError):
            return cls()

    def copy(self) -> "RolloutState":
        return RolloutState.from_json(self.to_json())

    # -- what the trace builders use --
    def facts(self) -> RolloutFacts:
        cmds = {k: CommandFacts(v.get("exit_code"), v.get("status"), v.get("duration_ms"),
                                v.get("command"), v.get("turn_id"), v.get("started_at"),
                                v.get("ended_at"), v.get("source"))
                for k, v in self.commands.items()}
        return RolloutFacts(commands=cmds, turn_usage=self.turns, turn_models=self.models,
                            turn_requests=self.requests,
                            total_usage=usage_from_tokens(self.total) if self.total else None)

    @property
    def cli_version(self) -> str | None:
        return self.meta.get("cli_version")

    @property
    def git_branch(self) -> str | None:
        return self.meta.get("git_branch")

    @property
    def git_commit(self) -> str | None:
        return self.meta.get("git_commit")

    # -- one line --
    def feed(self, line: bytes) -> None:
        self.lines += 1
        if self.lines == 1 and line[:3] == b"\xef\xbb\xbf":
            line = line[3:]  # a byte order mark (an editor's, not Codex's)
        if not any(m in line for m in _MARKERS):
            return
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            return
        if not isinstance(obj, dict):
            return
        kind = obj.get("type")
        payload = obj.get("payload")
        if not isinstance(payload, dict):
            return
        start = payload.get("subagent_history_start_ordinal")
        ordinal = obj.get("ordinal")
        if isinstance(start, int) and not isinstance(start, bool) and start > self.history_below:
            self.history_below = start
            if not isinstance(ordinal, int) or ordinal <= start:
                # Told after the copy: what was counted so far was the parent's.
                self.turns, self.total = {}, None
        if (self.history_below and isinstance(ordinal, int) and ordinal < self.history_below
                and kind == "event_msg" and payload.get("type") == "token_count"):
            return  # the parent's usage, copied into a forked child's rollout
        if kind == "session_meta":
            self._meta(payload)
        elif kind == "token_usage_record":
            self._request(payload, obj.get("timestamp"))
        elif kind == "turn_context":
            turn = payload.get("turn_id")
            if isinstance(turn, str) and turn:
                self.turn = turn
                if isinstance(payload.get("model"), str):
                    self.models[turn] = payload["model"]
        elif kind == "event_msg":
            ptype = payload.get("type")
            if ptype == "task_started":
                turn = payload.get("turn_id")
                if isinstance(turn, str) and turn:
                    self.turn = turn
            elif ptype == "token_count":
                self._token_count(payload)
            elif ptype == "item_completed":
                self._item(payload)

    def _meta(self, p: dict) -> None:
        if self.meta:  # a resumed/forked file may repeat it: keep the first
            return
        src = p.get("source")
        if isinstance(src, dict):
            src = "subagent" if "subagent" in src else next(iter(src), None)
        git = p.get("git") if isinstance(p.get("git"), dict) else {}
        self.meta = {k: v for k, v in {
            "cli_version": p.get("cli_version"), "source": src,
            "originator": p.get("originator"), "model_provider": p.get("model_provider"),
            "git_branch": git.get("branch"), "git_commit": git.get("commit_hash"),
        }.items() if isinstance(v, str)}

    def _token_count(self, p: dict) -> None:
        info = p.get("info")
        if not isinstance(info, dict):
            return
        total = info.get("total_token_usage")
        last = info.get("last_token_usage")
        if isinstance(total, dict):
            if total == self.total:
                return  # a repeat: nothing new was used
            self.total = total
        if not isinstance(last, dict):
            return
        u = usage_from_tokens(last)
        if not any(u[k] for k in ("input", "output", "total")):
            return  # the all-zero line after a compaction
        key = self.turn or ""
        acc = self.turns.get(key)
        if acc is None:
            acc = self.turns[key] = empty_usage()
        add_usage(acc, u)

    def _request(self, p: dict, stamp: Any) -> None:
        usage, turn = p.get("usage"), p.get("turn_id")
        if not isinstance(usage, dict) or not isinstance(turn, str) or not turn:
            return
        u: dict = usage_from_tokens(usage)
        u["at"] = epoch(stamp)
        self.requests.setdefault(turn, []).append(u)

    def _item(self, p: dict) -> None:
        item = p.get("item")
        if not isinstance(item, dict) or item.get("type") != "CommandExecution":
            return
        cid = item.get("id")
        if not isinstance(cid, str):
            return
        dur = item.get("duration")
        duration_ms = None
        if isinstance(dur, dict):
            try:
                duration_ms = round(float(dur.get("secs", 0)) * 1000.0
                                    + float(dur.get("nanos", 0)) / 1e6, 3)
            except (TypeError, ValueError):
                duration_ms = None
        elif isinstance(dur, (int, float)):
            duration_ms = float(dur)
        cmd = item.get("command")
        if isinstance(cmd, list):
            # ["/bin/bash", "-lc", "echo hello"] -> "echo hello"
            if len(cmd) == 3 and cmd[1] in ("-lc", "-c") and isinstance(cmd[2], str):
                cmd = cmd[2]
            else:
                cmd = " ".join(str(c) for c in cmd)
        code = item.get("exit_code")
        self.commands[cid] = {
            "exit_code": code if isinstance(code, int) and not isinstance(code, bool) else None,
            "status": item.get("status") if isinstance(item.get("status"), str) else None,
            "duration_ms": duration_ms,
            "command": cmd if isinstance(cmd, str) else None,
            "turn_id": p.get("turn_id") if isinstance(p.get("turn_id"), str) else None,
            "started_at": _ms(p.get("started_at_ms")),
            "ended_at": _ms(p.get("completed_at_ms")),
            "source": item.get("source") if isinstance(item.get("source"), str) else None,
        }


def _ms(v: Any) -> float | None:
    return v / 1000.0 if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def epoch(stamp: Any) -> float | None:
    """A rollout line's ``timestamp`` ("2026-11-21T22:27:15.637Z") as epoch seconds."""
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def read_incremental(path: str | os.PathLike | None, state: RolloutState | None = None,
                     *, max_bytes: int | None = None) -> RolloutState:
    """``state`` advanced over the complete lines written after ``state.offset``.

    Returns a new state (the argument is not modified).  A missing or unreadable
    file leaves the state as it was.  ``max_bytes`` bounds one read.
    """
    st = state.copy() if state is not None else RolloutState()
    if not path:
        return st
    # A compressed rollout (``spool import`` reads them): offsets are in its
    # uncompressed lines, and its size is not known without reading it.
    packed = os.fspath(path).endswith(".gz")
    try:
        fh = gzip.open(path, "rb") if packed else open(path, "rb")
    except OSError:
        return st
    with fh:
        try:
            if packed:
                size = None
                fh.seek(st.offset)  # decompresses up to it (the file does not grow)
            else:
                size = os.fstat(fh.fileno()).st_size
                if size < st.offset:  # truncated or replaced: start again
                    st = RolloutState()
                if size == st.offset:
                    return st
                fh.seek(st.offset)
        except (OSError, EOFError, zlib.error):
            return st
        if max_bytes is not None:
            budget = max_bytes
        else:
            budget = size - st.offset if size is not None else float("inf")
        read = 0
        try:
            while read < budget:
                line = fh.readline(MAX_LINE)
                if not line:
                    break
                if not line.endswith(b"\n"):
                    if len(line) >= MAX_LINE:  # absurdly long: skip to its end
                        while line and not line.endswith(b"\n"):
                            read += len(line)
                            st.offset += len(line)
                            line = fh.readline(MAX_LINE)
                        if line:
                            read += len(line)
                            st.offset += len(line)
                        continue
                    break  # a line still being written: next time
                read += len(line)
                st.offset += len(line)
                st.feed(line)
        except (OSError, EOFError, zlib.error):
            pass  # a damaged compressed file: what was read stands
    return st
