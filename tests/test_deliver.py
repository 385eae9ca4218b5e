"""The dispatcher (spool/deliver.py) against a real receiver on 127.0.0.1.

Time is driven with the injected ``now``; the random source is injected.
"""
from __future__ import annotations

import threading

import keyring
import pytest
from sqlalchemy import text

from spool import credentials, db
from spool.deliver import Dispatcher, deliver
from spool.outbox import release_held, requeue
from spool.demo.receiver import Receiver
from spool.retry import RetryConfig
from spool.sinks.base import Sink
from spool.sinks.infinium import InfiniumSink

from support.delivery import (AGENT, SECRET, MemoryKeyring, add_many, add_trace, attempts,
                              make_project, outbox, states)

ONE = lambda: 1.0  # noqa: E731 - full backoff step
ZERO = lambda: 0.0  # noqa: E731


@pytest.fixture
def receiver_options():  # of conftest's rx
    return {"timeout_seconds": 1.5}


@pytest.fixture
def project(rx, tmp_path, monkeypatch):
    monkeypatch.setenv("INFINIUM_AGENT_SECRET", SECRET)
    return make_project(tmp_path, rx.url, timeout=0.3)


def seq(engine, trace_id):
    return [(a["attempt"], a["http_status"], a["outcome"]) for a in attempts(engine, trace_id)]


def keys(rx, trace_id):
    reqs = rx.requests_for(trace_id)
    assert reqs and all(r.key == trace_id for r in reqs)
    assert len({r.body for r in reqs}) == 1  # the same payload on every attempt
    return len(reqs)


def test_500_then_200(engine, rx, project):
    add_trace(engine, "t1", project=project)
    rx.script(500)
    r = deliver(engine, 1000.0, rand=ONE)
    assert (r.claimed, r.failed) == (1, 1)
    row = outbox(engine, "t1")
    assert row["state"] == "failed" and row["last_status"] == 500 and row["attempts"] == 1
    assert 1001.0 <= row["next_attempt_at"] < 1002.0  # base 1 s * rand 1.0
    assert deliver(engine, 1000.9, rand=ONE).claimed == 0  # not due yet
    r = deliver(engine, 1002.0, rand=ONE)
    assert r.sent == 1
    row = outbox(engine, "t1")
    assert row["state"] == "sent" and row["response_id"] == "tr-2" and row["attempts"] == 2
    assert row["lease_owner"] is None and row["last_error"] is None
    assert seq(engine, "t1") == [(1, 500, "retry"), (2, 200, "sent")]
    assert keys(rx, "t1") == 2
    a = attempts(engine, "t1")
    assert a[0]["error_class"] == "HTTP 500" and a[0]["duration_ms"] > 0
    assert a[1]["response_id"] == "tr-2"


def test_429_retry_after_is_honoured(engine, rx, project):
    add_trace(engine, "t1", project=project)
    rx.script((429, {"Retry-After": "2"}, {"error": "slow down"}))
    deliver(engine, 1000.0, rand=ZERO)  # computed backoff would be 0 s
    row = outbox(engine, "t1")
    first = attempts(engine, "t1")[0]
    assert row["next_attempt_at"] >= first["started_at"] + 2.0
    assert deliver(engine, first["started_at"] + 1.9, rand=ZERO).claimed == 0
    assert deliver(engine, first["started_at"] + 2.5, rand=ZERO).sent == 1
    second = attempts(engine, "t1")[1]
    assert second["started_at"] - first["started_at"] >= 2.0
    assert seq(engine, "t1") == [(1, 429, "retry"), (2, 200, "sent")]
    assert keys(rx, "t1") == 2


def test_timeout_then_success(engine, rx, project):
    add_trace(engine, "t1", project=project)
    rx.script("timeout")
    deliver(engine, 1000.0, rand=ONE)
    a = attempts(engine, "t1")
    assert a[0]["http_status"] is None and "Timeout" in a[0]["error_class"]
    assert outbox(engine, "t1")["state"] == "failed"
    deliver(engine, 1010.0, rand=ONE)
    assert seq(engine, "t1") == [(1, None, "retry"), (2, 200, "sent")]
    assert keys(rx, "t1") == 2


def test_connection_reset_then_success(engine, rx, project):
    add_trace(engine, "t1", project=project)
    rx.script("reset")
    deliver(engine, 1000.0, rand=ONE)
    a = attempts(engine, "t1")
    assert a[0]["http_status"] is None and a[0]["outcome"] == "retry" and a[0]["error_class"]
    deliver(engine, 1010.0, rand=ONE)
    assert seq(engine, "t1") == [(1, None, "retry"), (2, 200, "sent")]
    assert keys(rx, "t1") == 2 and rx.requests[0].action == "reset"


