"""spool/queries.py against a real SQLite spool populated with plain SQL."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from spool import db, queries

T0 = 1_790_000_000.0


# --- helpers (tests/test_cli_read.py uses them too) ----------------------------------

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


# --- tests ---------------------------------------------------------------------------

def test_history_newest_first_limited_one_row_per_sink(engine):
    add_trace(engine, "t-old", created_at=T0)
    add_trace(engine, "t-mid", created_at=T0 + 10, outbox=(("infinium", "failed"), ("file", "sent")))
    add_trace(engine, "t-new", created_at=T0 + 20, outbox=())
    with db.read(engine) as conn:
        rows = queries.history(conn, 2)
    assert [(r["trace_id"], r["sink"], r["state"]) for r in rows] == [
        ("t-new", None, None), ("t-mid", "file", "sent"), ("t-mid", "infinium", "failed")]
    assert rows[1]["sent_at"] == T0 + 11 and rows[2]["sent_at"] is None
    with db.read(engine) as conn:
        assert [r["trace_id"] for r in queries.history(conn, 100)][-1] == "t-old"


def test_errors_merges_every_source_newest_first(engine):
    (ob,) = add_trace(engine, "t1", created_at=T0, outbox=(("infinium", "failed"),))
    add_attempt(engine, ob, "t1", at=T0 + 1, outcome="retry", status=503, error_class="HTTP 503",
                message="busy")
    add_attempt(engine, ob, "t1", at=T0 + 2, outcome="sent", status=200)  # not an error
    add_attempt(engine, ob, "t1", at=T0 + 5, outcome="dead", status=400, message="bad body")
    add_quarantine(engine, at=T0 + 3, reason="not JSON")
    add_error(engine, at=T0 + 4, source="keyring", message="no backend")
    hook = [("2026-09-21T12:00:00Z", "database not writable")]  # 1_789_992_000 < T0
    with db.read(engine) as conn:
        rows = queries.errors(conn, 10, hook)
    assert [(r["kind"], r["message"][:12]) for r in rows] == [
        ("delivery", "bad body"), ("keyring", "no backend"),
        ("quarantine", "event 7 (hoo"), ("delivery", "busy"), ("hook", "database not")]
    assert rows[0]["http_status"] == 400 and rows[0]["trace_id"] == "t1"
    assert rows[0]["outcome"] == "dead"
    assert "not JSON" in rows[2]["message"]
    with db.read(engine) as conn:
        assert [r["kind"] for r in queries.errors(conn, 2, hook)] == ["delivery", "keyring"]


def test_retry_candidates_and_requeue(engine):
    add_trace(engine, "sent", created_at=T0)
    add_trace(engine, "pend", created_at=T0, outbox=(("infinium", "pending"),))
    add_trace(engine, "fail", created_at=T0, outbox=(("infinium", "failed"),), last_error="503")
    add_trace(engine, "dead", created_at=T0, outbox=(("infinium", "dead"), ("file", "sent")))
    add_trace(engine, "held", created_at=T0, outbox=(("infinium", "held"),),
              held_reason="no credentials")
    add_trace(engine, "paused", created_at=T0, outbox=(("infinium", "held"),),
              held_reason=queries.PAUSED_REASON)
    with db.read(engine) as conn:
        assert [r["trace_id"] for r in queries.retry_candidates(conn)] == ["fail", "dead", "held"]
        assert [r["trace_id"] for r in queries.retry_candidates(conn, ["dead", "sent"])] == ["dead"]
    now = T0 + 1000
    with db.write(engine) as conn:
        done = queries.requeue(conn, now, ["fail", "held"])
    assert [(r["trace_id"], r["state"]) for r in done] == [("fail", "failed"), ("held", "held")]
    rows = outbox_rows(engine)
    for tid in ("fail", "held"):
        assert rows[(tid, "infinium")]["state"] == "pending"
        assert rows[(tid, "infinium")]["next_attempt_at"] == now
        assert rows[(tid, "infinium")]["held_reason"] is None
    assert rows[("dead", "infinium")]["state"] == "dead"
    assert rows[("paused", "infinium")]["state"] == "held"


def test_clear_delivered_keeps_everything_undelivered(engine):
    (a,) = add_trace(engine, "all-sent", created_at=T0)
    add_attempt(engine, a, "all-sent", at=T0, outcome="sent", status=200)
    add_trace(engine, "half", created_at=T0, outbox=(("infinium", "sent"), ("file", "failed")))
    add_trace(engine, "none", created_at=T0, outbox=())
    add_trace(engine, "pend", created_at=T0, outbox=(("infinium", "pending"),))
    with db.read(engine) as conn:
        assert queries.count_delivered(conn) == 1
    with db.write(engine) as conn:
        assert queries.clear_delivered(conn) == {"traces": 1, "outbox": 1, "attempts": 1}
    with db.read(engine) as conn:
        left = {r[0] for r in conn.execute(text("SELECT trace_id FROM traces"))}
        n_att = conn.execute(text("SELECT count(*) FROM delivery_attempts")).scalar_one()
    assert left == {"half", "none", "pend"} and n_att == 0
    assert set(outbox_rows(engine)) == {("half", "infinium"), ("half", "file"), ("pend", "infinium")}


def test_pause_holds_project_rows_and_resume_releases_them(engine):
    add_trace(engine, "in", created_at=T0, project="/w/proj", outbox=(("infinium", "pending"),))
    add_trace(engine, "sub", created_at=T0, project="/w/proj/sub", outbox=(("infinium", "failed"),))
    add_trace(engine, "sib", created_at=T0, project="/w/projX", outbox=(("infinium", "pending"),))
    add_trace(engine, "done", created_at=T0, project="/w/proj")
    with db.write(engine) as conn:
        assert queries.pause(conn, "/w/proj", T0 + 5) == {"already": False, "held": 2}
    rows = outbox_rows(engine)
    assert rows[("in", "infinium")]["state"] == "held"
    assert rows[("sub", "infinium")]["held_reason"] == queries.PAUSED_REASON
    assert rows[("sib", "infinium")]["state"] == "pending"
    assert rows[("done", "infinium")]["state"] == "sent"
    with db.read(engine) as conn:
        assert queries.paused_at(conn, "/w/proj/sub/deeper") == T0 + 5
        assert queries.paused_at(conn, "/w/projX") is None
        assert queries.retry_candidates(conn) == []  # a pause is not undone by retry
    with db.write(engine) as conn:
        assert queries.pause(conn, "/w/proj", T0 + 6)["already"] is True
        assert queries.resume(conn, "/w/proj", T0 + 9) == {"was_paused": True, "released": 2}
    rows = outbox_rows(engine)
    assert rows[("in", "infinium")]["state"] == "pending"
    assert rows[("in", "infinium")]["next_attempt_at"] == T0 + 9
    with db.write(engine) as conn:
        assert queries.resume(conn, "/w/proj", T0 + 9)["was_paused"] is False


def test_resume_of_a_subproject_keeps_rows_of_a_still_paused_parent(engine):
    add_trace(engine, "sub", created_at=T0, project="/w/p/sub", outbox=(("infinium", "pending"),))
    with db.write(engine) as conn:
        queries.pause(conn, "/w/p", T0)
        queries.pause(conn, "/w/p/sub", T0)
        assert queries.resume(conn, "/w/p/sub", T0)["released"] == 0
    assert outbox_rows(engine)[("sub", "infinium")]["state"] == "held"


def test_hold_paused_catches_rows_made_after_the_pause(engine):
    with db.write(engine) as conn:
        queries.pause(conn, "/w/p", T0)
    add_trace(engine, "late", created_at=T0 + 1, project="/w/p", outbox=(("infinium", "pending"),))
    with db.write(engine) as conn:
        assert queries.hold_paused(conn, T0 + 2) == 1
    assert outbox_rows(engine)[("late", "infinium")]["state"] == "held"


def test_sessions_with_counts(engine):
    add_session(engine, "s-old", last=T0, turns=1, events=3)
    add_session(engine, "s-new", last=T0 + 50, turns=2, events=9)
    add_trace(engine, "a", created_at=T0, session_id="s-new")
    add_trace(engine, "b", created_at=T0, session_id="s-new")
    add_trace(engine, "c", created_at=T0, session_id="s-old")
    with db.read(engine) as conn:
        rows = queries.sessions(conn, 10)
        assert len(queries.sessions(conn, 1)) == 1
    assert [(r["session_id"], r["events"], r["turns"], r["traces"]) for r in rows] == [
        ("s-new", 9, 2, 2), ("s-old", 3, 1, 1)]


def test_resolve_trace_id_by_prefix(engine):
    for tid in ("abc-1", "abd-2", "abd-3"):
        add_trace(engine, tid, created_at=T0)
    with db.read(engine) as conn:
        assert queries.resolve_trace_id(conn, "abc") == "abc-1"
        assert queries.resolve_trace_id(conn, "abd-2") == "abd-2"
        assert queries.resolve_trace_id(conn, "abd") == ["abd-2", "abd-3"]
        assert queries.resolve_trace_id(conn, "zz") == []
        assert queries.unknown_trace_ids(conn, ["abc-1", "nope"]) == ["nope"]


@pytest.mark.parametrize("name,call", [
    ("history", lambda c: queries.history(c, 20)),
    ("errors", lambda c: queries.errors(c, 20)),
    ("retry", lambda c: queries.retry_candidates(c)),
    ("sessions", lambda c: queries.sessions(c, 20)),
])
def test_list_queries_never_scan_a_big_table(engine, name, call):
    """Every statement the list commands run walks an index (no full SCAN)."""
    from sqlalchemy import event

    statements = []

    def record(conn, cur, stmt, params, ctx, many):
        statements.append((stmt, params))

    event.listen(engine, "before_cursor_execute", record)
    with db.read(engine) as conn:
        call(conn)
    event.remove(engine, "before_cursor_execute", record)
    plans = []
    with db.read(engine) as conn:
        for stmt, params in statements:
            if stmt.lstrip().upper().startswith("SELECT"):
                plans += [r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + stmt, params)]
    assert plans
    big = ("raw_events", "traces", "outbox", "delivery_attempts", "quarantine", "errors",
           "sessions", "turns")
    for line in plans:
        if line.startswith("SCAN "):
            table = line.split()[1]
            # "t" is history's LIMITed subquery (a co-routine), not a table.
            if table in big or table in ("o", "s", "u"):
                assert "USING" in line and "INDEX" in line, (name, line)


def test_undelivered_trace_ids_of_one_project(engine):
    add_trace(engine, "sent", created_at=T0, outbox=(("infinium", "sent"),))
    add_trace(engine, "half", created_at=T0, outbox=(("infinium", "sent"), ("file", "failed")))
    add_trace(engine, "held", created_at=T0, outbox=(("infinium", "held"),))
    add_trace(engine, "other", created_at=T0, outbox=(("infinium", "pending"),),
              project="/home/dev/other")
    with db.read(engine) as conn:
        assert queries.undelivered_trace_ids(conn, "/home/dev/proj") == ["half", "held"]
        assert queries.undelivered_trace_ids(conn, "/nowhere") == []
