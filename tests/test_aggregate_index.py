"""The index plans each batch outside the write lock, and redoes a plan another
pass made stale before applying it."""
from __future__ import annotations

import pytest

from spool import aggregate, db, ingest, paths
from spool.aggregate import EVENT_TRACES, connection, index, result, session, write

from conftest import codex_like_session
from test_aggregate_props import _insert as insert_raw

T0 = 1_800_000_000.0
ENV = {"SPOOL_GRANULARITY": "both", "SPOOL_SESSION_END_GRACE": "0"}


def _insert(engine, events: list[dict], t0: float) -> float:
    t = insert_raw(engine, events, t0)
    ingest.ingest_all(engine)
    return t


def _state(engine) -> dict:
    with db.read(engine) as conn:
        q = conn.exec_driver_sql
        return {
            "sessions": q("SELECT session_id, state, event_count, late_event_count, last_event_id"
                          " FROM sessions ORDER BY session_id").all(),
            "turns": q("SELECT session_id, turn_id, seq, state FROM turns ORDER BY id").all(),
            "late": q("SELECT id FROM raw_events WHERE late = 1 ORDER BY id").all(),
            "events": q(f"SELECT id, turn_trace_id IS NOT NULL, session_trace_id IS NOT NULL"
                        f" FROM ({EVENT_TRACES}) ORDER BY id").all(),
        }


@pytest.fixture
def between_plan_and_apply(monkeypatch):
    """Run ``action()`` once, right after the first plan made outside the write
    lock (the plan's read transaction still open, as in a real race)."""
    calls = []
    real = index.plan_batch

    def install(action):
        def plan(con, *args):
            p = real(con, *args)
            calls.append(con.in_transaction)
            if len(calls) == 1 and p is not None:
                action()
            return p
        monkeypatch.setattr(index, "plan_batch", plan)
        return calls
    return install


def test_a_turn_traced_by_another_pass_meanwhile_makes_the_event_late(
        tmp_path, between_plan_and_apply):
    engine = db.open_db()
    evs = codex_like_session("s", turns=1)
    stop = next(i for i, e in enumerate(evs) if e["hook_event_name"] == "Stop")
    t = _insert(engine, evs[:stop + 1], T0)  # the turn up to its Stop
    res = aggregate.aggregate(engine, t + 1, env={**ENV, "SPOOL_GRANULARITY": "session"})
    assert res.turn_traces == 0  # indexed, closed, not traced (session granularity)
    late = dict(evs[4], tool_use_id="late-call")  # a PostToolUse for the closed turn
    t = _insert(engine, [late], t)

    def other_pass_traces_the_turn():  # another worker's pass: index done, it traces the turn
        other = db.make_engine(paths.db_path())
        try:
            cfgs = result.Configs(ENV)
            work = session.Work("s", cfgs.get("/nonexistent"), None, 0)
            ckpt = connection.Checkpointer(other)
            with connection.connect(other) as con:
                built = session.read_session(con, work)
                done = result.AggregateResult()
                write.flush(con, [built], t + 1, done, write.Sizer(), ckpt)
            ckpt.close()
            assert done.turn_traces == 1
        finally:
            other.dispose()

    calls = between_plan_and_apply(other_pass_traces_the_turn)
    res = aggregate.aggregate(engine, t + 1, env=ENV)
    # planned in a read transaction, then planned again under the write lock
    assert calls[:2] == [True, True] and len(calls) >= 2
    assert res.indexed == 1 and res.late_events == 0
    state = _state(engine)
    late_id = state["events"][-1][0]
    assert state["late"] == [(late_id,)]  # the turn was traced when it was indexed
    assert state["sessions"] == [("s", "open", stop + 2, 1, late_id)]


def test_a_batch_indexed_by_another_pass_meanwhile_is_not_indexed_twice(
        tmp_path, between_plan_and_apply):
    engine = db.open_db()
    t = _insert(engine, codex_like_session("s", turns=2), T0)

    def other_pass_indexes_everything():
        other = db.make_engine(paths.db_path())
        try:
            assert aggregate.aggregate(other, t + 1, env=ENV).indexed == 14
        finally:
            other.dispose()

    between_plan_and_apply(other_pass_indexes_everything)
    res = aggregate.aggregate(engine, t + 1, env=ENV)
    assert res.indexed == 0  # its plan was redone under the lock: nothing left
    state = _state(engine)
    assert state["sessions"] == [("s", "final", 14, 0, 14)]
    assert [r[1:] for r in state["turns"]] == [("s-t0", 1, "traced"), ("s-t1", 2, "traced")]
    assert all(r[2] for r in state["events"])  # every event in the session trace


def test_a_pass_with_nothing_new_takes_no_write_lock(tmp_path, between_plan_and_apply):
    engine = db.open_db()
    t = _insert(engine, codex_like_session("s", turns=1), T0)
    aggregate.aggregate(engine, t + 1, env=ENV)
    with db.read(engine) as conn:
        before = conn.exec_driver_sql("SELECT name, value, updated_at FROM cursors").all()
    calls = between_plan_and_apply(lambda: None)
    res = aggregate.aggregate(engine, t + 100, env=ENV)
    assert res.indexed == 0 and calls == [True]
    with db.read(engine) as conn:
        assert conn.exec_driver_sql("SELECT name, value, updated_at FROM cursors").all() == before


def test_a_session_first_seen_mid_turn_takes_its_facts_from_that_event(tmp_path):
    # spool installed while Codex runs: the first event of a session is a tool call, not
    # SessionStart; its cwd, rollout path and model still describe the session.
    engine = db.open_db()
    evs = codex_like_session("s", turns=1, cwd="/nonexistent/mid")[4:]  # from PreToolUse on
    for e in evs:
        e.update(transcript_path="/nonexistent/rollout.jsonl", model="gpt-mid")
    _insert(engine, evs, T0)
    aggregate.aggregate(engine, T0, env=ENV)
    with db.read(engine) as conn:
        assert conn.exec_driver_sql(
            "SELECT cwd, transcript_path, model FROM sessions").one() == (
            "/nonexistent/mid", "/nonexistent/rollout.jsonl", "gpt-mid")
