"""The worker: lock, one worker per spool, signals, idleness, job errors, --once."""
from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import threading
import time

import pytest
from typer.testing import CliRunner


from spool import db, paths
from spool import worker as w
from spool.errors import SpoolError

from support.recorded import fixture_payloads
from support.rows import db_rows
from support.waiting import wait_until
from support.workers import worker_pids


def _insert_raw(home, payload: bytes, now: float | None = None) -> None:
    from spool.hook import insert

    insert(str(home), time.time() if now is None else now, "hook", "/tmp", payload,
           len(payload), 0)


# --- configuration -----------------------------------------------------------------


def test_intervals_defaults_and_env():
    d = w.Intervals.from_env({})
    assert (d.ingest, d.aggregate, d.sweep, d.deliver, d.maintenance) == (1, 1, 30, 1, 600)
    e = w.Intervals.from_env({"SPOOL_INTERVAL_SWEEP": "2.5", "SPOOL_INTERVAL_DELIVER": "0.2"})
    assert (e.sweep, e.deliver, e.ingest) == (2.5, 0.2, 1.0)
    for bad in ("x", "0", "-1", "nan"):
        with pytest.raises(SpoolError) as exc:
            w.Intervals.from_env({"SPOOL_INTERVAL_INGEST": bad})
        assert "SPOOL_INTERVAL_INGEST" in str(exc.value)


# --- the lock ------------------------------------------------------------------------


def test_lock_is_exclusive_and_records_the_pid(spool_home):
    first = w.WorkerLock.acquire(spool_home)
    assert first is not None
    first.write_pid()
    assert w.WorkerLock.acquire(spool_home) is None
    assert w.lock_is_held(spool_home)
    assert w.holder_pid(spool_home) == os.getpid()
    assert (spool_home / "worker.lock").stat().st_mode & 0o777 == 0o600
    first.release()
    assert not w.lock_is_held(spool_home)
    assert w.holder_pid(spool_home) is None
    assert (spool_home / "worker.lock").read_bytes() == b""
    again = w.WorkerLock.acquire(spool_home)
    assert again is not None
    again.release()


def test_holder_pid_ignores_a_dead_process(spool_home):
    import subprocess

    paths.ensure_home(spool_home)
    proc = subprocess.Popen(["true"])
    proc.wait()  # reaped: its pid names no process now (a SIGKILLed worker's case)
    (spool_home / "worker.lock").write_bytes(b"%d\n" % proc.pid)
    assert w.holder_pid(spool_home) is None
    (spool_home / "worker.lock").write_bytes(b"%d\n" % os.getpid())
    assert w.holder_pid(spool_home) == os.getpid()
    (spool_home / "worker.lock").write_bytes(b"garbage")
    assert w.holder_pid(spool_home) is None


