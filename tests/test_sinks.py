"""Sinks (spool/sinks): the Infinium wire format against a real loopback receiver, body
shrinking, refusals, and the atomic file sink."""
from __future__ import annotations

import json
import os
import stat

import httpx

from spool import __version__, config
from spool.demo.receiver import Receiver
from spool.retry import classify
from spool.sinks.base import TraceRow
from spool.sinks.file import FileSink
from spool.sinks.infinium import InfiniumSink, check_url, mark_shrunk
from spool.sinks.size import MAX_BODY, shrink

from support.delivery import AGENT, SECRET, body_for, make_project

ENV = {"INFINIUM_AGENT_SECRET": SECRET}


def row(trace_id="t-1", project=None, **body):
    return TraceRow(trace_id=trace_id, kind="turn", project=str(project) if project else None,
                    name="n", body=body_for(trace_id, **body))


def send(sink, r):
    return sink.send(r, sink.render(r))


def test_wire_format(rx, tmp_path):
    project = make_project(tmp_path, rx.url)
    sink = InfiniumSink(env=ENV)
    try:
        out = send(sink, row("t-1", project))
    finally:
        sink.close()
    assert (out.status, out.response_id, classify(out)) == (200, "tr-1", "sent")
    (req,) = rx.requests
    assert req.path == f"/agents/{AGENT}/trace"
    h = req.headers
    assert h["x-agent-id"] == AGENT and h["x-agent-key"] == SECRET
    assert h["content-type"] == "application/json" and h["idempotency-key"] == "t-1"
    assert h["user-agent"].startswith(f"spool/{__version__} ")
    body = req.json()
    assert body["name"] == "trace t-1" and body["input_summary"] == "echo hi"


def test_response_id_from_id_and_200_with_error_body(rx, tmp_path):
    project = make_project(tmp_path, rx.url)
    rx.script((201, {}, {"id": "abc"}), (200, {}, {"success": False, "error": "db down"}))
    sink = InfiniumSink(env=ENV)
    a, b = send(sink, row("a", project)), send(sink, row("b", project))
    sink.close()
    assert a.response_id == "abc" and classify(a) == "sent"
    assert classify(b) == "retry" and b.message == "db down" and b.status == 200


def test_no_secret_or_no_agent_is_held_without_a_request(rx, tmp_path):
    project = make_project(tmp_path, rx.url)
    out = send(InfiniumSink(env={}), row("t", project))  # no env secret, no keyring backend
    assert classify(out) == "held" and not out.attempted
    assert "INFINIUM_AGENT_SECRET" in out.message
    bare = tmp_path / "bare"
    bare.mkdir()
    out = send(InfiniumSink(env=ENV), row("t", bare))
    assert classify(out) == "held" and "agent id" in out.message
    assert rx.requests == []


def test_insecure_http_refused_unless_allowed():
    assert check_url("http://127.0.0.1:9/api", False) is None
    assert check_url("http://localhost:9/api", False) is None
    assert check_url("http://[::1]:9/api", False) is None
    assert "plain http" in check_url("http://example.com/api", False)
    assert check_url("http://example.com/api", True) is None
    assert check_url("https://example.com/api", False) is None
    assert "not an http(s) URL" in check_url("ftp://example.com", False)


def test_insecure_http_outcome(tmp_path):
    seen = []
    transport = httpx.MockTransport(lambda req: seen.append(req) or httpx.Response(200, json={}))
    project = make_project(tmp_path, "http://traces.example.com/api")
    out = send(InfiniumSink(env=ENV, transport=transport), row("t", project))
    assert classify(out) == "held" and "SPOOL_ALLOW_INSECURE_HTTP" in out.message
    assert seen == []
    env = {**ENV, "SPOOL_ALLOW_INSECURE_HTTP": "true"}
    out = send(InfiniumSink(env=env, transport=transport), row("t", project))
    assert classify(out) == "sent" and len(seen) == 1
    assert str(seen[0].url) == f"http://traces.example.com/api/agents/{AGENT}/trace"


def test_redirect_is_not_followed(rx, tmp_path):
    with Receiver() as other:
        rx.script((307, {"Location": f"{other.url}/agents/{AGENT}/trace"}, b""))
        project = make_project(tmp_path, rx.url)
        out = send(InfiniumSink(env=ENV), row("t", project))
        assert out.status == 307 and classify(out) == "held"
        assert "does not follow redirects" in out.message
        assert other.requests == [] and len(rx.requests) == 1


def test_auth_rejection_holds_later_rows_without_requests_until_reset(tmp_path):
    with Receiver(secret="the-right-secret") as rx:
        project = make_project(tmp_path, rx.url)
        sink = InfiniumSink(env=ENV)
        a = send(sink, row("a", project))
        b = send(sink, row("b", project))
        assert (a.status, classify(a), a.attempted) == (401, "held", True)
        assert (b.status, classify(b), b.attempted) == (None, "held", False)
        assert len(rx.requests) == 1 and SECRET not in a.message
        sink.reset()
        assert send(sink, row("b", project)).status == 401
        assert len(rx.requests) == 2


