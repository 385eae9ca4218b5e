"""The OTLP sink through the real dispatcher against a loopback OTLP receiver that decodes the
protobuf (tests/support/otlp_receiver.py): the fault matrix (OTLP retry rules), batching, byte-identical
resends, session summaries, header secrets, partial success in `spool errors`."""
from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import text

from spool import config, db, deliver, otlp, otlp_wire, queries
from spool.deliver import Dispatcher
from spool import outbox as outbox_mod
from spool.retry import RetryConfig

from support.canary import CANARY_SECRET
from support.delivery import add_trace, attempts, otlp_project, outbox
from support.otlp_receiver import OtlpReceiver

BODIES = json.loads((Path(__file__).parent / "fixtures" / "otlp" / "bodies.json").read_text())
ONE = lambda: 1.0  # noqa: E731 - always the full backoff step
NOW = 1_780_000_000.0
CFG = RetryConfig(base=1.0, cap=8.0, max_attempts=5, max_age=3600.0, lease_seconds=30.0)
PROTOBUF = "application/x-protobuf"


def body(tid: str, n: int = 0) -> dict:
    b = copy.deepcopy(BODIES["turn"][n % 2])
    b["trace_id"] = tid
    return b


@pytest.fixture
def receiver_class():  # of conftest's rx
    return OtlpReceiver


@pytest.fixture
def receiver_options():  # of conftest's rx
    return {"timeout_seconds": 1.5}


@pytest.fixture
def project(rx, tmp_path, monkeypatch):
    return otlp_project(tmp_path, rx.url, monkeypatch, timeout_ms=500)


def add(engine, tid, project, n=0, now=NOW):
    add_trace(engine, tid, sink="otlp", project=project, body=body(tid, n), now=now)


def drive(d: Dispatcher, engine, tid: str, now: float, passes: int = 10) -> dict:
    for _ in range(passes):
        d.run_once(now)
        row = outbox(engine, tid, "otlp")
        if row["state"] != "failed":
            return row
        nxt = row["next_attempt_at"]
        assert d.run_once(nxt - 0.01).claimed == 0  # never earlier than next_attempt_at
        now = nxt + 0.001
    return outbox(engine, tid, "otlp")


MATRIX = [
    ("500-not-retried", [500], [(500, "dead")], "dead"),
    ("502", [502], [(502, "retry"), (200, "sent")], "sent"),
    ("503", [503, 503], [(503, "retry"), (503, "retry"), (200, "sent")], "sent"),
    ("504", [504], [(504, "retry"), (200, "sent")], "sent"),
    ("429", [429], [(429, "retry"), (200, "sent")], "sent"),
    ("reset", ["reset", "reset"], [(None, "retry"), (None, "retry"), (200, "sent")], "sent"),
    ("timeout", ["timeout"], [(None, "retry"), (200, "sent")], "sent"),
    ("400", [(400, {}, "bad span")], [(400, "dead")], "dead"),
    ("404", [404], [(404, "dead")], "dead"),
    ("415", [415], [(415, "held")], "held"),
    ("401", [401], [(401, "held")], "held"),
    ("302", [(302, {"Location": "http://127.0.0.1:1/"}, "")], [(302, "held")], "held"),
    ("partial-success", ["partial"], [(200, "sent")], "sent"),
]


@pytest.mark.parametrize("name,script,expected,final", MATRIX, ids=[m[0] for m in MATRIX])
def test_fault_matrix(engine, rx, project, name, script, expected, final):
    add(engine, "t1", project)
    rx.script(*script)
    with Dispatcher(engine, retry=CFG, rand=ONE) as d:
        row = drive(d, engine, "t1", NOW)
    assert row["state"] == final, (row["state"], row["last_error"], row["held_reason"])
    assert [(a["http_status"], a["outcome"]) for a in attempts(engine, "t1")] == expected
    assert [r.status for r in rx.requests] == [s for s, _ in expected]
    assert len({r.body for r in rx.requests}) == 1  # every attempt the same bytes
    assert rx.requests[0].spans()[0].trace_id.hex() == otlp.otel_trace_id("t1").hex()
    if final == "held":
        assert row["held_reason"] and "\n" not in row["held_reason"]
    if name == "415":
        assert "OTEL_EXPORTER_OTLP_PROTOCOL=http/json" in row["held_reason"]
    if name == "partial-success":
        with db.read(engine) as conn:
            errs = queries.errors(conn, 10)
        assert any("rejected 1 span(s): span too old" in e["message"] for e in errs), errs
        assert attempts(engine, "t1")[0]["error_class"] == "PartialSuccess"


