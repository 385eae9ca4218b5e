"""Retention: delivered sessions' data goes after the retention age; nothing undelivered ever.

Time is injected: events carry chosen arrival stamps and every job runs at a
chosen ``now``.  The pipeline is the real one (hook insert, ingest, aggregate,
deliver to the file sink), in-process.
"""
from __future__ import annotations

import json
import os

import pytest

from conftest import fixture_payloads

from spool import db, maintenance, paths
from spool.errors import SpoolError
from spool.hook import insert
from spool.worker import Worker

DAY = 86400.0
T0 = 1_800_000_000.0
ENV_GRACE0 = {"SPOOL_SESSION_END_GRACE": "0"}


def _session_payloads(sid: str, *, end: bool = True) -> list[bytes]:
    out = []
    for name, payload in fixture_payloads():
        if not end and name == "SessionEnd":
            continue
        obj = json.loads(payload)
        obj["session_id"] = sid
        obj.pop("transcript_path", None)  # no rollout for the renamed copies
        out.append(json.dumps(obj).encode())
    return out


def fill(home, sid: str, at: float, *, end: bool = True) -> int:
    """The fixture session as ``sid``, arriving from ``at`` on (10 ms apart).

    The hook's own INSERT, in one transaction (the hook's fsync per event would
    only slow the test down).
    """
    import sqlite3

    from spool.hook import INSERT_SQL

    payloads = _session_payloads(sid, end=end)
    con = sqlite3.connect(paths.db_path(home), isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        for i, p in enumerate(payloads):
            con.execute(INSERT_SQL, (at + i * 0.01, "hook", "/tmp", p, len(p), 0))
        con.execute("COMMIT")
    finally:
        con.close()
    return len(payloads)


def run(engine, home, now: float, jobs=("ingest", "aggregate", "deliver"), env=None):
    worker = Worker(engine, home, env=env or ENV_GRACE0)
    try:
        results = worker.run_once(now, jobs=jobs)
    finally:
        worker.close()
    assert all(results.values()), results
    return results


def q(engine, sql, *args):
    with db.read(engine) as conn:
        return [tuple(r) for r in conn.exec_driver_sql(sql, args)]


def one(engine, sql, *args):
    return q(engine, sql, *args)[0][0]


def session_counts(engine, sid):
    return (
        one(engine, "SELECT count(*) FROM raw_events WHERE session_id = ?", sid),
        one(engine, "SELECT count(*) FROM traces WHERE session_id = ?", sid),
        one(engine, "SELECT count(*) FROM outbox WHERE trace_id IN"
                    " (SELECT trace_id FROM traces WHERE session_id = ?)", sid),
        one(engine, "SELECT count(*) FROM delivery_attempts WHERE trace_id IN"
                    " (SELECT trace_id FROM traces WHERE session_id = ?)", sid),
    )


def test_delivered_sessions_go_after_the_age_undelivered_ones_stay(spool_home, engine):
    n = fill(spool_home, "delivered", T0)
    run(engine, spool_home, T0 + 5)
    assert one(engine, "SELECT group_concat(DISTINCT state) FROM outbox") == "sent"
    assert session_counts(engine, "delivered") == (n, 2, 2, 2)
    # Undelivered: gave up on one trace (dead), waiting for a retry (failed) ...
    fill(spool_home, "dead", T0 + 20)
    fill(spool_home, "failed", T0 + 21)
    run(engine, spool_home, T0 + 25)
    with db.write(engine) as conn:
        for sid, state in (("dead", "dead"), ("failed", "failed")):
            assert conn.exec_driver_sql(
                "UPDATE outbox SET state = ?, sent_at = NULL, next_attempt_at = ?"
                " WHERE trace_id = (SELECT trace_id"
                " FROM traces WHERE session_id = ? ORDER BY trace_id LIMIT 1)",
                (state, T0 + 1e9, sid)).rowcount == 1
    # ... a live session (no SessionEnd, not swept) ...
    fill(spool_home, "live", T0 + 30, end=False)
    run(engine, spool_home, T0 + 35)
    # ... and traces never sent (pending).
    fill(spool_home, "pending", T0 + 40)
    run(engine, spool_home, T0 + 45, jobs=("ingest", "aggregate"))
    assert q(engine, "SELECT DISTINCT o.state FROM outbox o JOIN traces t USING (trace_id)"
                     " WHERE t.session_id = 'pending'") == [("pending",)]
    assert one(engine, "SELECT state FROM sessions WHERE session_id = 'live'") != "final"
    before = {sid: session_counts(engine, sid) for sid in ("pending", "dead", "failed", "live")}

    # Younger than the age: nothing goes.
    assert maintenance.retention(engine, T0 + 29 * DAY, 30 * DAY)["raw_events"] == 0
    assert session_counts(engine, "delivered") == (n, 2, 2, 2)

    counts = maintenance.retention(engine, T0 + 31 * DAY, 30 * DAY)
    assert counts == {"sessions": 1, "raw_events": n, "turns": 2, "traces": 2, "outbox": 2,
                      "attempts": 2}
    assert session_counts(engine, "delivered") == (0, 0, 0, 0)
    assert {sid: session_counts(engine, sid) for sid in before} == before
    # Granularity turn: no summary, so nothing of the session is kept.
    assert q(engine, "SELECT count(*) FROM sessions WHERE session_id = 'delivered'") == [(0,)]
    assert q(engine, "SELECT count(*) FROM turns WHERE session_id = 'delivered'") == [(0,)]
    assert one(engine, "SELECT count(*) FROM turns WHERE session_id != 'delivered'") == 8
    # Idempotent.
    assert maintenance.retention(engine, T0 + 31 * DAY, 30 * DAY)["raw_events"] == 0


def test_an_event_the_aggregator_has_not_seen_keeps_its_session(spool_home, engine):
    n = fill(spool_home, "s", T0)
    run(engine, spool_home, T0 + 5)
    # An old event, ingested late (say an overflow file found days later): parsed,
    # not yet aggregated.  It must not be deleted before it reaches a trace.
    late = _session_payloads("s")[1]
    insert(str(spool_home), T0 + 0.5, "overflow", "/tmp", late, len(late), 0)
    run(engine, spool_home, T0 + 40 * DAY, jobs=("ingest",))
    assert one(engine, "SELECT count(*) FROM raw_events WHERE status = 'new'") == 0
    assert maintenance.retention(engine, T0 + 40 * DAY, 30 * DAY)["raw_events"] == 0
    assert one(engine, "SELECT count(*) FROM raw_events WHERE session_id = 's'") == n + 1
    # Once aggregated and delivered, and old enough again, it goes with the rest.
    run(engine, spool_home, T0 + 40 * DAY, jobs=("ingest", "aggregate", "sweep", "deliver"))
    assert one(engine, "SELECT count(*) FROM outbox WHERE state != 'sent'") == 0
    assert maintenance.retention(engine, T0 + 40 * DAY + 1, 30 * DAY)["raw_events"] == 0
    counts = maintenance.retention(engine, T0 + 80 * DAY, 30 * DAY)
    assert counts["raw_events"] == n + 1
    assert one(engine, "SELECT count(*) FROM raw_events") == 0


def test_a_session_traced_but_sent_recently_waits_for_the_age_after_delivery(spool_home, engine):
    n = fill(spool_home, "s", T0)
    run(engine, spool_home, T0 + 5, jobs=("ingest", "aggregate"))
    run(engine, spool_home, T0 + 20 * DAY, jobs=("deliver",))  # delivered late (held a while)
    assert maintenance.retention(engine, T0 + 31 * DAY, 30 * DAY)["raw_events"] == 0
    assert maintenance.retention(engine, T0 + 51 * DAY, 30 * DAY)["raw_events"] == n


def test_sessionless_traces_quarantine_errors_and_checkpoint(spool_home, engine):
    # A connection kept open, as a running worker has (the last connection to
    # close would checkpoint by itself).
    reader = engine.connect()
    reader.exec_driver_sql("SELECT 1").all()
    reader.rollback()
    with db.write(engine) as conn:
        for tid, state, sent in (("t-sent", "sent", T0), ("t-dead", "dead", None)):
            conn.exec_driver_sql("INSERT INTO traces (trace_id, kind, name, created_at, body)"
                                 " VALUES (?, 'test', 'test', ?, '{}')", (tid, T0))
            conn.exec_driver_sql(
                "INSERT INTO outbox (trace_id, sink, state, created_at, next_attempt_at, sent_at)"
                " VALUES (?, 'file', ?, ?, ?, ?)", (tid, state, T0, T0, sent))
        for at in (T0, T0 + 20 * DAY):
            conn.exec_driver_sql(
                "INSERT INTO quarantine (received_at, quarantined_at, source, payload, size,"
                " reason) VALUES (?, ?, 'hook', x'00', 1, 'not JSON')", (at, at))
            conn.exec_driver_sql("INSERT INTO errors (at, source, message) VALUES (?, 'x', 'm')",
                                 (at,))
        conn.exec_driver_sql("CREATE TABLE filler (x BLOB)")
        conn.exec_driver_sql("INSERT INTO filler VALUES (zeroblob(500000))")
    wal = paths.db_path(spool_home).with_name("spool.db-wal")
    assert wal.stat().st_size > 500000
    out = maintenance.maintain(engine, T0 + 31 * DAY, env={})
    assert out["traces"] == 1 and out["quarantine"] == 1 and out["errors"] == 1
    assert q(engine, "SELECT trace_id FROM traces") == [("t-dead",)]
    assert one(engine, "SELECT count(*) FROM quarantine") == 1
    assert out["checkpoint_busy"] == 0
    assert wal.stat().st_size == 0  # TRUNCATE gave the WAL back
    reader.close()


def test_retention_settings(spool_home, engine):
    assert maintenance.retention_seconds({}) == 30 * DAY
    assert maintenance.retention_seconds({"SPOOL_RETENTION_DAYS": "7"}) == 7 * DAY
    assert maintenance.retention_seconds({"SPOOL_RETENTION_DAYS": "0"}) is None
    assert maintenance.quarantine_seconds({"SPOOL_QUARANTINE_DAYS": "1.5"}) == 1.5 * DAY
    for bad in ("-1", "soon", "inf"):
        with pytest.raises(SpoolError):
            maintenance.retention_seconds({"SPOOL_RETENTION_DAYS": bad})
    with pytest.raises(SpoolError):
        maintenance.retention(engine, T0, -1)
    fill(spool_home, "s", T0)
    run(engine, spool_home, T0 + 5)
    # Keep forever: nothing deleted however old.
    out = maintenance.maintain(engine, T0 + 1000 * DAY,
                               env={"SPOOL_RETENTION_DAYS": "0", "SPOOL_QUARANTINE_DAYS": "0"})
    assert "raw_events" not in out
    assert one(engine, "SELECT count(*) FROM raw_events") == 20


def _db_bytes(home) -> int:
    p = paths.db_path(home)
    return sum(os.path.getsize(str(p) + s) for s in ("", "-wal") if os.path.exists(str(p) + s))


def test_database_does_not_grow_across_fill_deliver_clean_cycles(spool_home, engine):
    sizes, usage_bytes = [], []
    per_cycle = 8
    for cycle in range(8):
        t = T0 + cycle * 1000
        for k in range(per_cycle):
            fill(spool_home, f"c{cycle}-s{k}", t + k)
        run(engine, spool_home, t + 100)
        assert one(engine, "SELECT count(*) FROM outbox WHERE state != 'sent'") == 0
        counts = maintenance.maintain(engine, t + 200, env={}, retention_s=50)
        assert counts["raw_events"] == per_cycle * 20
        assert one(engine, "SELECT count(*) FROM raw_events") == 0
        sizes.append(_db_bytes(spool_home))
        usage_bytes.append(one(engine, "SELECT coalesce(sum(pgsize), 0) FROM dbstat"
                                       " WHERE name LIKE '%usage_hours%'"))
    # The first cycles size the file; afterwards freed pages are reused.  The one thing
    # kept on purpose is usage_hours (`spool usage` reports past sessions from it).
    print("db sizes per cycle", sizes, "usage_hours bytes", usage_bytes)
    assert one(engine, "SELECT count(*) FROM model_requests") == 0
    assert sizes[-1] - sizes[1] <= usage_bytes[-1] - usage_bytes[1], (sizes, usage_bytes)


def test_a_summarised_session_keeps_a_tombstone_so_a_resume_gets_a_new_trace_id(spool_home,
                                                                                engine):
    env = {**ENV_GRACE0, "SPOOL_GRANULARITY": "both"}
    fill(spool_home, "s", T0)
    run(engine, spool_home, T0 + 5, env=env)
    (old_id, old_rev), = q(engine, "SELECT trace_id, revision FROM traces WHERE kind = 'session'")
    counts = maintenance.retention(engine, T0 + 31 * DAY, 30 * DAY)
    assert counts["traces"] == 3 and counts["turns"] == 2
    assert one(engine, "SELECT count(*) FROM traces") == 0
    assert q(engine, "SELECT state FROM sessions WHERE session_id = 's'") == [("final",)]
    # Resumed after the retention: the new summary must not reuse the old trace id
    # (a receiver deduplicating by idempotency key would drop it).
    for i, payload in enumerate(_session_payloads("s")[10:]):  # the resume and its turn
        insert(str(spool_home), T0 + 32 * DAY + i, "hook", "/tmp", payload, len(payload), 0)
    run(engine, spool_home, T0 + 32 * DAY + 60, env=env)
    (new_id, new_rev), = q(engine, "SELECT trace_id, revision FROM traces WHERE kind = 'session'")
    assert new_id != old_id and new_rev > old_rev


def test_hook_error_logs_stay_bounded(spool_home):
    import stat

    from spool import maintenance

    spool_home.mkdir(parents=True, exist_ok=True)
    log = spool_home / "hook-errors.log"
    lines = [f"2026-11-21T00:00:00Z\t{i}\tline {i:07d}\n" for i in range(60_000)]
    log.write_text("".join(lines))
    assert log.stat().st_size > maintenance.HOOK_LOG_MAX_BYTES
    assert maintenance.trim_hook_logs([spool_home]) == 1
    kept = log.read_text().splitlines(keepends=True)
    assert 0 < log.stat().st_size <= maintenance.HOOK_LOG_KEEP_BYTES
    assert kept == lines[-len(kept):]  # the newest lines, whole
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert maintenance.trim_hook_logs([spool_home]) == 0  # small now: untouched
