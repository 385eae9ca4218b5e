"""End to end with the REAL Codex CLI (issue 7): hooks -> spool -> worker -> Infinium.

A scratch git project and an isolated CODEX_HOME; the installed ``spool`` CLI
runs ``spool init --no-interactive --granularity both`` (the real hooks.json,
the real trust step through ``codex app-server``; the agent secret only in the
environment); then ``codex exec`` and ``codex exec resume --last`` (stdin
/dev/null) against the scripted fake model (tests/support/fake_model.py).  The hooks
autostart spool's worker, exactly as users get it, which delivers to a loopback
Infinium-compatible receiver (spool.demo.receiver.Receiver).  Everything - fake
model, Codex, hooks, worker, receiver - runs inside ``unshare -n`` (loopback
only) when the machine allows it (tests/support/codex.py).

The ground truth is what Codex itself wrote (its rollout file: turn ids,
``token_count`` lines, CommandExecution exit codes, last agent messages) and
what the fake model served; the assertions compare the traces the receiver got
against it.  The negative test shows the trust step is what makes capture work.
"""
from __future__ import annotations

import json
import uuid
from collections import Counter, defaultdict

import pytest
from sqlalchemy import text

from spool import db, paths

from support.codex import codex_binary, free_port, make_codex_home, make_codex_project, run_session
from support.e2e import (assert_hook_counts, FAILING, PROMPTS, FINALS, script, spool_init, codex_run_env, read_rollout,
                         expected_hook_counts)
from support.fake_model import ToolCall

pytestmark = pytest.mark.e2e




def tool_steps(body: dict) -> list[dict]:
    return [s for s in body["steps"] if s["action"] == "tool_use"]


# --- the tests -------------------------------------------------------------------------------


