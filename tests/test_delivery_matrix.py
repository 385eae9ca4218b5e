"""Delivery fault matrix (issue 8 item 3): every way a receiver can answer, against the real
loopback Receiver, with the dispatcher's clock injected (``now``) and a fixed random source.

For each fault: the final outbox state, the number of requests the receiver saw, the
attempts recorded (``delivery_attempts``: HTTP status and outcome per attempt), that every
copy carried the same Idempotency-Key and payload, and that no retry happened before its
``next_attempt_at``.  Documented behaviours asserted here (spool/retry.py, spool/sinks/
infinium.py):

* 500/502/503/504 (and 408/429...): retried with backoff, then sent; after
  ``SPOOL_MAX_ATTEMPTS`` answered failures the row is dead.
* 429 + Retry-After (seconds or an HTTP date): the next attempt is exactly then, not earlier.
* timeout, connection refused, reset mid-response: retried; they do not burn the attempt
  budget (only ``SPOOL_MAX_AGE`` ends them).
* a slow answer under the timeout: sent at the first attempt.
* a 200 whose body is not JSON: sent (the server accepted it; no response id recorded).
* a 200 whose JSON says ``{"error": ...}`` or ``"success": false``: retried, counted against
  the attempt budget, then dead.
* 301/302/307/308: never followed; the row is held (no retry would help) and the redirect
  target never sees a request, so never the secret.
* 400/404/413/422: dead after one request; 401/403: held.
"""
from __future__ import annotations

import email.utils

import pytest

from spool.deliver import Dispatcher
from spool.demo.receiver import Receiver
from spool.retry import RetryConfig

from support.delivery import SECRET, add_trace, attempts, make_project, outbox

ONE = lambda: 1.0  # noqa: E731 - always the full backoff step
NOW = 1_780_000_000.0  # a realistic epoch, so HTTP dates make sense
CFG = RetryConfig(base=1.0, cap=8.0, max_attempts=5, max_age=3600.0, lease_seconds=30.0)


@pytest.fixture
def receiver_options():  # of conftest's rx
    return {"secret": SECRET, "timeout_seconds": 1.5, "slow_seconds": 0.15}


@pytest.fixture
def project(rx, tmp_path, monkeypatch):
    monkeypatch.setenv("INFINIUM_AGENT_SECRET", SECRET)
    return make_project(tmp_path, rx.url, timeout=0.5)


def drive(d: Dispatcher, engine, tid: str, now: float, passes: int = 12) -> dict:
    """Passes at each row's next_attempt_at until it is final; checks that a pass just
    before next_attempt_at does not touch it.  Returns the final outbox row."""
    for _ in range(passes):
        d.run_once(now)
        row = outbox(engine, tid)
        if row["state"] != "failed":
            return row
        nxt = row["next_attempt_at"]
        assert nxt > now
        assert d.run_once(nxt - 0.01).claimed == 0  # never earlier than next_attempt_at
        now = nxt + 0.001
    return outbox(engine, tid)


def history(engine, tid: str) -> list[tuple]:
    return [(a["http_status"], a["outcome"]) for a in attempts(engine, tid)]


def same_key_and_body(rx, tid: str) -> int:
    reqs = rx.requests_for(tid)
    assert reqs and all(r.key == tid for r in reqs)
    assert len({r.body for r in reqs}) == 1
    assert all(r.headers.get("x-agent-key") == SECRET for r in reqs)
    return len(reqs)


JSON = {"Content-Type": "application/json"}