def test_retry_after_is_honoured(engine, rx, project):
    add(engine, "t1", project)
    rx.script((429, {"Retry-After": "7"}, "slow down"), (503, {"Retry-After": "3"}, ""))
    with Dispatcher(engine, retry=CFG, rand=ONE) as d:
        d.run_once(NOW)
        row = outbox(engine, "t1", "otlp")
        assert row["state"] == "failed"
        assert abs(row["next_attempt_at"] - NOW - 7) < 1.0
        assert d.run_once(NOW + 6).claimed == 0
        d.run_once(row["next_attempt_at"] + 0.001)
        row2 = outbox(engine, "t1", "otlp")
        assert abs(row2["next_attempt_at"] - row["next_attempt_at"] - 3) < 1.0
        d.run_once(row2["next_attempt_at"] + 0.001)
    assert outbox(engine, "t1", "otlp")["state"] == "sent"
    assert len(rx.requests) == 3


@pytest.mark.parametrize("endpoint", ["not a url", "ftp://127.0.0.1/x", "http://"])
def test_invalid_endpoint_is_held_without_a_request(engine, rx, project, monkeypatch, endpoint):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint)
    add(engine, "t1", project)
    with Dispatcher(engine, retry=CFG, rand=ONE) as d:
        d.run_once(NOW)
        assert d.run_once(NOW + 3600).claimed == 0  # held: never retried on its own
    row = outbox(engine, "t1", "otlp")
    assert row["state"] == "held" and "not an http(s) URL" in row["held_reason"]
    assert row["attempts"] == 0 and rx.requests == []


def test_json_to_a_protobuf_only_receiver_is_held(engine, project, monkeypatch):
    with OtlpReceiver(accept=(PROTOBUF,)) as strict:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", strict.url)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        add(engine, "t1", project)
        deliver.deliver(engine, NOW, limit=10)
        row = outbox(engine, "t1", "otlp")
        assert row["state"] == "held" and "http/protobuf" in row["held_reason"]
        assert [r.status for r in strict.requests] == [415]
        # the fix: protobuf, then `spool retry` (release_held)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        assert outbox_mod.release_held(engine, NOW + 1) == 1
        deliver.deliver(engine, NOW + 1, limit=10)
        assert outbox(engine, "t1", "otlp")["state"] == "sent"
        assert len(strict.spans) == 4


