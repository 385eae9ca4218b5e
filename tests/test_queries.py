"""spool/queries.py against a real SQLite spool populated with plain SQL."""
from __future__ import annotations


import pytest
from sqlalchemy import text

from spool import db, queries

from support.queries import (T0, add_trace, add_attempt, add_quarantine, add_error, add_session,
                             outbox_rows)


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