def test_400_is_dead_after_exactly_one_attempt(engine, rx, project):
    add_trace(engine, "t1", project=project)
    rx.script((400, {}, {"message": "steps[0].action is required"}))
    r = deliver(engine, 1000.0)
    assert r.dead == 1
    row = outbox(engine, "t1")
    assert row["state"] == "dead" and "steps[0].action is required" in row["last_error"]
    assert deliver(engine, 1e9).claimed == 0
    assert seq(engine, "t1") == [(1, 400, "dead")]
    assert attempts(engine, "t1")[0]["message"] == "steps[0].action is required"
    assert keys(rx, "t1") == 1
    with db.read(engine) as conn:
        errs = conn.execute(text("SELECT source, message FROM errors")).all()
    assert [(s, "steps[0].action is required" in m) for s, m in errs] == [("deliver:infinium",
                                                                          True)]


def test_401_held_then_delivered_after_credentials_update(engine, tmp_path, monkeypatch):
    old = keyring.get_keyring()
    keyring.set_keyring(MemoryKeyring())
    try:
        monkeypatch.delenv("INFINIUM_AGENT_SECRET", raising=False)
        with Receiver(secret="the-right-secret") as rx:
            project = make_project(tmp_path, rx.url)
            credentials.store(AGENT, rx.url, "an-old-wrong-secret")
            add_many(engine, ["t1", "t2"], project=project)
            with Dispatcher(engine, rand=ONE) as d:  # one worker run: credentials cached
                r = d.run_once(1000.0)
                assert (r.claimed, r.held) == (2, 2)
                assert len(rx.requests) == 1  # t2 held without a request
                for t in ("t1", "t2"):
                    assert outbox(engine, t)["state"] == "held"
                    assert "update-credentials" in outbox(engine, t)["held_reason"]
                assert [outbox(engine, t)["attempts"] for t in ("t1", "t2")] == [1, 0]
                assert d.run_once(1e6).claimed == 0  # held: no attempts burned, ever
                credentials.store(AGENT, rx.url, "the-right-secret")
                assert release_held(engine, 2000.0, sink="infinium") == 2
                r = d.run_once(2000.0)
                assert r.sent == 2
            assert seq(engine, "t1") == [(1, 401, "held"), (2, 200, "sent")]
            assert seq(engine, "t2") == [(1, None, "held"), (2, 200, "sent")]
            assert [outbox(engine, t)["attempts"] for t in ("t1", "t2")] == [2, 1]
            assert keys(rx, "t1") == 2 and keys(rx, "t2") == 1
            assert rx.accepted_keys() == {"t1", "t2"}
    finally:
        keyring.set_keyring(old)
    # the secrets never reached the database
    raw = (db.paths.db_path()).read_bytes() + b"".join(
        p.read_bytes() for p in db.paths.db_path().parent.glob("spool.db-*"))
    assert b"the-right-secret" not in raw and b"an-old-wrong-secret" not in raw


def test_no_credentials_held_then_env_secret_and_release(engine, rx, tmp_path, monkeypatch):
    monkeypatch.delenv("INFINIUM_AGENT_SECRET", raising=False)
    project = make_project(tmp_path, rx.url)
    add_trace(engine, "t1", project=project)
    assert deliver(engine, 1000.0).held == 1
    row = outbox(engine, "t1")
    assert row["state"] == "held" and row["attempts"] == 0 and rx.requests == []
    assert "INFINIUM_AGENT_SECRET" in row["held_reason"]
    monkeypatch.setenv("INFINIUM_AGENT_SECRET", SECRET)
    assert release_held(engine, 1001.0, trace_ids=["t1"]) == 1
    assert deliver(engine, 1001.0).sent == 1 and rx.accepted_keys() == {"t1"}


def test_max_attempts_then_requeue(engine, rx, project):
    add_trace(engine, "t1", project=project)
    rx.script(503, 503, 503)
    cfg = RetryConfig(base=1.0, cap=2.0, max_attempts=3, lease_seconds=30.0)
    with Dispatcher(engine, retry=cfg, rand=ONE) as d:
        for now in (1000.0, 1010.0, 1020.0):
            d.run_once(now)
        row = outbox(engine, "t1")
        assert row["state"] == "dead" and "gave up after 3 attempts" in row["last_error"]
        assert seq(engine, "t1") == [(1, 503, "retry"), (2, 503, "retry"), (3, 503, "dead")]
        preview = requeue(engine, 1030.0, dry_run=True)
        assert [(p["trace_id"], p["state"]) for p in preview] == [("t1", "dead")]
        assert outbox(engine, "t1")["state"] == "dead"  # dry run changed nothing
        assert requeue(engine, 1030.0, trace_ids=["other"]) == []
        done = requeue(engine, 1030.0, trace_ids=["t1"])
        assert [(p["trace_id"], p["state"], p["attempts"]) for p in done] == [("t1", "dead", 3)]
        row = outbox(engine, "t1")
        assert (row["state"], row["attempts"], row["first_attempt_at"]) == ("pending", 0, None)
        assert d.run_once(1030.0).sent == 1
    assert seq(engine, "t1")[-1] == (4, 200, "sent") and keys(rx, "t1") == 4