def test_real_codex_session_is_traced_and_delivered_to_infinium(tmp_path):
    binary = codex_binary()
    home = make_codex_home(tmp_path)
    proj = make_codex_project(tmp_path)
    agent_id = str(uuid.uuid4())
    secret = "e2e-" + uuid.uuid4().hex
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"

    out = spool_init(proj, home, base_url, agent_id, secret).stdout
    assert "trusted the project" in out and "trusted spool's" in out, out
    assert secret not in out
    assert secret not in (proj / ".spool" / "config.json").read_text()

    sc = script()
    res = run_session(proj, home, PROMPTS, script=sc, env=codex_run_env(secret), codex_bin=binary,
                      receiver_port=port, wait_worker=45).check()
    assert not res.worker_timed_out, "the autostarted worker did not finish in time"
    print(f"e2e timings: codex runs {[round(r.seconds, 2) for r in res.runs]} s, "
          f"worker done {res.worker_wait_seconds:.2f} s after the last run "
          f"(isolated: {res.isolated})")
    assert res.served and all(s["kind"] in ("tool_calls", "final") for s in res.served), res.served

    rollout = read_rollout(home)
    turns = rollout["turns"]
    assert len(turns) == len(PROMPTS)
    assert [t["last_message"] for t in turns] == FINALS
    # sanity of the ground truth: the rollout's per-request usage is what the model sent
    sent = [s["usage"] for s in res.served]
    logged = [u for t in turns for u in t["usages"]]
    assert [(u["input_tokens"], u["output_tokens"]) for u in logged] == \
        [(u["input_tokens"], u["output_tokens"]) for u in sent]
    assert len({u["input_tokens"] for u in logged}) == len(logged)  # distinct per response

    # --- every hook event of the run is stored ---------------------------------------------
    engine = db.open_db()
    try:
        with db.read(engine) as conn:
            rows = conn.execute(text("SELECT event, session_id, status FROM raw_events")).all()
            stored = {r.trace_id: json.loads(r.body) for r in conn.execute(
                text("SELECT trace_id, body FROM traces")).all()}
            outbox = conn.execute(text("SELECT trace_id, sink, state FROM outbox")).all()
    finally:
        engine.dispose()
    assert_hook_counts(Counter(r.event for r in rows), expected_hook_counts(res, len(PROMPTS)))
    assert {r.status for r in rows} == {"ok"}
    assert {r.session_id for r in rows} == {rollout["session_id"]}
    assert outbox and {(o.sink, o.state) for o in outbox} == {("infinium", "sent")}, outbox
    for f in paths.spool_home().iterdir():  # the secret never touched spool's files
        assert not f.is_file() or secret.encode() not in f.read_bytes(), f

    # --- what the receiver got ---------------------------------------------------------------
    received = res.received
    assert received, "nothing reached the receiver"
    assert all(r["path"] == f"/agents/{agent_id}/trace" for r in received)
    assert all(r["agent_key_ok"] for r in received), "the secret did not reach the receiver"
    assert all(r["status"] == 200 for r in received), [(r["status"], r["action"]) for r in received]
    assert all(r["key"] for r in received), "a request without Idempotency-Key"
    keys_of_trace = defaultdict(set)
    for r in received:
        keys_of_trace[json.loads(r["body"])["environment"]["custom_tags"]["trace_id"]].add(r["key"])
    assert all(keys == {tid} for tid, keys in keys_of_trace.items()), keys_of_trace
    kept: dict[str, dict] = {}  # what a receiver deduplicating by Idempotency-Key stores
    for r in received:
        kept.setdefault(r["key"], json.loads(r["body"]))
    ids = [b["environment"]["custom_tags"]["trace_id"] for b in kept.values()]
    assert len(ids) == len(set(ids))
    assert set(ids) == set(stored), "a trace was made but not delivered (or vice versa)"

    by_kind = defaultdict(list)
    for b in kept.values():
        by_kind[b["environment"]["custom_tags"]["trace_type"]].append(b)
    assert set(by_kind) == {"turn", "session"}

    # one trace per turn, in the rollout's turns
    turn_bodies = {b["environment"]["custom_tags"]["turn_id"]: b for b in by_kind["turn"]}
    assert len(by_kind["turn"]) == len(turns)
    assert set(turn_bodies) == {t["turn_id"] for t in turns}

    commands = rollout["commands"]
    script_cmds = [[c.cmd for step in turn for c in step if isinstance(c, ToolCall)]
                   for turn in sc]
    for i, t in enumerate(turns):
        body = turn_bodies[t["turn_id"]]
        tags = body["environment"]["custom_tags"]
        assert tags["session_id"] == rollout["session_id"]
        assert not tags["incomplete"]
        # the prompt and the last assistant message
        assert body["input_summary"] == PROMPTS[i]
        assert body["output_summary"] == t["last_message"] == FINALS[i]
        # every tool call a step, with its exit code; the failing one an error
        steps = tool_steps(body)
        assert sorted(s["input_preview"] for s in steps) == sorted(script_cmds[i]), steps
        assert sorted(s["input_preview"] for s in steps) == sorted(
            commands[c]["command"][-1] for c in t["commands"])  # argv: [bash, -lc, cmd]
        for s in steps:
            if s["input_preview"] == FAILING:
                assert s["error"]["error_type"] == "ToolError"
                assert "code 3" in s["error"]["message"] and FAILING in s["error"]["message"], s
            else:
                assert "error" not in s, s
        failing = [s for s in steps if "error" in s]
        assert [e["step_number"] for e in body["errors"]] == [s["step_number"] for s in failing]
        assert len(failing) == (1 if FAILING in script_cmds[i] else 0)
        stored_steps = [s for s in stored[tags["trace_id"]]["steps"] if s["action"] == "tool_use"]
        assert {s["tool_use_id"]: s["exit_code"] for s in stored_steps} == \
            {c: commands[c]["exit_code"] for c in t["commands"]}
        assert set(t["commands"]) == {c for sv in res.served if sv["turn"] == i
                                      for c in sv["call_ids"]}  # the calls the model made
        assert sorted(s["exit_code"] for s in stored_steps) == sorted(
            3 if c == FAILING else 0 for c in script_cmds[i])
        # token totals = the sum of this turn's last_token_usage lines in the rollout
        u = body["llm_usage"]
        assert u["prompt_tokens"] == t["usage"]["input_tokens"]
        assert u["completion_tokens"] == t["usage"]["output_tokens"]
        assert u["total_tokens"] == t["usage"]["total_tokens"]
        assert tags["cached_input_tokens"] == t["usage"]["cached_input_tokens"]
        assert tags["reasoning_output_tokens"] == t["usage"]["reasoning_output_tokens"]
        assert u["api_calls_count"] == len(t["usages"])

    # the session summary (granularity both); a resume after an early summary makes a
    # new revision superseding it: the latest one covers the whole session
    sessions = sorted(by_kind["session"], key=lambda b: b["environment"]["custom_tags"]["revision"])
    for older, newer in zip(sessions, sessions[1:]):
        assert newer["environment"]["custom_tags"]["supersedes"] == \
            older["environment"]["custom_tags"]["trace_id"]
    summary = sessions[-1]
    print(f"e2e: {len(received)} requests, {len(kept)} traces kept, "
          f"{len(sessions)} session summary revision(s)")
    stags = summary["environment"]["custom_tags"]
    assert stags["session_id"] == rollout["session_id"]
    assert summary["name"].startswith("(Summary) ")
    assert all(p in summary["input_summary"] for p in PROMPTS)
    assert summary["output_summary"] == FINALS[-1]
    assert sorted(s["input_preview"] for s in tool_steps(summary)) == \
        sorted(c for cmds in script_cmds for c in cmds)
    assert [s["input_preview"] for s in tool_steps(summary) if "error" in s] == [FAILING]
    total = rollout["total"]
    assert summary["llm_usage"]["prompt_tokens"] == total["input_tokens"]
    assert summary["llm_usage"]["completion_tokens"] == total["output_tokens"]
    assert summary["llm_usage"]["total_tokens"] == total["total_tokens"]
    assert stags["cached_input_tokens"] == total["cached_input_tokens"]
    assert stags["reasoning_output_tokens"] == total["reasoning_output_tokens"]
    assert summary["llm_usage"]["api_calls_count"] == len(res.served)
    assert stags["event_count"] == len(rows)


def test_without_the_trust_step_codex_runs_no_hook_and_nothing_is_stored(tmp_path):
    """`spool init --no-trust-project`: the same run stores no event, sends no trace."""
    binary = codex_binary()
    home = make_codex_home(tmp_path)
    proj = make_codex_project(tmp_path)
    secret = "e2e-" + uuid.uuid4().hex
    port = free_port()
    out = spool_init(proj, home, f"http://127.0.0.1:{port}", str(uuid.uuid4()), secret,
                     "--no-trust-project").stdout
    assert "will NOT run" in out
    assert (proj / ".codex" / "hooks.json").exists()  # installed, yet not run

    res = run_session(proj, home, PROMPTS, script=script(), env=codex_run_env(secret),
                      codex_bin=binary, receiver_port=port, wait_worker=20).check()
    assert len(res.served) == sum(len(t) for t in script())  # Codex did run the whole script
    assert not res.worker_timed_out
    engine = db.open_db()
    try:
        with db.read(engine) as conn:
            n = conn.execute(text("SELECT count(*) FROM raw_events")).scalar_one()
    finally:
        engine.dispose()
    assert n == 0
    assert res.received == []
