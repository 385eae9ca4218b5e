"""Hooks start the worker by themselves: real hook processes, real workers, a real receiver."""
from __future__ import annotations

import json
import subprocess
import time


from spool import db, paths
from spool import worker as w
from spool.demo.receiver import Receiver

from support.canary import CANARY_SECRET
from support.hookproc import hook_cmd, run_hook
from support.recorded import fixture_payloads
from support.waiting import wait_until
from support.workers import worker_pids

AGENT = "agent-autostart"
SECRET = CANARY_SECRET  # conftest checks no file of the run contains it


def _log(home) -> str:
    try:
        return (home / "worker.log").read_text()
    except FileNotFoundError:
        return ""


def _started(home) -> list[str]:
    """Workers that ever ran as *the* worker of this spool (one log line each)."""
    return [line for line in _log(home).splitlines() if " running (owner " in line]


def _query(home, sql, *args):
    engine = db.make_engine(paths.db_path(home))
    try:
        with db.read(engine) as conn:
            return [tuple(r) for r in conn.exec_driver_sql(sql, args)]
    finally:
        engine.dispose()


def _count_when_ready(home, sql) -> int | None:
    """A count, or None while the worker is still creating the database."""
    from sqlalchemy.exc import OperationalError

    if not paths.db_path(home).exists():
        return None
    try:
        return _query(home, sql)[0][0]
    except OperationalError:  # tables not created yet
        return None


def _autostart_env(**extra) -> dict:
    env = {"SPOOL_NO_AUTOSTART": "", "SPOOL_WORKER_IDLE_EXIT": "1.5",
           "SPOOL_SESSION_END_GRACE": "0"}
    env.update(extra)
    return env


def test_fixture_session_starts_one_worker_that_delivers_and_exits(spool_home, workers,
                                                                   tmp_path):
    assert not paths.db_path(spool_home).exists()  # a fresh machine: no database yet
    with Receiver(secret=SECRET) as rx:
        env = _autostart_env(INFINIUM_AGENT_ID=AGENT, INFINIUM_AGENT_SECRET=SECRET,
                             INFINIUM_BASE_URL=rx.url)
        seen: set[int] = set()
        for _name, payload in fixture_payloads():
            proc = run_hook(payload, cwd=tmp_path, env=env)
            assert proc.returncode == 0 and proc.stdout == b""
            seen |= worker_pids(spool_home)
        # The two turns reach the receiver, each under its own idempotency key.
        wait_until(lambda: len(rx.accepted_keys()) == 2, 60, what="2 traces at the receiver")
        traces = {r[0] for r in _query(spool_home, "SELECT trace_id FROM traces")}
        assert rx.accepted_keys() == traces and len(traces) == 2
        assert {r.agent_id for r in rx.requests} == {AGENT}
        wait_until(lambda: _query(spool_home, "SELECT DISTINCT state FROM outbox")
                   == [("sent",)], 30, what="both rows acknowledged")
        seen |= worker_pids(spool_home)
        # The session ended (SessionEnd, no grace): it is final, nothing is open ...
        wait_until(lambda: _query(spool_home, "SELECT state FROM sessions") == [("final",)], 30,
                   what="the session to be final; events by id: " + repr(_query(
                       spool_home, "SELECT id, source, event, received_at FROM raw_events"
                       " ORDER BY id")))
        # ... so the worker leaves once idle for SPOOL_WORKER_IDLE_EXIT.
        wait_until(lambda: not worker_pids(spool_home), 60, what="the worker to exit")
    assert len(seen) == 1, seen
    log = _log(spool_home)
    assert len(_started(spool_home)) == 1, log
    (pid,) = seen
    assert f"worker {pid} running" in log and "idle for" in log
    assert "another worker holds the lock" not in log
    assert "--lock-fd" not in log  # it adopted the hook's lock, not a lock of its own
    assert not w.lock_is_held(spool_home)
    assert (spool_home / "worker.lock").read_bytes() == b""
    assert SECRET not in log
    # Every event is in the database exactly once (most went through overflow files).
    stored = sorted(bytes(r[0]) for r in _query(spool_home, "SELECT payload FROM raw_events"))
    assert stored == sorted(p for _n, p in fixture_payloads())
    assert not list(spool_home.glob("overflow-*"))


