"""The pipelined dispatcher (spool.inflight): with ``rounds`` a pass claims and renders the next
batch while the request before it is in flight, against the real loopback OTLP receiver.  The
transport is httpx's real one with a hook on each request (it runs on the helper thread): it
watches the outbox through its own connection, answers late, fails, or asks the pass to stop."""
from __future__ import annotations

import copy
import json
import threading
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from spool import db
from spool.deliver import Dispatcher
from spool.retry import RetryConfig
from spool.sinks.otlp import OtlpSink

from support.delivery import add_trace, attempts, otlp_project, outbox
from support.otlp_receiver import OtlpReceiver
from support.waiting import wait_until

BODIES = json.loads((Path(__file__).parent / "fixtures" / "otlp" / "bodies.json").read_text())
NOW = 1_780_000_000.0
CFG = RetryConfig(base=1.0, cap=8.0, max_attempts=5, max_age=3600.0, lease_seconds=30.0)
ROWS = 4  # rows per request in these tests


@pytest.fixture
def receiver_class():  # of conftest's rx
    return OtlpReceiver


@pytest.fixture
def project(rx, tmp_path, monkeypatch):
    return otlp_project(tmp_path, rx.url, monkeypatch, timeout_ms=5000)


def batch_ids(n: int) -> list[list[str]]:
    return [[f"b{b}r{i}" for i in range(ROWS)] for b in range(n)]


def add_batches(engine, project, n: int) -> list[list[str]]:
    ids = batch_ids(n)
    for b, batch in enumerate(ids):  # due in batch order: one claim = one batch
        for tid in batch:
            body = copy.deepcopy(BODIES["turn"][0])
            body["trace_id"] = tid
            add_trace(engine, tid, sink="otlp", project=project, body=body, now=NOW - 100 + b)
    return ids


def in_flight(engine) -> int:
    with db.read(engine) as conn:
        return conn.execute(text("SELECT COUNT(*) FROM outbox WHERE state = 'in_flight'")
                            ).scalar()


class Hooked(httpx.HTTPTransport):
    """Real HTTP; ``hook(n)`` runs before the n-th request (1-based) goes out."""

    def __init__(self, hook) -> None:
        super().__init__()
        self.hook = hook
        self.n = 0
        self.threads: set[str] = set()

    def handle_request(self, request):
        self.n += 1
        self.threads.add(threading.current_thread().name)
        self.hook(self.n)
        return super().handle_request(request)


def run(engine, transport, **kw):
    sink = OtlpSink(transport=transport)
    sink.max_batch_rows = ROWS
    try:
        with Dispatcher(engine, sinks={"otlp": sink}, retry=CFG) as d:
            return d.run_once(NOW, limit=ROWS, full_batches=True, **kw)
    finally:
        sink.close()


def test_the_next_batch_is_claimed_while_a_request_is_in_flight(engine, rx, project):
    ids = add_batches(engine, project, 3)
    seen: dict[int, int] = {}

    def hook(n):  # request n waits until batch n+1 is claimed too (not while the last flies)
        if n < 3:
            seen[n] = wait_until(lambda: in_flight(engine) >= 2 * ROWS and in_flight(engine),
                                 timeout=10, what=f"batch {n + 1} claimed during request {n}")

    transport = Hooked(hook)
    res = run(engine, transport, rounds=8)
    assert (res.claimed, res.sent, res.failed, res.released) == (12, 12, 0, 0)
    assert seen == {1: 2 * ROWS, 2: 2 * ROWS}
    assert [len(r.spans()) // 4 for r in rx.requests] == [ROWS] * 3  # one at a time, in order
    assert any(t.startswith("spool-send") for t in transport.threads)
    for tid in sum(ids, []):
        assert outbox(engine, tid, "otlp")["state"] == "sent"
        assert [(a["attempt"], a["outcome"]) for a in attempts(engine, tid)] == [(1, "sent")]
    assert len(rx.spans) == 12 * 4


def test_one_round_sends_one_batch_and_never_uses_a_thread(engine, rx, project):
    add_batches(engine, project, 3)
    transport = Hooked(lambda n: None)
    res = run(engine, transport)  # rounds=1: one claim, one request, waited for in place
    assert (res.claimed, res.sent) == (ROWS, ROWS)
    assert len(rx.requests) == 1 and transport.threads == {threading.current_thread().name}


def test_failed_requests_in_flight_record_their_attempts_and_release_their_rows(
        engine, rx, project):
    """Request 1 gets a 503, request 2's sink raises (a bug): both on the helper thread.  Every
    row gets its attempt and is due again later (failed), none stays in flight; batch 3 is
    sent."""
    ids = add_batches(engine, project, 3)
    rx.script(503)

    def hook(n):
        if n == 2:
            raise RuntimeError("sink bug in flight")

    res = run(engine, Hooked(hook), rounds=8)
    assert (res.claimed, res.sent, res.failed, res.lost) == (12, 4, 8, 0)
    for tid in ids[0]:
        row = outbox(engine, tid, "otlp")
        assert (row["state"], row["lease_owner"], row["last_status"]) == ("failed", None, 503)
        assert row["next_attempt_at"] > NOW
        assert [(a["http_status"], a["outcome"]) for a in attempts(engine, tid)] == [
            (503, "retry")]
    for tid in ids[1]:
        assert outbox(engine, tid, "otlp")["state"] == "failed"
        got = [(a["error_class"], a["outcome"], a["message"]) for a in attempts(engine, tid)]
        assert got == [("SinkError:RuntimeError", "retry", "sink bug in flight")]
    for tid in ids[2]:
        assert outbox(engine, tid, "otlp")["state"] == "sent"
    assert in_flight(engine) == 0


def test_stop_during_a_request_in_flight_loses_nothing(engine, rx, project):
    """Stop is set while request 1 flies and batch 2 is claimed and rendered: request 1 is
    answered and recorded, batch 2 is released unsent, batch 3 is never claimed; the next pass
    sends the rest, each trace once."""
    ids = add_batches(engine, project, 3)
    stop = threading.Event()

    def hook(n):
        if n == 1:
            wait_until(lambda: in_flight(engine) >= 2 * ROWS, timeout=10,
                       what="batch 2 claimed during request 1")
            stop.set()  # shutdown requested mid-flight

    res = run(engine, Hooked(hook), rounds=8, stop=stop)
    assert (res.claimed, res.sent, res.released) == (2 * ROWS, ROWS, ROWS)
    assert len(rx.requests) == 1
    for tid in ids[0]:
        assert outbox(engine, tid, "otlp")["state"] == "sent"
        assert len(attempts(engine, tid)) == 1
    for tid in ids[1] + ids[2]:
        row = outbox(engine, tid, "otlp")
        assert (row["state"], row["lease_owner"], row["attempts"]) == ("pending", None, 0)
        assert attempts(engine, tid) == []
    assert in_flight(engine) == 0
    res = run(engine, Hooked(lambda n: None), rounds=8)
    assert res.sent == 2 * ROWS
    assert len(rx.spans) == 12 * 4 and len(rx.requests) == 3
