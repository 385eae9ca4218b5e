"""Rows for the read-query tests (spool/queries.py and the CLI that reads with it): traces
with outbox rows in any state, delivery attempts, quarantine, errors, sessions with turns."""
from __future__ import annotations

import json

from sqlalchemy import text

from spool import db

T0 = 1_790_000_000.0



def body_for(tid: str, name: str = "a turn", **extra) -> dict:
    """A body shaped like spool.trace.Trace.to_dict() (the neutral model)."""
    body = {
        "schema": "spool.trace/1", "trace_id": tid, "kind": "turn", "name": name,
        "started_at": T0, "ended_at": T0 + 2.5, "duration_ms": 2500.0,
        "usage": {"input": 1200, "cached": 800, "output": 34, "reasoning": 10, "total": 1234},
        "steps": [
            {"number": 1, "action": "user_prompt", "description": "say hello",
             "started_at": T0, "ended_at": T0, "duration_ms": 0.0},
            {"number": 2, "action": "model_request", "description": "gpt-test",
             "started_at": T0 + 0.1, "ended_at": T0 + 1.6, "duration_ms": 1500.0,
             "usage": {"input": 1200, "output": 34}},
            {"number": 3, "action": "tool_use", "description": "shell: echo hi",
             "started_at": T0 + 1.7, "ended_at": T0 + 1.95, "duration_ms": 250.0,
             "output_preview": "hi", "exit_code": 2,
             "error": {"type": "ToolError", "message": "exit status 2", "recoverable": True}},
        ],
        "errors": [{"type": "ToolError", "message": "exit status 2", "recoverable": True,
                    "step_number": 3}],
    }
    body.update(extra)
    return body


def add_trace(engine, tid: str, *, created_at: float, outbox=(("infinium", "sent"),),
              project: str | None = "/home/dev/proj", session_id: str | None = "sess-1",
              kind: str = "turn", name: str | None = None, body: dict | None = None,
              attempts: int = 1, held_reason: str | None = None,
              next_attempt_at: float | None = None, last_error: str | None = None,
              last_status: int | None = None) -> list[int]:
    """One trace row plus an outbox row per (sink, state); returns the outbox ids."""
    ids = []
    with db.write(engine) as conn:
        conn.execute(text(
            "INSERT INTO traces (trace_id, kind, session_id, project, name, created_at, body)"
            " VALUES (:t, :k, :s, :p, :n, :c, :b)"),
            {"t": tid, "k": kind, "s": session_id, "p": project, "n": name or f"trace {tid}",
             "c": created_at, "b": json.dumps(body or body_for(tid, name or f"trace {tid}"))})
        for sink, state in outbox:
            r = conn.execute(text(
                "INSERT INTO outbox (trace_id, sink, state, attempts, created_at, next_attempt_at,"
                " sent_at, held_reason, last_error, last_status)"
                " VALUES (:t, :sink, :st, :a, :c, :n, :sent, :h, :e, :ls) RETURNING id"),
                {"t": tid, "sink": sink, "st": state, "a": attempts, "c": created_at,
                 "n": next_attempt_at if next_attempt_at is not None else created_at + 60,
                 "sent": created_at + 1 if state == "sent" else None,
                 "h": held_reason if state == "held" else None, "e": last_error,
                 "ls": last_status})
            ids.append(r.scalar_one())
    return ids


def add_attempt(engine, outbox_id: int, tid: str, *, at: float, outcome: str,
                status: int | None = None, error_class: str | None = None,
                message: str | None = None, sink: str = "infinium") -> None:
    with db.write(engine) as conn:
        conn.execute(text(
            "INSERT INTO delivery_attempts (outbox_id, trace_id, sink, attempt, started_at,"
            " duration_ms, http_status, outcome, error_class, message)"
            " VALUES (:o, :t, :s, 1, :at, 12.5, :st, :out, :ec, :m)"),
            {"o": outbox_id, "t": tid, "s": sink, "at": at, "st": status, "out": outcome,
             "ec": error_class, "m": message})


def add_quarantine(engine, *, at: float, reason: str) -> None:
    with db.write(engine) as conn:
        conn.execute(text(
            "INSERT INTO quarantine (raw_event_id, received_at, quarantined_at, source, payload,"
            " size, reason) VALUES (7, :at, :at, 'hook', x'6e6f', 2, :r)"), {"at": at, "r": reason})


def add_error(engine, *, at: float, source: str, message: str) -> None:
    with db.write(engine) as conn:
        conn.execute(text("INSERT INTO errors (at, source, message) VALUES (:a, :s, :m)"),
                     {"a": at, "s": source, "m": message})


def add_session(engine, sid: str, *, last: float, project: str = "/home/dev/proj",
                turns: int = 0, events: int = 0) -> None:
    with db.write(engine) as conn:
        conn.execute(text(
            "INSERT INTO sessions (session_id, project, cwd, first_event_at, last_event_at,"
            " state, event_count) VALUES (:s, :p, :p, :f, :l, 'open', :e)"),
            {"s": sid, "p": project, "f": last - 100, "l": last, "e": events})
        for i in range(turns):
            conn.execute(text(
                "INSERT INTO turns (session_id, turn_id, seq, opened_at, state)"
                " VALUES (:s, :t, :q, :o, 'closed')"),
                {"s": sid, "t": f"turn-{i}", "q": i + 1, "o": last - 50})


def outbox_rows(engine) -> dict[tuple[str, str], dict]:
    with db.read(engine) as conn:
        return {(r.trace_id, r.sink): dict(r._mapping) for r in conn.execute(text(
            "SELECT * FROM outbox"))}