# name, script, expected (http_status, outcome) per attempt, final state
MATRIX = [
    ("500", [500, 500], [(500, "retry"), (500, "retry"), (200, "sent")], "sent"),
    ("502", [502], [(502, "retry"), (200, "sent")], "sent"),
    ("503", [503, 503, 503], [(503, "retry")] * 3 + [(200, "sent")], "sent"),
    ("504", [504], [(504, "retry"), (200, "sent")], "sent"),
    ("429-no-header", [429], [(429, "retry"), (200, "sent")], "sent"),
    ("timeout", ["timeout"], [(None, "retry"), (200, "sent")], "sent"),
    ("reset", ["reset", "reset"], [(None, "retry"), (None, "retry"), (200, "sent")], "sent"),
    ("slow-under-timeout", ["slow"], [(200, "sent")], "sent"),
    ("invalid-json-200", [(200, JSON, b"{this is not json")], [(200, "sent")], "sent"),
    ("empty-200", [(200, {}, b"")], [(200, "sent")], "sent"),
    ("html-200", [(200, {"Content-Type": "text/html"}, "<html>ok</html>")], [(200, "sent")],
     "sent"),
    ("200-error-body", [(200, {}, {"error": "quota exceeded"})],
     [(200, "retry"), (200, "sent")], "sent"),
    ("200-success-false", [(200, {}, {"success": False, "message": "rejected"})],
     [(200, "retry"), (200, "sent")], "sent"),
    ("400", [(400, {}, {"message": "bad field"})], [(400, "dead")], "dead"),
    ("404", [404], [(404, "dead")], "dead"),
    ("413", [413], [(413, "dead")], "dead"),
    ("422", [(422, {}, {"detail": "nope"})], [(422, "dead")], "dead"),
    ("401", [401], [(401, "held")], "held"),
    ("403", [403], [(403, "held")], "held"),
]


@pytest.mark.parametrize("name,script,expected,final", MATRIX, ids=[m[0] for m in MATRIX])
def test_fault_matrix(engine, rx, project, name, script, expected, final):
    add_trace(engine, "t1", project=project, now=NOW)
    rx.script(*script)
    with Dispatcher(engine, retry=CFG, rand=ONE) as d:
        row = drive(d, engine, "t1", NOW)
        assert row["state"] == final, (row["state"], row["last_error"], row["held_reason"])
        assert history(engine, "t1") == expected
        answered = [s for s, _ in expected]
        assert same_key_and_body(rx, "t1") == len(expected)
        # what the receiver answered matches what spool recorded (None: no answer)
        assert [r.status for r in rx.requests_for("t1")] == answered
        assert row["attempts"] == len(expected)
        if final == "sent":
            assert row["sent_at"] is not None and row["last_error"] is None
        else:  # a kept reason, never the secret
            reason = row["last_error"] or row["held_reason"] or ""
            assert reason and SECRET not in reason
        # a final row is never picked up again
        assert d.run_once(NOW + 10_000).claimed == 0
    assert same_key_and_body(rx, "t1") == len(expected)


def test_sent_attempt_details(engine, rx, project):
    """What each kind of failure records: error class, message, response id."""
    rows = {"to": "timeout", "rs": "reset", "ij": (200, JSON, b"{nope"),
            "eb": (200, {}, {"error": "quota exceeded"}), "ok": "ok"}
    for tid in rows:
        add_trace(engine, tid, project=project, now=NOW)
    rx.script(*rows.values())  # claimed and sent in id order: one script entry each
    with Dispatcher(engine, retry=CFG, rand=ONE) as d:
        r = d.run_once(NOW)
    assert (r.claimed, r.sent, r.failed) == (5, 2, 3)
    by = {tid: attempts(engine, tid)[0] for tid in rows}
    assert by["to"]["error_class"] == "ReadTimeout" and "no answer within 0.5 s" in \
        by["to"]["message"]
    assert by["rs"]["http_status"] is None and by["rs"]["error_class"] in (
        "RemoteProtocolError", "ReadError", "ConnectError")
    assert (by["ij"]["outcome"], by["ij"]["response_id"]) == ("sent", None)
    assert by["eb"]["error_class"] == "ServerReportedError"
    assert by["eb"]["message"] == "quota exceeded"
    assert by["ok"]["response_id"] and by["ok"]["response_id"].startswith("tr-")


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_429_retry_after_is_honoured_exactly(engine, rx, project, form):
    wait = 120
    value = str(wait) if form == "seconds" else email.utils.formatdate(NOW + wait, usegmt=True)
    add_trace(engine, "t1", project=project, now=NOW)
    rx.script((429, {"Retry-After": value}, {"error": "slow down"}))
    with Dispatcher(engine, retry=CFG, rand=ONE) as d:
        assert d.run_once(NOW).failed == 1
        row = outbox(engine, "t1")
        # the computed backoff (1 s) is replaced by the server's wish
        assert NOW + wait <= row["next_attempt_at"] < NOW + wait + 1
        for early in (NOW + 1, NOW + 60, NOW + wait - 0.5):
            assert d.run_once(early).claimed == 0
        assert len(rx.requests) == 1
        assert d.run_once(row["next_attempt_at"]).sent == 1
    assert history(engine, "t1") == [(429, "retry"), (200, "sent")]
    reqs = rx.requests_for("t1")
    assert len(reqs) == 2 and reqs[0].key == reqs[1].key == "t1"