def test_offline_failures_do_not_burn_the_attempt_budget(engine, tmp_path, monkeypatch):
    monkeypatch.setenv("INFINIUM_AGENT_SECRET", SECRET)
    rx = Receiver().start()
    url = rx.url
    rx.stop()  # nothing listens there now: connection refused
    project = make_project(tmp_path, url)
    add_trace(engine, "t1", project=project)
    cfg = RetryConfig(base=1.0, cap=2.0, max_attempts=2, max_age=100.0)
    with Dispatcher(engine, retry=cfg, rand=ONE) as d:
        for now in (1000.0, 1010.0, 1020.0, 1030.0):
            d.run_once(now)
        assert outbox(engine, "t1")["state"] == "failed"
        d.run_once(1101.0)
    row = outbox(engine, "t1")
    assert row["state"] == "dead" and "gave up after" in row["last_error"]
    assert [a["outcome"] for a in attempts(engine, "t1")] == ["retry"] * 4 + ["dead"]


def test_paused_sink_holds_rows(engine, rx, project):
    add_trace(engine, "t1", project=project)
    with db.write(engine) as conn:
        conn.execute(text("INSERT INTO sink_state (sink, paused, held_reason) "
                          "VALUES ('infinium', 1, 'paused by the user')"))
    r = deliver(engine, 1000.0)
    assert (r.claimed, r.held) == (0, 1)
    assert outbox(engine, "t1")["held_reason"] == "paused by the user" and rx.requests == []
    with db.write(engine) as conn:
        conn.execute(text("UPDATE sink_state SET paused = 0"))
    release_held(engine, 1001.0, sink="infinium")
    assert deliver(engine, 1001.0).sent == 1


def test_file_sink_and_unknown_sink(engine, spool_home):
    add_trace(engine, "f1", sink="file")
    add_trace(engine, "o1", sink="nosuch")
    r = deliver(engine, 1000.0)
    assert (r.sent, r.held) == (1, 1)
    assert (spool_home / "traces" / "f1.json").exists()
    assert "no sink named 'nosuch'" in outbox(engine, "o1", "nosuch")["held_reason"]


def test_expired_lease_is_reclaimed_and_the_late_ack_refused(engine, rx, project):
    """Worker A's lease expires while it is sending; B takes the row and acks; A's ack
    (conditional on its lease) changes nothing."""
    add_trace(engine, "t1", project=project)
    inner = InfiniumSink()
    seen = {}

    class SlowA(Sink):
        name = "infinium"

        def render(self, row):
            return inner.render(row)

        def send(self, row, payload):
            assert outbox(engine, "t1")["lease_owner"] == "A"
            assert deliver(engine, 1000.0 + 10.0, owner="B", limit=5).claimed == 0  # lease ok
            seen["b"] = deliver(engine, 1000.0 + 46.0, owner="B")  # lease expired
            return inner.send(row, payload)

    r = deliver(engine, 1000.0, owner="A", sinks={"infinium": SlowA()})
    inner.close()
    assert (r.claimed, r.sent, r.lost) == (1, 0, 1)
    assert seen["b"].sent == 1
    row = outbox(engine, "t1")
    assert row["state"] == "sent" and row["response_id"] == "tr-1" and row["lease_owner"] is None
    assert keys(rx, "t1") == 2  # A's late request carried the same key
    a = attempts(engine, "t1")
    assert [x["outcome"] for x in a] == ["sent", "sent"] and "lease lost" in a[1]["message"]


def test_stop_releases_unsent_claimed_rows(engine, rx, project):
    add_many(engine, [f"t{i}" for i in range(5)], project=project)
    stop = threading.Event()
    inner = InfiniumSink()

    class Stopper(Sink):
        name = "infinium"

        def render(self, row):
            return inner.render(row)

        def send(self, row, payload):
            stop.set()  # shutdown requested during the first send
            return inner.send(row, payload)

    r = deliver(engine, 1000.0, sinks={"infinium": Stopper()}, stop=stop)
    inner.close()
    assert (r.claimed, r.sent, r.released) == (5, 1, 4)
    assert states(engine) == {"sent": 1, "pending": 4}
    assert deliver(engine, 1000.0).sent == 4
    assert rx.accepted_keys() == {f"t{i}" for i in range(5)} and len(rx.requests) == 5