def test_twenty_hooks_at_once_start_exactly_one_worker(spool_home, workers, tmp_path):
    stop = next(p for name, p in fixture_payloads() if name == "Stop")
    env = dict(__import__("os").environ)
    env.update(_autostart_env(SPOOL_WORKER_IDLE_EXIT="30"))
    procs = []
    for i in range(20):
        payload = json.dumps({**json.loads(stop), "n": i}).encode()
        p = subprocess.Popen(hook_cmd(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, cwd=tmp_path, env=env)
        procs.append((p, payload))
    seen: set[int] = set()
    for p, payload in procs:
        p.communicate(payload, timeout=60)
        assert p.returncode == 0
        seen |= worker_pids(spool_home)
    wait_until(lambda: _count_when_ready(spool_home, "SELECT count(*) FROM raw_events") == 20,
               60, what="the 20 events to be ingested")
    seen |= worker_pids(spool_home)
    assert len(seen) == 1, seen
    assert len(_started(spool_home)) == 1, _log(spool_home)
    assert w.holder_pid(spool_home) in seen


def test_stale_session_is_summarised_by_the_sweep(spool_home, workers, tmp_path):
    # Granularity session, a 1 s TTL, a fast sweep: the session never gets its
    # SessionEnd, so only the sweep can finalise it.
    env = _autostart_env(SPOOL_GRANULARITY="session", CONNECTOR_SESSION_TTL="1",
                         SPOOL_INTERVAL_SWEEP="0.3", SPOOL_WORKER_IDLE_EXIT="1")
    payloads = [p for name, p in fixture_payloads()][:9]  # first turn, up to its Stop
    for payload in payloads:
        assert run_hook(payload, cwd=tmp_path, env=env).returncode == 0
    traces_dir = spool_home / "traces"
    files = wait_until(lambda: list(traces_dir.glob("*.json")), 60,
                       what="the session summary in the file sink")
    assert len(files) == 1
    rows = _query(spool_home, "SELECT kind, event_count FROM traces")
    assert rows == [("session", 9)]
    assert _query(spool_home, "SELECT state FROM sessions") == [("final",)]
    wait_until(lambda: not worker_pids(spool_home), 60, what="the worker to exit")


def _delivered_setup(home, tmp_path):
    """The fixture session in the spool, traced, nothing sent yet (no worker ran)."""
    for _name, payload in fixture_payloads():
        assert run_hook(payload, cwd=tmp_path).returncode == 0  # SPOOL_NO_AUTOSTART=1
    from spool.worker import Worker

    engine = db.open_db(home)
    worker = Worker(engine, home, env={"SPOOL_SESSION_END_GRACE": "0",
                                       "INFINIUM_AGENT_ID": AGENT})
    assert worker.run_once(jobs=("ingest", "aggregate")) == {"ingest": True, "aggregate": True}
    engine.dispose()
    ids = {r[0] for r in _query(home, "SELECT trace_id FROM traces")}
    assert len(ids) == 2
    assert _query(home, "SELECT DISTINCT sink, state FROM outbox") == [("infinium", "pending")]
    return ids


def test_sigterm_during_backoff_exits_fast_and_loses_nothing(spool_home, workers, tmp_path):
    # Nothing is recorded before the database exists: create it first.
    db.open_db(spool_home).dispose()
    ids = _delivered_setup(spool_home, tmp_path)
    with Receiver(secret=SECRET) as rx:
        rx.script((503, {"Retry-After": "3"}, {"error": "busy"}),
                  (503, {"Retry-After": "3"}, {"error": "busy"}))
        env = workers.env(INFINIUM_AGENT_ID=AGENT, INFINIUM_AGENT_SECRET=SECRET,
                          INFINIUM_BASE_URL=rx.url)
        first = workers.start(env=env)
        wait_until(lambda: len(rx.requests) == 2 and _query(
            spool_home, "SELECT count(*) FROM outbox WHERE state = 'failed'")[0][0] == 2,
            30, what="both rows to be backing off")
        t0 = time.monotonic()
        first.terminate()
        first.wait(10)
        took = time.monotonic() - t0
        assert took < 5, took
        assert first.returncode == 0
        assert rx.accepted_keys() == set()
        # Nothing lost: both rows still wait for their next attempt.
        assert _query(spool_home, "SELECT DISTINCT state FROM outbox") == [("failed",)]
        # The next worker delivers them (after Retry-After: within its idle window, so
        # they are work), then leaves when idle.
        second = workers.start("--idle-exit", "5", env=env)
        wait_until(lambda: rx.accepted_keys() == ids, 30, what="delivery by the next worker")
        second.wait(30)
        assert second.returncode == 0
        for key in ids:
            reqs = rx.requests_for(key)
            assert [r.status for r in reqs] == [503, 200]
            assert reqs[1].at - reqs[0].at >= 3 - 0.05  # Retry-After honoured
    assert _query(spool_home, "SELECT DISTINCT state FROM outbox") == [("sent",)]


def test_sigterm_during_a_stuck_request_releases_the_lease(spool_home, workers, tmp_path):
    db.open_db(spool_home).dispose()
    ids = _delivered_setup(spool_home, tmp_path)
    with Receiver(secret=SECRET, slow_seconds=20) as rx:
        rx.script("slow")  # the first request hangs; the rest are answered at once
        env = workers.env(INFINIUM_AGENT_ID=AGENT, INFINIUM_AGENT_SECRET=SECRET,
                          INFINIUM_BASE_URL=rx.url, SPOOL_STOP_GRACE="1")
        first = workers.start(env=env)
        wait_until(lambda: len(rx.requests) >= 1, 30, what="a request in flight")
        t0 = time.monotonic()
        first.terminate()
        first.wait(10)
        assert time.monotonic() - t0 < 5
        assert first.returncode == 0
        # Its leases were given back: due now, not after the lease would have expired.
        rows = _query(spool_home, "SELECT state, lease_owner, next_attempt_at FROM outbox")
        assert all(s in ("pending", "failed") and o is None and t <= time.time()
                   for s, o, t in rows), rows
        second = workers.start("--idle-exit", "0.5", env=env)
        wait_until(lambda: rx.accepted_keys() == ids, 30, what="delivery by the next worker")
        second.wait(30)
    # Resent under the same key: a receiver that deduplicates keeps one copy each.
    assert rx.unique_keys() == ids


def test_the_worker_ignores_a_spool_package_in_the_project_directory(spool_home, workers,
                                                                    tmp_path):
    """`python -m spool` run from the project would import the project's own `spool`."""
    import os

    project = tmp_path / "project"
    (project / "spool").mkdir(parents=True)
    marker = tmp_path / "shadow-ran"
    (project / "spool" / "__init__.py").write_text("")
    (project / "spool" / "__main__.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n")
    start = next(p for name, p in fixture_payloads() if name == "SessionStart")
    assert run_hook(start, cwd=project, env=_autostart_env()).returncode == 0
    (pid,) = wait_until(lambda: worker_pids(spool_home), 30, what="the worker")
    assert os.readlink(f"/proc/{pid}/cwd") == "/"  # does not pin the project directory
    wait_until(lambda: len(_started(spool_home)) == 1, 30, what="our worker to run")
    assert not marker.exists()
