"""The index plans each batch outside the write lock, and redoes a plan another
pass made stale before applying it."""
from __future__ import annotations

import pytest

from spool import aggregate, db, paths, wal_checkpointer
from spool.aggregate import EVENT_TRACES, connection, index, result, session, write

from support.recorded import codex_like_session
from support.rows import insert_raw


T0 = 1_800_000_000.0
ENV = {"SPOOL_GRANULARITY": "both", "SPOOL_SESSION_END_GRACE": "0"}


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
    t = insert_raw(engine, evs[:stop + 1], T0, parse=True)  # the turn up to its Stop
    res = aggregate.aggregate(engine, t + 1, env={**ENV, "SPOOL_GRANULARITY": "session"})
    assert res.turn_traces == 0  # indexed, closed, not traced (session granularity)
    late = dict(evs[4], tool_use_id="late-call")  # a PostToolUse for the closed turn
    t = insert_raw(engine, [late], t, parse=True)

    def other_pass_traces_the_turn():  # another worker's pass: index done, it traces the turn
        other = db.make_engine(paths.db_path())
        try:
            cfgs = result.Configs(ENV)
            work = session.Work("s", cfgs.get("/nonexistent"), None, 0)
            ckpt = wal_checkpointer.Checkpointer(other)
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
    t = insert_raw(engine, codex_like_session("s", turns=2), T0, parse=True)

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
    t = insert_raw(engine, codex_like_session("s", turns=1), T0, parse=True)
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
    insert_raw(engine, evs, T0, parse=True)
    aggregate.aggregate(engine, T0, env=ENV)
    with db.read(engine) as conn:
        assert conn.exec_driver_sql(
            "SELECT cwd, transcript_path, model FROM sessions").one() == (
            "/nonexistent/mid", "/nonexistent/rollout.jsonl", "gpt-mid")


def test_ingest_stores_the_session_facts_and_the_index_reads_only_those(tmp_path):
    engine = db.open_db()
    evs = codex_like_session("s", turns=1, cwd="/nonexistent/a")
    evs[0].update(model="gpt-a", permission_mode="default", transcript_path="/nonexistent/r.jsonl")
    evs[1].update(source="not-a-start", model="", permission_mode=5)  # odd values: no fact
    insert_raw(engine, evs, T0, parse=True)
    with db.read(engine) as conn:
        rows = conn.exec_driver_sql(
            "SELECT event, payload_cwd, payload_transcript_path, payload_model,"
            " payload_permission_mode, payload_source FROM raw_events ORDER BY id").all()
    assert rows[0] == ("SessionStart", "/nonexistent/a", "/nonexistent/r.jsonl", "gpt-a",
                       "default", "startup")
    assert rows[1] == ("UserPromptSubmit", "/nonexistent/a", None, None, None, None)
    with db.write(engine) as conn:  # the index must not need the payloads: blank them
        conn.exec_driver_sql("UPDATE raw_events SET payload = x'7b7d'")
    assert aggregate.aggregate(engine, T0, env=ENV).indexed == len(evs)
    with db.read(engine) as conn:
        assert conn.exec_driver_sql(
            "SELECT cwd, transcript_path, model, permission_mode, source FROM sessions").one() == (
            "/nonexistent/a", "/nonexistent/r.jsonl", "gpt-a", "default", "startup")


def test_retention_deleting_sessions_makes_a_plan_made_before_it_stale(
        tmp_path, between_plan_and_apply):
    from spool import maintenance

    engine = db.open_db()
    t = insert_raw(engine, codex_like_session("old", turns=1), T0, parse=True)
    aggregate.aggregate(engine, t + 1, env=ENV)
    with db.write(engine) as conn:  # delivered long ago
        conn.exec_driver_sql("UPDATE outbox SET state = 'sent', sent_at = ?", (t + 2,))
    t = insert_raw(engine, codex_like_session("new", turns=1), t + 100_000, parse=True)

    def retention_runs():
        other = db.make_engine(paths.db_path())
        try:
            assert maintenance.retention(other, t, 50_000)["sessions"] == 1
        finally:
            other.dispose()

    calls = between_plan_and_apply(retention_runs)
    res = aggregate.aggregate(engine, t + 1, env=ENV)
    assert calls[:2] == [True, True]  # planned again under the write lock
    assert res.indexed == 8 and res.session_traces == 1
    state = _state(engine)
    assert state["sessions"] == [("new", "final", 8, 0, 16), ("old", "final", 8, 0, 8)]  # a tombstone
    assert [r[:2] for r in state["turns"]] == [("new", "new-t0")]  # the old turns deleted


def test_a_summary_records_the_requests_of_a_turn_trace_another_pass_wrote(tmp_path):
    """A session summary leaves its turns' model requests to the turn traces built with
    it; when the write drops one of those (another pass traced that turn meanwhile), the
    summary records that turn's requests itself: every request is counted."""
    engine = db.open_db()
    t = insert_raw(engine, codex_like_session("s", turns=2), T0, parse=True)
    cfgs = result.Configs(ENV)
    ckpt = wal_checkpointer.Checkpointer(engine)
    with connection.connect(engine) as con:
        index.index(con, t + 1, cfgs, result.AggregateResult(), ckpt)
        built = session.read_session(con, session.Work("s", cfgs.get("/nonexistent"), "ended"))
        assert built.summary.skipped == {"s-t0", "s-t1"} and built.summary.requests == ()
        # another pass traces s-t0 between this pass's read and its write
        con.execute("UPDATE turns SET state = 'traced', trace_id = 'other' WHERE turn_id = 's-t0'")
        done = result.AggregateResult()
        write.flush(con, [built], t + 1, done, write.Sizer(), ckpt)
    ckpt.close()
    assert (done.turn_traces, done.session_traces, done.conflicts) == (1, 1, 1)
    with db.read(engine) as conn:
        rows = conn.exec_driver_sql("SELECT turn_id, seq, trace_id, input FROM model_requests"
                                    " ORDER BY turn_id").all()
    assert [(r[0], r[1], r[3]) for r in rows] == [("s-t0", 1, 10), ("s-t1", 1, 10)]
    assert rows[0][2] == built.summary.trace_id  # s-t0's row came with the summary