@pytest.mark.parametrize("status,body", [(503, {"error": "down"}),
                                         (200, {"error": "quota exceeded"}),
                                         (200, {"success": False})])
def test_answered_failures_exhaust_the_attempt_budget(engine, rx, project, status, body):
    cfg = RetryConfig(base=1.0, cap=2.0, max_attempts=3, max_age=3600.0)
    add_trace(engine, "t1", project=project, now=NOW)
    rx.script(*[(status, {}, body)] * 10)
    with Dispatcher(engine, retry=cfg, rand=ONE) as d:
        row = drive(d, engine, "t1", NOW)
    assert row["state"] == "dead" and row["attempts"] == 3
    assert row["last_error"].startswith("gave up after 3 attempts")
    assert history(engine, "t1") == [(status, "retry")] * 2 + [(status, "dead")]
    assert same_key_and_body(rx, "t1") == 3


@pytest.mark.parametrize("fault", ["timeout", "reset"])
def test_no_answer_does_not_burn_the_attempt_budget(engine, rx, project, fault):
    cfg = RetryConfig(base=1.0, cap=2.0, max_attempts=1, max_age=3600.0)
    add_trace(engine, "t1", project=project, now=NOW)
    rx.script(fault, fault, fault)
    with Dispatcher(engine, retry=cfg, rand=ONE) as d:
        row = drive(d, engine, "t1", NOW)
    # three failures with max_attempts=1, and still delivered in the end
    assert row["state"] == "sent" and row["attempts"] == 4
    assert history(engine, "t1") == [(None, "retry")] * 3 + [(200, "sent")]
    assert same_key_and_body(rx, "t1") == 4


def test_connection_refused_retries_until_max_age(engine, tmp_path, monkeypatch):
    monkeypatch.setenv("INFINIUM_AGENT_SECRET", SECRET)
    dead_rx = Receiver().start()
    url = dead_rx.url
    dead_rx.stop()  # nothing listens on that port any more
    project = make_project(tmp_path, url, timeout=0.5)
    cfg = RetryConfig(base=1.0, cap=4.0, max_attempts=1, max_age=60.0)
    add_trace(engine, "t1", project=project, now=NOW)
    with Dispatcher(engine, retry=cfg, rand=ONE) as d:
        now = NOW
        for n in range(1, 6):
            assert d.run_once(now).failed == 1
            row = outbox(engine, "t1")
            assert (row["state"], row["attempts"]) == ("failed", n)
            assert d.run_once(row["next_attempt_at"] - 0.01).claimed == 0
            now = row["next_attempt_at"]
        assert d.run_once(NOW + 61).dead == 1
    row = outbox(engine, "t1")
    assert row["state"] == "dead" and "gave up after" in row["last_error"]
    found = attempts(engine, "t1")
    assert len(found) == 6 and all(a["http_status"] is None for a in found)
    assert {a["error_class"] for a in found} == {"ConnectError"}
    assert SECRET not in row["last_error"]


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirect_is_not_followed_and_the_secret_never_reaches_the_target(
        engine, rx, project, status):
    with Receiver() as target:
        location = f"{target.url}/agents/stolen/trace"
        add_trace(engine, "t1", project=project, now=NOW)
        rx.script(*[(status, {"Location": location}, {"moved": True})] * 3)
        with Dispatcher(engine, retry=CFG, rand=ONE) as d:
            row = drive(d, engine, "t1", NOW)
            assert row["state"] == "held"
            assert location in row["held_reason"] and "does not follow" in row["held_reason"]
            # held: later passes do not ask again
            for later in (NOW + 10, NOW + 1000):
                assert d.run_once(later).claimed == 0
        assert target.requests == []
    assert history(engine, "t1") == [(status, "held")]
    assert same_key_and_body(rx, "t1") == 1
