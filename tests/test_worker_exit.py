"""The worker leaves when nothing is due within its idle window (held rows, failed rows
retried later, sessions finalised later are not work), and at once when its spool home or
database file is removed or replaced.  Real worker subprocesses."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from spool import db, paths
from spool import worker as w
from support.waiting import wait_until

NOT_SOON = dict(SPOOL_INTERVAL_SWEEP="3600", SPOOL_INTERVAL_AGGREGATE="3600")


def _row(engine, state: str, next_attempt_at: float) -> None:
    now = time.time()
    with db.write(engine) as conn:
        conn.exec_driver_sql(
            "INSERT INTO traces (trace_id, kind, name, created_at, body)"
            " VALUES ('t1', 'turn', 'n', ?, '{}')", (now,))
        conn.exec_driver_sql(
            "INSERT INTO outbox (trace_id, sink, state, created_at, next_attempt_at, held_reason)"
            " VALUES ('t1', 'file', ?, ?, ?, 'paused')", (state, now, next_attempt_at))


@pytest.mark.parametrize("state,next_in", [("held", 0.0), ("failed", 3600.0)])
def test_a_row_not_due_within_the_window_lets_the_worker_exit(spool_home, workers, state,
                                                               next_in):
    engine = db.open_db(spool_home)
    _row(engine, state, time.time() + next_in)
    proc = workers.start("--idle-exit", "0.5", env=workers.env(**NOT_SOON))
    proc.wait(30)  # within its idle window (plus start-up), not forever
    assert proc.returncode == 0
    assert "nothing due within 0.5 s" in (spool_home / "worker.log").read_text()
    with db.read(engine) as conn:  # the row is left as it was, for the next worker
        assert conn.exec_driver_sql("SELECT state FROM outbox").scalar() == state
    engine.dispose()


def test_a_failed_row_due_within_the_window_keeps_it(spool_home, workers):
    engine = db.open_db(spool_home)
    _row(engine, "failed", time.time() + 3600)
    w_ = w.Worker(engine, spool_home)
    assert w.nothing_due(engine, spool_home, time.time(), 60)
    assert not w.nothing_due(engine, spool_home, time.time(), 7200)
    assert w_.db_id == w.db_identity(spool_home) is not None
    engine.dispose()


def test_an_open_session_counts_only_when_its_finalisation_is_in_the_window(spool_home):
    engine = db.open_db(spool_home)
    now = time.time()
    with db.write(engine) as conn:
        conn.exec_driver_sql(
            "INSERT INTO sessions (session_id, first_event_at, last_event_at, state)"
            " VALUES ('s', ?, ?, 'open')", (now, now))
    env = {"CONNECTOR_SESSION_TTL": "600", "SPOOL_SESSION_END_GRACE": "10"}
    assert w.nothing_due(engine, spool_home, now, 120, env)       # stale in 600 s
    assert not w.nothing_due(engine, spool_home, now, 700, env)
    with db.write(engine) as conn:
        conn.exec_driver_sql("UPDATE sessions SET state = 'ended'")
    # No hook follows a SessionEnd: the worker waits out the grace, however short its window.
    assert not w.nothing_due(engine, spool_home, now, 120, env)
    assert not w.nothing_due(engine, spool_home, now, 5, env)
    # An open session whose Codex still runs is not work (its next hook starts a worker);
    # once that process is gone, the sweep must finalise it: work.
    codex = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with db.write(engine) as conn:
            conn.exec_driver_sql("UPDATE sessions SET state = 'open', codex_pid = ?", (codex.pid,))
        assert w.nothing_due(engine, spool_home, now, 5, env)
    finally:
        codex.kill()
        codex.wait()
    assert not w.nothing_due(engine, spool_home, now, 5, env)
    engine.dispose()


def test_a_database_gone_before_the_worker_looked_counts_as_gone(spool_home):
    """Removed between the worker's open and its first look (a start-up race under load):
    it has nothing to compare with, and must still exit, not run forever."""
    engine = db.open_db(spool_home)
    kept = w.Worker(engine, spool_home)
    os.remove(paths.db_path(spool_home))
    late = w.Worker(engine, spool_home)
    try:
        assert kept._home_gone() and late._home_gone()
        assert late.db_id is None and kept.db_id is not None
    finally:
        kept.close(), late.close()
        engine.dispose()


@pytest.mark.parametrize("how", ["remove home", "replace database"])
def test_the_worker_exits_when_its_home_or_database_goes(spool_home, workers, how):
    db.open_db(spool_home).dispose()
    proc = workers.start(env=workers.env(**NOT_SOON))  # no idle exit at all
    wait_until(lambda: w.holder_pid(spool_home) == proc.pid, 30, what="the worker")
    # Replaced before the worker opened it, the new file would simply be its database.
    log = spool_home / paths.WORKER_LOG
    wait_until(lambda: log.exists() and f"worker {proc.pid} running" in log.read_text(), 30,
               what="the worker serving")
    if how == "remove home":  # `rm -rf` while the worker writes: until it is gone
        wait_until(lambda: shutil.rmtree(spool_home, ignore_errors=True) or
                   not spool_home.exists(), 10, what="the home removed")
    else:
        dbfile = paths.db_path(spool_home)
        shutil.copy(dbfile, str(dbfile) + ".new")
        os.replace(str(dbfile) + ".new", dbfile)
    # It has no idle exit: without noticing, it would run forever.  (How fast it notices
    # - it looks every second - is not timed here: on a loaded machine its exit, which
    # waits for a running job, took over 10 s.)
    proc.wait(60)
    assert proc.returncode == 0