def test_two_dispatchers_never_hold_the_same_row(engine, rx, project):
    ids = [f"t{i:03d}" for i in range(80)]
    add_many(engine, ids, project=project)
    rx.slow_seconds = 0.005
    rx.script(*(["slow"] * 40))
    lock = threading.Lock()
    in_flight: dict[str, str] = {}
    overlaps: list[str] = []
    barrier = threading.Barrier(2)

    def make(owner):
        inner = InfiniumSink()

        class Tracking(Sink):
            name = "infinium"

            def render(self, row):
                return inner.render(row)

            def send(self, row, payload):
                with lock:
                    if row.trace_id in in_flight:
                        overlaps.append(row.trace_id)
                    in_flight[row.trace_id] = owner
                try:
                    return inner.send(row, payload)
                finally:
                    with lock:
                        in_flight.pop(row.trace_id, None)

            def close(self):
                inner.close()

        return Tracking()

    results = {}

    def run(owner):
        sinks = {"infinium": make(owner)}
        e = db.make_engine(db.paths.db_path())
        barrier.wait()
        got = []
        while True:
            r = deliver(e, owner=owner, limit=4, sinks=sinks)
            if r.claimed == 0 and states(e).get("pending", 0) == 0:
                break
            got.extend(t for t, _s, _st in r.outcomes)
        sinks["infinium"].close()
        e.dispose()
        results[owner] = got

    threads = [threading.Thread(target=run, args=(o,)) for o in ("A", "B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert overlaps == []
    assert results["A"] and results["B"]  # both did work
    assert sorted(results["A"] + results["B"]) == ids  # each row handled by exactly one
    assert len(rx.requests) == 80 and rx.accepted_keys() == set(ids)
    assert states(engine) == {"sent": 80}


def test_claim_uses_the_partial_index(engine):
    with db.read(engine) as conn:
        plan = " ".join(str(r[-1]) for r in conn.execute(text(
            "EXPLAIN QUERY PLAN SELECT id FROM outbox INDEXED BY ix_outbox_due "
            "WHERE state IN ('pending', 'failed', 'in_flight') AND next_attempt_at <= 1 "
            "AND (state <> 'in_flight' OR lease_until < 1) ORDER BY next_attempt_at LIMIT 5")))
    assert "ix_outbox_due" in plan and "TEMP B-TREE" not in plan


def test_release_leases_of_a_stopping_worker(engine, rx, project):
    from spool.outbox import release_leases

    add_many(engine, ["t1", "t2"], project=project)
    with db.write(engine) as conn:
        conn.execute(text("UPDATE outbox SET state='in_flight', lease_owner='W', "
                          "lease_until=2000, next_attempt_at=2000"))
        conn.execute(text("UPDATE outbox SET attempts=1 WHERE trace_id='t2'"))
    assert release_leases(engine, "other", 1000.0) == 0
    assert release_leases(engine, "W", 1000.0) == 2
    assert states(engine) == {"pending": 1, "failed": 1}
    assert deliver(engine, 1000.0).sent == 2


def test_a_paused_project_sends_nothing_until_resumed(engine, rx, project, tmp_path):
    """Traces made from events recorded before `spool pause` wait too."""
    from spool import queries

    other = make_project(tmp_path / "elsewhere", rx.url, timeout=0.3)
    add_trace(engine, "paused-1", project=project / "sub")  # a sub-directory of the project
    add_trace(engine, "other-1", project=other)
    with db.write(engine) as conn:
        queries.pause(conn, str(project), 1000.0)
    r = deliver(engine, 1000.0, rand=ONE)
    assert (r.claimed, r.sent) == (1, 1)
    assert outbox(engine, "paused-1")["state"] == "held"
    assert outbox(engine, "paused-1")["held_reason"] == queries.PAUSED_REASON
    assert rx.requests_for("paused-1") == []
    assert deliver(engine, 2000.0, rand=ONE).claimed == 0  # still waiting
    with db.write(engine) as conn:
        queries.resume(conn, str(project), 3000.0)
    r = deliver(engine, 3000.0, rand=ONE)
    assert (r.claimed, r.sent) == (1, 1)
    assert keys(rx, "paused-1") == 1


def test_outbox_states_are_the_schema_states():
    from spool.outbox import OutboxState
    from spool.schema import OUTBOX_STATES

    assert tuple(s.value for s in OutboxState) == OUTBOX_STATES
    assert OutboxState.SENT == "sent" and str(OutboxState.IN_FLIGHT) == "in_flight"
