"""Arrival order, not row order: events the hook had to put in overflow are ingested
after events that came later (the first events on a fresh machine, a locked database).
The session must still be summarised as it really happened."""
from __future__ import annotations

import sqlite3

from spool import aggregate, db, hook, ingest, paths

from support.recorded import fixture_payloads
from support.sessions import SID, project_with_rollout, read_traces, rewrite_payload


def test_overflowed_early_events_ingested_last_do_not_reopen_the_session(tmp_path, spool_home):
    project, rollout = project_with_rollout(tmp_path, "both")
    engine = db.open_db()
    payloads = [rewrite_payload(p, project, rollout) for _, p in fixture_payloads()]
    t0 = 1_800_000_000.0
    # The first 17 events went to overflow (no database yet); the last 3 reached the
    # database directly - so they get the lower row ids.
    for i, p in enumerate(payloads[:17]):
        hook.write_overflow(str(spool_home), t0 + i, str(project), p, len(p), 0, "no database")
    for i, p in enumerate(payloads[17:], start=17):
        hook.insert(str(spool_home), t0 + i, "hook", str(project), p, len(p), 0)
    ingest.ingest_all(engine)
    end = t0 + len(payloads)
    aggregate.aggregate(engine, end + 60)
    aggregate.sweep(engine, end + 60)
    kinds = sorted(t["kind"] for t in read_traces(engine))
    assert kinds == ["session", "turn", "turn"]
    conn = sqlite3.connect(paths.db_path())
    state, ended_at = conn.execute("SELECT state, ended_at FROM sessions WHERE session_id = ?",
                                   (SID,)).fetchone()
    conn.close()
    assert (state, ended_at) == ("final", t0 + 19)
    engine.dispose()


def test_a_resume_after_sessionend_still_reopens(tmp_path, spool_home):
    project, rollout = project_with_rollout(tmp_path, "session")
    engine = db.open_db()
    payloads = [rewrite_payload(p, project, rollout) for _, p in fixture_payloads()]
    t0 = 1_800_000_000.0
    for i, p in enumerate(payloads[:10]):  # first exec: ends with SessionEnd
        hook.insert(str(spool_home), t0 + i, "hook", str(project), p, len(p), 0)
    ingest.ingest_all(engine)
    aggregate.aggregate(engine, t0 + 10)  # within the grace period: not summarised yet
    for i, p in enumerate(payloads[10:], start=10):  # the resume
        hook.insert(str(spool_home), t0 + 30 + i, "hook", str(project), p, len(p), 0)
    ingest.ingest_all(engine)
    aggregate.aggregate(engine, t0 + 200)
    sessions = [t for t in read_traces(engine) if t["kind"] == "session"]
    assert len(sessions) == 1  # one summary covering both execs, not one per exec
    assert sessions[0]["body"]["event_count"] == 20
    engine.dispose()