def test_timeout_from_config(tmp_path):
    with Receiver(timeout_seconds=2.0) as rx:
        rx.script("timeout")
        project = make_project(tmp_path, rx.url, timeout=0.2)
        out = send(InfiniumSink(env=ENV), row("t", project))
        assert out.status is None and "Timeout" in out.error_class and classify(out) == "retry"


def test_shrink_keeps_under_the_limit_and_says_so():
    big = "x" * 50_000
    body = {"name": "n", "description": "d", "input_summary": "i", "output_summary": "o",
            "steps": [{"step_number": i, "action": "tool_use", "description": "run",
                       "input_preview": big, "output_preview": big} for i in range(40)],
            "environment": {"framework": "codex-cli", "custom_tags": {"trace_type": "turn"}}}
    out, note = shrink(body, mark=mark_shrunk)
    size = len(json.dumps(out, ensure_ascii=False).encode())
    assert size <= MAX_BODY < len(json.dumps(body).encode())
    assert note and out["environment"]["custom_tags"]["spool_shrunk"] == note
    assert out["description"].endswith("[shrunk by spool]") and len(out["description"]) <= 200
    assert len(out["steps"]) == 40  # trimming previews sufficed
    assert body["steps"][0]["input_preview"] == big  # the input is untouched
    small, none = shrink({"name": "n"})
    assert none is None and small == {"name": "n"}
    # so many steps that even tiny previews do not fit: middle steps go
    many = dict(body, steps=[{"step_number": i, "description": "s" * 30, "input_preview": "p"}
                             for i in range(40_000)])
    out, note = shrink(many)
    assert len(json.dumps(out, ensure_ascii=False).encode()) <= MAX_BODY
    assert "dropped from the middle" in note
    assert out["steps"][0]["step_number"] == 0 and out["steps"][-1]["step_number"] == 39_999


def test_render_shrinks_rather_than_refusing(tmp_path):
    project = make_project(tmp_path, "https://example.com/api")
    sink = InfiniumSink(env=ENV, max_body=200)
    payload = json.loads(sink.render(row("t", project, description="d" * 150)))
    assert "spool_shrunk" in payload["environment"]["custom_tags"]


# --- file sink -----------------------------------------------------------------

def test_file_sink_default_dir_atomic_0600_and_resend_overwrites(spool_home):
    sink = FileSink()
    r = row("0f7c-trace")
    out = send(sink, r)
    path = spool_home / "traces" / "0f7c-trace.json"
    assert classify(out) == "sent" and out.response_id == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    doc = json.loads(path.read_text())
    assert doc["trace_id"] == "0f7c-trace" and doc["name"] == "trace 0f7c-trace"
    assert send(sink, r).response_id == str(path)
    assert json.loads(path.read_text()) == doc
    assert [p.name for p in path.parent.iterdir()] == ["0f7c-trace.json"]  # no temp left


def test_file_sink_project_dir_and_unsafe_ids(tmp_path):
    target = tmp_path / "out"
    config.write_file(tmp_path, {"file_sink_dir": str(target)})
    sink = FileSink()
    assert send(sink, row("abc", tmp_path)).response_id == str(target / "abc.json")
    out = send(sink, row("../escape", tmp_path))
    assert classify(out) == "dead" and not (tmp_path / "escape.json").exists()


def test_file_sink_unwritable_dir_is_retryable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    out = send(FileSink(blocker / "sub"), row("abc"))
    assert classify(out) == "retry" and out.error_class
    assert not os.path.exists(blocker / "sub")


def test_secrets_in_a_trace_are_redacted_before_sending_unless_turned_off(rx, tmp_path):
    token = "ghp_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
    project = make_project(tmp_path, rx.url)
    sink = InfiniumSink(env=ENV)
    try:
        send(sink, row("t-r", project, input_summary=f"export GITHUB_TOKEN={token}"))
    finally:
        sink.close()
    sent = rx.requests[-1]
    assert token.encode() not in sent.body
    assert "[REDACTED:" in sent.json()["input_summary"]
    plain = make_project(tmp_path / "plain", rx.url, redact=False)
    sink = InfiniumSink(env=ENV)
    try:
        send(sink, row("t-p", plain, input_summary=f"export GITHUB_TOKEN={token}"))
    finally:
        sink.close()
    assert token.encode() in rx.requests[-1].body


# --- the registry and the one size policy ---------------------------------------

def test_registry_builds_one_instance_of_each_sink_under_its_name():
    from spool.sinks import SINKS, default_sinks

    sinks = default_sinks(ENV)
    try:
        assert set(sinks) == set(SINKS) >= {"infinium", "file"}
        assert all(type(s) is SINKS[name] and s.name == name for name, s in sinks.items())
    finally:
        for s in sinks.values():
            s.close()


def test_shrink_serves_any_sink_body_shape():
    # another sink's body: its own step list and preview field, no Infinium marks
    body = {"spans": [{"id": i, "attributes": "a" * 5000} for i in range(400)]}
    out, note = shrink(body, 100_000, steps_key="spans", preview_keys=("attributes",))
    assert len(json.dumps(out, ensure_ascii=False).encode()) <= 100_000 < len(json.dumps(body))
    assert "step previews trimmed" in note and "environment" not in out
    assert [s["id"] for s in out["spans"]] == list(range(400))  # trimming sufficed