def test_adopt_accepts_only_a_descriptor_holding_this_spools_lock(spool_home, tmp_path):
    paths.ensure_home(spool_home)
    # What the hook does: open, flock, hand over.
    fd = os.open(spool_home / "worker.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    lock = w.WorkerLock.adopt(spool_home, fd)
    assert lock is not None and lock.fd == fd
    # Another open description of the same file does not hold it, so cannot adopt.
    other = os.open(spool_home / "worker.lock", os.O_RDWR)
    assert w.WorkerLock.adopt(spool_home, other) is None
    # A descriptor of some other file is refused too, as is a closed one.
    stray = os.open(tmp_path / "stray", os.O_RDWR | os.O_CREAT, 0o600)
    assert w.WorkerLock.adopt(spool_home, stray) is None
    os.close(stray)
    assert w.WorkerLock.adopt(spool_home, stray) is None
    lock.write_pid(12345)
    assert (spool_home / "worker.lock").read_bytes() == b"12345\n"
    lock.release()
    # Released: the other description can take it now.
    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(other)


# --- idleness -----------------------------------------------------------------------


def test_is_idle_sees_new_events_overflow_and_held_rows(spool_home):
    engine = db.open_db(spool_home)
    try:
        assert w.is_idle(engine, spool_home)
        _insert_raw(spool_home, b'{"session_id": "s", "hook_event_name": "Stop"}')
        assert not w.is_idle(engine, spool_home)
        with db.write(engine) as conn:
            conn.exec_driver_sql("UPDATE raw_events SET status = 'ok'")
        assert w.is_idle(engine, spool_home)
        ov = spool_home / "overflow-1-2-ab.jsonl"
        ov.write_text("{}\n")
        assert not w.is_idle(engine, spool_home)
        ov.unlink()
        now = time.time()
        with db.write(engine) as conn:
            conn.exec_driver_sql(
                "INSERT INTO traces (trace_id, kind, name, created_at, body)"
                " VALUES ('t1', 'test', 'n', ?, '{}')", (now,))
            conn.exec_driver_sql(
                "INSERT INTO outbox (trace_id, sink, state, created_at, next_attempt_at)"
                " VALUES ('t1', 'file', 'held', ?, ?)", (now, now))
        assert not w.is_idle(engine, spool_home)
        for state, idle in (("failed", False), ("in_flight", False), ("pending", False),
                            ("dead", True), ("sent", True)):
            with db.write(engine) as conn:
                conn.exec_driver_sql("UPDATE outbox SET state = ?", (state,))
            assert w.is_idle(engine, spool_home) is idle, state
        with db.write(engine) as conn:
            conn.exec_driver_sql(
                "INSERT INTO sessions (session_id, first_event_at, last_event_at, state)"
                " VALUES ('s', ?, ?, 'open')", (now, now))
        assert not w.is_idle(engine, spool_home)
    finally:
        engine.dispose()


# --- job errors ------------------------------------------------------------------------


class _FailingSweep(w.Worker):
    calls = 0

    def job_sweep(self, now=None):
        type(self).calls += 1
        raise RuntimeError("sweep exploded")

    # Keep the test about the scheduler, independent of the other modules.
    def job_aggregate(self, now=None):
        return 0

    def job_deliver(self, now=None):
        return 0


def test_a_failing_job_is_recorded_once_and_the_others_keep_running(spool_home, caplog):
    engine = db.open_db(spool_home)
    worker = _FailingSweep(engine, spool_home)
    fast = w.Intervals(ingest=0.05, aggregate=0.05, sweep=0.05, deliver=0.05, maintenance=60)
    t = threading.Thread(target=worker.serve, kwargs={"intervals": fast, "grace": 2})
    t.start()
    try:
        wait_until(lambda: _FailingSweep.calls >= 3, 20, what="the sweep to fail 3 times")
        # The scheduler still runs the other jobs: an overflow file gets ingested.
        payload = b'{"session_id": "s1", "hook_event_name": "SessionStart"}'
        from spool.hook import write_overflow

        write_overflow(str(spool_home), time.time(), "/tmp", payload, len(payload), 0, "test")
        wait_until(lambda: _count(engine, "SELECT count(*) FROM raw_events WHERE status='ok'")
                   == 1, 20, what="the overflow event to be ingested")
        rows = db_rows("SELECT source, message FROM errors")
        # Identical failures within a minute are recorded once.
        assert rows == [("job:sweep", "RuntimeError: sweep exploded")]
        assert any("job sweep failed: RuntimeError: sweep exploded" in r.getMessage()
                   for r in caplog.records)
    finally:
        worker.stop.set()
        t.join(10)
        engine.dispose()
    assert not t.is_alive()


def _count(engine, sql):
    with db.read(engine) as conn:
        return conn.exec_driver_sql(sql).scalar()


def test_serve_releases_its_own_leases_on_stop(spool_home):
    engine = db.open_db(spool_home)
    worker = _FailingSweep(engine, spool_home)
    now = time.time()
    with db.write(engine) as conn:
        conn.exec_driver_sql("INSERT INTO traces (trace_id, kind, name, created_at, body)"
                             " VALUES ('a', 'test', 'n', ?, '{}'), ('b', 'test', 'n', ?, '{}')",
                             (now, now))
        conn.exec_driver_sql(
            "INSERT INTO outbox (trace_id, sink, state, created_at, next_attempt_at,"
            " lease_owner, lease_until) VALUES"
            " ('a', 'file', 'in_flight', ?, ?, ?, ?), ('b', 'file', 'in_flight', ?, ?, 'other', ?)",
            (now, now + 50, worker.owner, now + 60, now, now + 50, now + 60))
    worker.stop.set()  # stop at once
    assert worker.serve(intervals=w.Intervals(maintenance=600), grace=1) == 0
    with db.read(engine) as conn:
        rows = {r[0]: tuple(r[1:]) for r in conn.exec_driver_sql(
            "SELECT trace_id, state, lease_owner, next_attempt_at <= ? FROM outbox",
            (time.time(),))}
    assert rows["a"][0] in ("pending", "failed") and rows["a"][1] is None and rows["a"][2] == 1
    assert rows["b"] == ("in_flight", "other", 0)  # not ours: untouched
    engine.dispose()


def test_a_worker_losing_the_lock_race_names_the_winner(spool_home):
    # The winner writes its pid just after taking the lock; the loser may look in between
    # (CI once saw "a process that just started it" instead of the pid).
    lock = w.WorkerLock.acquire(spool_home)  # the winner (this process), pid not written yet
    timer = threading.Timer(0.2, lock.write_pid)
    seen: list = []
    try:
        timer.start()
        code, wk = w.run_worker(spool_home, on_busy=seen.append, signals=False)
    finally:
        timer.join()
        lock.release()
        for name in ("spool", "apscheduler"):  # run_worker's log handler: not for other tests
            logger = logging.getLogger(name)
            for h in [h for h in logger.handlers if hasattr(h, "_spool_worker_log")]:
                logger.removeHandler(h)
                h.close()
    assert (code, wk, seen) == (0, None, [os.getpid()])


# --- real processes ------------------------------------------------------------------


def test_second_worker_reports_the_first_and_sigterm_stops_it(spool_home, workers):
    first = workers.start()
    wait_until(lambda: w.holder_pid(spool_home) == first.pid, 30, what="the worker's pid")
    assert w.lock_is_held(spool_home)
    second = workers.start()
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert f"already running (pid {first.pid})" in out.decode()
    assert worker_pids(spool_home) == {first.pid}
    t0 = time.monotonic()
    first.send_signal(signal.SIGTERM)
    first.wait(10)
    assert time.monotonic() - t0 < 5
    assert first.returncode == 0
    assert not w.lock_is_held(spool_home)
    assert (spool_home / "worker.lock").read_bytes() == b""
    log = (spool_home / "worker.log").read_text()
    assert f"worker {first.pid} running" in log and f"worker {first.pid} stopped" in log
    assert (spool_home / "worker.log").stat().st_mode & 0o777 == 0o600


def test_worker_exits_by_itself_when_idle(spool_home, workers):
    proc = workers.start("--idle-exit", "0.5")
    proc.wait(30)
    assert proc.returncode == 0
    assert not w.lock_is_held(spool_home)
    assert "idle for" in (spool_home / "worker.log").read_text()
    # It created and migrated the database on the way.
    assert paths.db_path(spool_home).exists()


def test_idle_exit_waits_for_open_work(spool_home, workers):
    engine = db.open_db(spool_home)
    env = workers.env(SPOOL_INTERVAL_SWEEP="3600", SPOOL_INTERVAL_AGGREGATE="3600",
                      CONNECTOR_SESSION_TTL="1")
    proc = workers.start("--idle-exit", "1.5", env=env)
    wait_until(lambda: w.holder_pid(spool_home) == proc.pid, 30, what="the worker")
    now = time.time()
    with db.write(engine) as conn:  # an open session going stale within the window
        conn.exec_driver_sql(
            "INSERT INTO sessions (session_id, first_event_at, last_event_at, state)"
            " VALUES ('live', ?, ?, 'open')", (now, now))
    with pytest.raises(subprocess.TimeoutExpired):  # well past its idle time: still there
        proc.wait(timeout=2.5)  # (returns, and fails the test, the moment the worker exits)
    with db.write(engine) as conn:
        conn.exec_driver_sql("UPDATE sessions SET state = 'final'")
    proc.wait(30)
    assert proc.returncode == 0
    engine.dispose()


def test_newer_database_is_refused_untouched(spool_home, workers):
    engine = db.open_db(spool_home)
    with db.write(engine) as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999_future'")
    engine.dispose()
    before = paths.db_path(spool_home).read_bytes()
    for args in ((), ("--once",)):
        proc = workers.start(*args)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, (args, out, err)
        assert b"newer spool" in err and b"Upgrade spool" in err
        assert b"Traceback" not in err
    assert paths.db_path(spool_home).read_bytes() == before
    assert not w.lock_is_held(spool_home)


def test_once_runs_every_job_in_flow_order(spool_home, monkeypatch):
    order = []

    class Recording(w.Worker):
        def run_job(self, name, now=None):
            order.append((name, now))
            return True, None

    engine = db.open_db(spool_home)
    assert Recording(engine, spool_home).run_once(now=123.0) == dict.fromkeys(w.JOBS, True)
    assert order == [(n, 123.0) for n in ("rollouts", "ingest", "aggregate", "sweep", "deliver",
                                           "maintenance")]
    engine.dispose()


def test_once_needs_no_lock_and_reports_failed_jobs(spool_home):
    from spool.cli import get_app

    held = w.WorkerLock.acquire(spool_home)  # a worker "runs"
    assert held is not None
    try:
        _insert_raw_after_db(spool_home)
        result = CliRunner().invoke(get_app(), ["worker", "--once"])
        engine = db.make_engine(paths.db_path(spool_home))
        # Ingest ran despite the lock: the event is parsed.
        assert _count(engine, "SELECT count(*) FROM raw_events WHERE status = 'new'") == 0
        failed = db_rows("SELECT source FROM errors")
        engine.dispose()
        if failed:  # a job module not there yet: reported, exit 1
            assert result.exit_code == 1 and "failed" in result.output
        else:
            assert result.exit_code == 0, result.output
    finally:
        held.release()


def _insert_raw_after_db(home):
    db.open_db(home).dispose()
    payload = next(p for name, p in fixture_payloads() if name == "SessionStart")
    _insert_raw(home, payload)


def test_work_arriving_while_exiting_is_not_left_behind(spool_home, caplog):
    """A hook that found the lock taken had committed its event first: the exiting
    worker looks again after letting go of the lock, and carries on."""
    import logging

    caplog.set_level(logging.INFO, logger="spool")
    engine = db.open_db(spool_home)
    lock = w.WorkerLock.acquire(spool_home)
    lock.write_pid()
    released = []
    real_release = lock.release

    def release_then_hook_writes():
        real_release()
        if not released:  # the first time only: an event lands just now
            released.append(True)
            _insert_raw(spool_home, b'{"session_id": "late", "hook_event_name": "Stop"}')

    lock.release = release_then_hook_writes

    class NoAggregate(_FailingSweep):
        def job_sweep(self, now=None):
            return 0

    worker = NoAggregate(engine, spool_home)
    fast = w.Intervals(ingest=0.05, aggregate=0.05, sweep=0.05, deliver=0.05, maintenance=60)
    t = threading.Thread(target=worker.serve,
                         kwargs={"intervals": fast, "grace": 2, "idle_exit": 0.2, "lock": lock})
    t.start()
    t.join(30)
    assert not t.is_alive()
    messages = [r.getMessage() for r in caplog.records]
    assert "new work arrived while exiting: carrying on" in messages
    # It took the lock back, parsed the event, then exited idle for good.
    assert _count(engine, "SELECT count(*) FROM raw_events WHERE status = 'ok'") == 1
    assert sum("idle for" in m for m in messages) == 1
    assert not w.lock_is_held(spool_home)
    engine.dispose()
