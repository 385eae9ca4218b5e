"""End to end (issue 14): the REAL Codex CLI -> spool's hooks -> worker -> OTLP sink -> a REAL
Arize Phoenix (the session-scoped ``phoenix`` fixture), read back through Phoenix's REST API.

Codex runs against the scripted fake model (tests/support/fake_model.py) with the script of
tests/test_e2e.py (two turns, one failing command ``exit 3``).  Not inside ``unshare -n``: the
worker the hooks autostart must reach Phoenix on the host's loopback (all traffic stays on
127.0.0.1; the test config.toml turns Codex's own telemetry off).

Ground truth: the PostModelRequest payloads spool stored (token usage per model request) and
Codex's rollout.  Then every row is delivered a second time: Phoenix must store no new span
(a sentinel trace sent after the resend proves the resend was ingested first).
"""
from __future__ import annotations

import copy
import json
import time
import uuid
from collections import defaultdict

import pytest
from sqlalchemy import text

from spool import db, deliver
from spool import outbox as outbox_mod

from support.codex import codex_binary, make_codex_home, make_codex_project, run_session
from support.e2e import FAILING, FINALS, PROMPTS, read_rollout, script, spool_init

pytestmark = pytest.mark.e2e


def test_real_codex_session_lands_in_a_real_phoenix(tmp_path, phoenix, monkeypatch):
    binary = codex_binary()
    home = make_codex_home(tmp_path)
    proj = make_codex_project(tmp_path)
    project_name = f"spool-e2e-{uuid.uuid4().hex[:8]}"  # one Phoenix project per run
    spool_init(proj, home, "http://127.0.0.1:9", str(uuid.uuid4()), "unused-secret")
    otel = {"SPOOL_SINKS": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": phoenix.url,
            "OTEL_SERVICE_NAME": project_name, "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"}
    env = {"SPOOL_NO_AUTOSTART": "0", "SPOOL_SESSION_END_GRACE": "3",
           "SPOOL_WORKER_IDLE_EXIT": "1", **otel}
    res = run_session(proj, home, PROMPTS, script=script(), env=env, codex_bin=binary,
                      isolate=False, wait_worker=90).check()
    assert not res.worker_timed_out, "the autostarted worker did not finish in time"
    rollout = read_rollout(home)
    sid = rollout["session_id"]
    turns = rollout["turns"]
    assert len(turns) == len(PROMPTS)

    engine = db.open_db()
    try:
        with db.read(engine) as conn:
            outbox = conn.execute(text("SELECT trace_id, sink, state FROM outbox")).all()
            kinds = dict(conn.execute(text("SELECT trace_id, kind FROM traces")).all())
            posts = conn.execute(text("SELECT turn_id, payload FROM raw_events "
                                      "WHERE event = 'PostModelRequest'")).all()
        assert outbox and {(o.sink, o.state) for o in outbox} == {("otlp", "sent")}, outbox
        turn_traces = {t for t, k in kinds.items() if k == "turn"}
        assert len(turn_traces) == len(turns)

        # the turn's PostModelRequest usage, per turn id
        usage = defaultdict(lambda: defaultdict(int))
        n_posts: dict = defaultdict(int)
        for p in posts:
            tu = json.loads(p.payload)["token_usage"]
            n_posts[p.turn_id] += 1
            for k in ("input_tokens", "output_tokens", "cached_input_tokens",
                      "reasoning_output_tokens"):
                usage[p.turn_id][k] += tu[k]
        for t in turns:  # an async hook event lost at Codex's exit: the rollout's usage
            if n_posts[t["turn_id"]] != len(t["usages"]):  # (what spool falls back to)
                usage[t["turn_id"]] = t["usage"]

        n_tools = [4, 2]  # tool calls per turn in script()
        n_chats = [len(t["usages"]) for t in turns]
        expected = sum(1 + c + k for c, k in zip(n_chats, n_tools))
        spans = phoenix.wait_spans(project_name, lambda s: len(s) >= expected, 120)
        assert len(spans) == expected, [s["name"] for s in spans]

        by_trace = defaultdict(list)
        for s in spans:
            by_trace[s["context"]["trace_id"]].append(s)
        # one trace per turn, its id the spool turn trace's id
        assert set(by_trace) == {t.replace("-", "") for t in turn_traces}
        assert {s["span_kind"] for s in spans} == {"AGENT", "LLM", "TOOL"}
        assert all(s["attributes"]["session.id"] == sid for s in spans)
        assert all(s["attributes"]["gen_ai.conversation.id"] == sid for s in spans)
        for trace_spans in by_trace.values():
            roots = [s for s in trace_spans if s["parent_id"] is None]
            assert len(roots) == 1 and roots[0]["span_kind"] == "AGENT"
            root = roots[0]
            assert root["name"] == "invoke_agent codex"
            assert all(s["parent_id"] == root["context"]["span_id"]
                       for s in trace_spans if s is not root)
            i = PROMPTS.index(root["attributes"]["input.value"])
            turn_id = turns[i]["turn_id"]
            assert root["attributes"]["spool.turn_id"] == turn_id
            assert root["attributes"]["output.value"] == FINALS[i]
            llm = [s for s in trace_spans if s["span_kind"] == "LLM"]
            assert len(llm) == n_chats[i]
            u = usage[turn_id]
            a = [s["attributes"] for s in llm]
            assert sum(x["llm.token_count.prompt"] for x in a) == u["input_tokens"]
            assert sum(x["llm.token_count.completion"] for x in a) == u["output_tokens"]
            assert sum(x["llm.token_count.prompt_details.cache_read"] for x in a) == \
                u["cached_input_tokens"]
            assert sum(x["llm.token_count.completion_details.reasoning"] for x in a) == \
                u["reasoning_output_tokens"]
            # spool sends the gen_ai.* names; Phoenix derives the OpenInference ones from them
            assert all(x["llm.model_name"] and x["llm.provider"] == "openai" for x in a)
            tools = [s for s in trace_spans if s["span_kind"] == "TOOL"]
            assert len(tools) == n_tools[i]
            for t in tools:
                ta = t["attributes"]
                assert ta["tool.name"] == ta["gen_ai.tool.name"]
                assert ta["input.value"] == ta["gen_ai.tool.call.arguments"]
                assert ta.get("output.value") == ta.get("gen_ai.tool.call.result")
            assert any(t["attributes"].get("output.value") for t in tools) or not tools
            failing = [s for s in tools if s["status_code"] == "ERROR"]
            if i == 0:
                assert len(failing) == 1
                f = failing[0]["attributes"]
                assert f["process.command_line"] == FAILING and f["process.exit.code"] == 3
                assert f["error.type"] == "ToolError"
            else:
                assert failing == []
        # Phoenix groups the turns into the Codex session
        sessions = phoenix_sessions(phoenix, project_name)
        assert [s["session_id"] for s in sessions] == [sid]
        assert len(sessions[0]["traces"]) == len(turns)

        # --- a second delivery of the same rows adds no span --------------------------------
        for k, v in otel.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("SPOOL_SINKS", "otlp")
        now = time.time()
        requeued = outbox_mod.requeue(engine, now, states=("sent",))
        assert len(requeued) == len(outbox)
        r = deliver.deliver(engine, now, limit=100)
        assert r.sent == len(outbox)
        sentinel = _sentinel_trace(engine, kinds, now)
        deliver.deliver(engine, now, limit=100)
        after = phoenix.wait_spans(project_name, lambda s: any(
            x["context"]["trace_id"] == sentinel for x in s), 60)
        sentinel_spans = [x for x in after if x["context"]["trace_id"] == sentinel]
        assert len(after) == expected + len(sentinel_spans)
    finally:
        engine.dispose()


def phoenix_sessions(phoenix, project: str) -> list[dict]:
    import httpx

    r = httpx.get(f"{phoenix.url}/v1/projects/{project}/sessions", timeout=10)
    r.raise_for_status()
    return r.json()["data"]


def _sentinel_trace(engine, kinds: dict, now: float) -> str:
    """A copy of a stored turn trace under a new id, queued for otlp; its OTel trace id."""
    tid = next(t for t, k in kinds.items() if k == "turn")
    new = str(uuid.uuid4())
    with db.write(engine) as conn:
        row = conn.execute(text("SELECT body, project FROM traces WHERE trace_id = :t"),
                           {"t": tid}).one()
        body = copy.deepcopy(json.loads(row.body))
        body["trace_id"] = new
        conn.execute(text("INSERT INTO traces (trace_id, kind, project, name, created_at, body) "
                          "VALUES (:t, 'turn', :p, 'sentinel', :now, :b)"),
                     {"t": new, "p": row.project, "now": now, "b": json.dumps(body)})
        conn.execute(text("INSERT INTO outbox (trace_id, sink, created_at, next_attempt_at) "
                          "VALUES (:t, 'otlp', :now, :now)"), {"t": new, "now": now})
    return new.replace("-", "")