def test_many_rows_go_in_one_request_and_a_resend_is_byte_identical(engine, rx, project,
                                                                     monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    ids = [f"trace-{i:02d}" for i in range(30)]
    for i, tid in enumerate(ids):
        add(engine, tid, project, n=i)
    res = deliver.deliver(engine, NOW, limit=50)
    assert res.sent == 30
    assert len(rx.requests) == 1 and rx.requests[0].headers["content-encoding"] == "gzip"
    spans = rx.requests[0].spans()
    assert len(spans) == 30 * 4 and len(rx.spans) == 120
    assert {s.trace_id for s in spans} == {otlp.otel_trace_id(t) for t in ids}
    first = rx.requests[0].raw
    # resend everything: the same bytes, nothing new stored
    outbox_mod.requeue(engine, NOW + 1, states=("sent",))
    deliver.deliver(engine, NOW + 1, limit=50)
    assert len(rx.requests) == 2 and rx.requests[1].raw == first
    assert len(rx.spans) == 120
    with db.read(engine) as conn:
        n = conn.execute(text("SELECT COUNT(*) FROM delivery_attempts WHERE sink='otlp' "
                              "AND outcome='sent'")).scalar()
    assert n == 60  # every row's attempt recorded, twice


def test_a_failed_batch_fails_every_row_and_each_is_retried(engine, rx, project):
    for i in range(3):
        add(engine, f"b{i}", project, n=i)
    rx.script(503)
    with Dispatcher(engine, retry=CFG, rand=ONE) as d:
        d.run_once(NOW)
        assert {outbox(engine, f"b{i}", "otlp")["state"] for i in range(3)} == {"failed"}
        d.run_once(NOW + 2)
    assert {outbox(engine, f"b{i}", "otlp")["state"] for i in range(3)} == {"sent"}
    assert [r.status for r in rx.requests] == [503, 200]


def test_session_summary_is_acknowledged_without_a_request(engine, rx, project):
    with db.write(engine) as conn:
        conn.execute(text(
            "INSERT INTO traces (trace_id, kind, project, name, created_at, body) "
            "VALUES ('s1', 'session', :p, 's', :now, :b)"),
            {"p": str(project), "now": NOW, "b": json.dumps(BODIES["session"][0])})
        conn.execute(text("INSERT INTO outbox (trace_id, sink, created_at, next_attempt_at) "
                          "VALUES ('s1', 'otlp', :now, :now)"), {"now": NOW})
    add(engine, "t1", project)
    deliver.deliver(engine, NOW, limit=10)
    assert outbox(engine, "s1", "otlp")["state"] == "sent"
    assert outbox(engine, "t1", "otlp")["state"] == "sent"
    spans = [s for r in rx.requests for s in r.spans()]
    assert len(spans) == 4  # the turn's only
    assert {otlp_wire.attributes(s).get("spool.kind") for s in spans} - {None} == {"turn"}


def test_session_only_granularity_exports_the_summary(engine, rx, project):
    config.write_file(project, {"granularity": "session", "sinks": ["otlp"]})
    with db.write(engine) as conn:
        conn.execute(text(
            "INSERT INTO traces (trace_id, kind, project, name, created_at, body) "
            "VALUES ('s1', 'session', :p, 's', :now, :b)"),
            {"p": str(project), "now": NOW, "b": json.dumps(BODIES["session"][0])})
        conn.execute(text("INSERT INTO outbox (trace_id, sink, created_at, next_attempt_at) "
                          "VALUES ('s1', 'otlp', :now, :now)"), {"now": NOW})
    deliver.deliver(engine, NOW, limit=10)
    assert outbox(engine, "s1", "otlp")["state"] == "sent"
    assert otlp_wire.attributes(rx.requests[0].spans()[0])["spool.kind"] == "session"


def test_headers_are_sent_decoded_and_never_stored(engine, rx, project, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS",
                       f"Authorization=Basic%20{CANARY_SECRET},x-team=a%3Db")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-team=c")
    add(engine, "t1", project)
    rx.script((400, {}, f"bad key {CANARY_SECRET}"))  # a server echoing the secret
    deliver.deliver(engine, NOW, limit=10)
    h = rx.requests[0].headers
    assert h["authorization"] == f"Basic {CANARY_SECRET}" and h["x-team"] == "c"
    row = outbox(engine, "t1", "otlp")
    assert row["state"] == "dead" and "***" in row["last_error"]
    with db.read(engine) as conn:
        dump = json.dumps([list(r) for t in ("outbox", "delivery_attempts", "errors")
                           for r in conn.execute(text(f"SELECT * FROM {t}"))], default=str)
    assert CANARY_SECRET not in dump


def test_headers_over_plain_http_to_a_remote_host_are_refused(engine, project, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector.example.invalid:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"authorization={CANARY_SECRET}")
    add(engine, "t1", project)
    deliver.deliver(engine, NOW, limit=10)
    row = outbox(engine, "t1", "otlp")
    assert row["state"] == "held" and "plain http://" in row["held_reason"]
    assert CANARY_SECRET not in row["held_reason"]


def test_config_file_and_env_precedence(tmp_path):
    from spool.sinks.otlp import load_config

    proj = tmp_path / "p"
    proj.mkdir()
    config.write_file(proj, {"otlp": {"endpoint": "https://otel.example.com/",
                                      "protocol": "http/json", "compression": "gzip",
                                      "timeout_ms": 2500}})
    c = load_config(config.load(proj, env={}), {})
    assert (c.endpoint, c.protocol, c.compression, c.timeout) == (
        "https://otel.example.com/v1/traces", "http/json", "gzip", 2.5)
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/custom",
           "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_TIMEOUT": "x"}
    c = load_config(config.load(proj, env=env), env)
    assert (c.endpoint, c.protocol) == ("http://127.0.0.1:9/custom", "http/protobuf")
    assert "milliseconds" in c.problem
    c = load_config(config.load(None, env={}), {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    assert c.endpoint == "http://localhost:4318/v1/traces" and "grpc" in c.problem
    assert CANARY_SECRET not in repr(load_config(
        config.load(None, env={}), {"OTEL_EXPORTER_OTLP_HEADERS": f"a={CANARY_SECRET}"}))


def _cli(*args, env: dict) -> subprocess.CompletedProcess:
    import os
    import sys

    exe = Path(sys.executable).parent / "spool"
    return subprocess.run([str(exe), *args], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_spool_test_sends_one_span_and_doctor_checks_the_endpoint(rx, project, monkeypatch):
    monkeypatch.chdir(project)
    env = {"OTEL_EXPORTER_OTLP_HEADERS": f"authorization={CANARY_SECRET}"}
    r = _cli("test", "--sink", "otlp", "--json", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] is True and out["status"] == 200
    spans = rx.requests[-1].spans()
    assert [s.name for s in spans] == ["invoke_agent codex"]
    assert rx.requests[-1].headers["authorization"] == CANARY_SECRET
    r = _cli("doctor", "--online", "--json", env={**env, "SPOOL_SINKS": "otlp"})
    checks = [c for c in json.loads(r.stdout)["checks"] if c["name"] == "otlp"]
    assert [c["status"] for c in checks] == ["ok", "ok"], checks
    assert f"{rx.url}/v1/traces" in checks[0]["detail"] and "authorization" in checks[0]["detail"]
    assert "HTTP 200" in checks[1]["detail"]
    assert CANARY_SECRET not in r.stdout + r.stderr
    assert rx.requests[-1].spans() == []  # the online check sends no span
    rx.script(415)
    r = _cli("doctor", "--online", "--json", env={**env, "SPOOL_SINKS": "otlp",
                                                   "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
    checks = [c for c in json.loads(r.stdout)["checks"] if c["name"] == "otlp"]
    assert checks[1]["status"] == "fail" and "415" in checks[1]["detail"], checks
    r = _cli("doctor", "--json", env={"SPOOL_SINKS": "otlp",
                                      "OTEL_EXPORTER_OTLP_ENDPOINT": "nope"})
    checks = [c for c in json.loads(r.stdout)["checks"] if c["name"] == "otlp"]
    assert checks[0]["status"] == "fail" and "not an http(s) URL" in checks[0]["detail"]


@pytest.mark.parametrize("bound", ["rows", "bytes"])
def test_batches_respect_the_sinks_bounds(engine, rx, project, bound):
    from spool.sinks.otlp import OtlpSink

    sink = OtlpSink()
    if bound == "rows":
        sink.max_batch_rows = 5
    else:
        sink.max_batch_bytes = 20_000  # ~3.6 kB per trace: a 12-row batch is halved twice
    for i in range(12):
        add(engine, f"r{i:02d}", project, n=i)
    try:
        res = deliver.deliver(engine, NOW, limit=50, sinks={"otlp": sink})
    finally:
        sink.close()
    assert res.sent == 12
    sizes = [len(r.spans()) // 4 for r in rx.requests]
    assert sum(sizes) == 12 and len(rx.spans) == 48
    if bound == "rows":
        assert sizes == [5, 5, 2]
    else:
        assert len(sizes) > 1 and all(len(r.raw) <= 20_000 for r in rx.requests), sizes


@pytest.mark.parametrize("full", [True, False])
def test_a_full_batches_pass_tops_up_a_batching_sinks_claim(engine, rx, project, tmp_path, full):
    from spool.sinks.file import FileSink
    from spool.sinks.otlp import OtlpSink

    sink = OtlpSink()
    sink.max_batch_rows = 10
    for i in range(2):  # due first: the plain claim takes them before any OTLP row
        add_trace(engine, f"f{i}", sink="file", project=project, body=body(f"f{i}"),
                  now=NOW - 10)
    for i in range(12):
        add(engine, f"o{i:02d}", project, n=i)
    sinks = {"otlp": sink, "file": FileSink(tmp_path / "out")}
    try:
        with Dispatcher(engine, sinks=sinks) as d:
            res = d.run_once(NOW, limit=4, full_batches=full)
            # topped up to one full request (10) beside the 2 file rows; never beyond
            assert (res.claimed, res.sent) == ((12, 12) if full else (4, 4))
            assert [len(r.spans()) // 4 for r in rx.requests] == ([10] if full else [2])
            assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
                "f0.json", "f1.json"]
            res = d.run_once(NOW + 1, limit=4, full_batches=full)
            assert res.claimed == (2 if full else 4)
    finally:
        sink.close()


def test_a_partial_success_of_a_batch_sends_every_row_and_records_one_error(engine, rx,
                                                                            project):
    for i in range(3):
        add(engine, f"p{i}", project, n=i)
    rx.script("partial")
    res = deliver.deliver(engine, NOW, limit=10)
    assert res.sent == 3 and len(rx.requests) == 1
    for i in range(3):
        assert outbox(engine, f"p{i}", "otlp")["state"] == "sent"
        assert [a["error_class"] for a in attempts(engine, f"p{i}")] == ["PartialSuccess"]
    with db.read(engine) as conn:
        errs = [e for e in queries.errors(conn, 10) if "span too old" in e["message"]]
    assert len(errs) == 1 and errs[0]["message"].startswith("sent 3 traces with a warning")


def test_a_batch_with_a_lease_taken_over_mid_send_records_every_rows_attempt(engine, rx,
                                                                             project):
    """The batch's ack and attempts are one statement each: the row whose lease another
    worker took keeps that worker's state and gets a "lease lost" attempt; attempt numbers
    count per row."""
    import httpx

    from spool.sinks.otlp import OtlpSink

    ids = [f"l{i}" for i in range(4)]
    for i, tid in enumerate(ids):
        add(engine, tid, project, n=i)

    class TakeOver(httpx.HTTPTransport):  # real HTTP; l1's lease is taken while in flight
        armed = True

        def handle_request(self, request):
            if self.armed:
                with db.write(engine) as conn:
                    conn.execute(text("UPDATE outbox SET lease_owner = 'other' "
                                      "WHERE trace_id = 'l1'"))
            return super().handle_request(request)

    transport = TakeOver()
    sink = OtlpSink(transport=transport)
    try:
        with Dispatcher(engine, sinks={"otlp": sink}, retry=CFG) as d:
            res = d.run_once(NOW)
            assert (res.sent, res.lost) == (3, 1)
            assert outbox(engine, "l1", "otlp")["state"] == "in_flight"
            assert outbox(engine, "l1", "otlp")["lease_owner"] == "other"
            # the resend of the three: their second attempt
            outbox_mod.requeue(engine, NOW + 1, states=("sent",))
            transport.armed = False
            assert d.run_once(NOW + 1).sent == 3
    finally:
        sink.close()
    got = {t: [(a["attempt"], a["outcome"], (a["message"] or "")[:26]) for a in attempts(engine, t)]
           for t in ids}
    sent = [(1, "sent", ""), (2, "sent", "")]
    assert got == {"l0": sent, "l1": [(1, "sent", "(lease lost, not recorded)")],
                   "l2": sent, "l3": sent}
    assert len(rx.requests) == 2
