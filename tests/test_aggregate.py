"""Aggregation acceptance: the recorded Codex 0.169.0 session through the real hook."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from spool import aggregate, db, ingest
from spool.aggregate import sweep
from spool.render import to_infinium
from spool.rollout import read_incremental
from spool.trace import trace_id

from support.hookproc import run_hook
from support.recorded import fixture_payloads
from support.rows import insert_raw
from support.sessions import EVENTS, SID, project_with_rollout, read_traces, rewrite_payload


TURN1 = "01a20038-88e8-7592-844d-9a4c2114b9d0"
TURN2 = "01a20038-a3f6-7272-b707-136584472438"


def _rollout_turn_usages(path: Path) -> dict:
    """The rollout's last_token_usage lines summed per turn (independent of spool.rollout)."""
    per_turn: dict[str, dict] = {}
    turn = None
    final = None
    for line in path.read_text().splitlines():
        obj = json.loads(line)
        p = obj["payload"]
        if obj["type"] == "turn_context":
            turn = p["turn_id"]
        if obj["type"] == "event_msg" and p.get("type") == "token_count" and p.get("info"):
            acc = per_turn.setdefault(turn, {"input": 0, "cached": 0, "output": 0,
                                             "reasoning": 0, "total": 0, "requests": 0})
            last = p["info"]["last_token_usage"]
            acc["input"] += last["input_tokens"]
            acc["cached"] += last["cached_input_tokens"]
            acc["output"] += last["output_tokens"]
            acc["reasoning"] += last["reasoning_output_tokens"]
            acc["total"] += last["total_tokens"]
            acc["requests"] += 1
            final = p["info"]["total_token_usage"]
    return {"turns": per_turn, "final": final}


def _post_model_usage(turn: str) -> dict:
    acc = {"input": 0, "cached": 0, "output": 0, "reasoning": 0, "total": 0, "requests": 0}
    for name, raw in fixture_payloads():
        obj = json.loads(raw)
        if name == "PostModelRequest" and obj["turn_id"] == turn:
            tu = obj["token_usage"]
            acc["input"] += tu["input_tokens"]
            acc["cached"] += tu["cached_input_tokens"]
            acc["output"] += tu["output_tokens"]
            acc["reasoning"] += tu["reasoning_output_tokens"]
            acc["total"] += tu["total_tokens"]
            acc["requests"] += 1
    return acc


@pytest.fixture
def replayed(tmp_path):
    """The 20 fixture payloads through the real hook subprocess, ingested."""
    project, rollout = project_with_rollout(tmp_path, "both")
    engine = db.open_db()
    for name, payload in fixture_payloads():
        r = run_hook(rewrite_payload(payload, project, rollout), cwd=project)
        assert r.returncode == 0 and r.stdout == b"", (name, r)
    ingest.ingest_all(engine)
    with db.read(engine) as conn:
        assert conn.exec_driver_sql(
            "SELECT count(*) FROM raw_events WHERE status='ok'").scalar() == 20
    return engine, project, rollout


def test_acceptance_two_turns_and_one_summary(replayed):
    engine, project, rollout = replayed
    now = time.time() + 60  # past the SessionEnd grace, well before the TTL
    res = aggregate.aggregate(engine, now)
    assert (res.turn_traces, res.session_traces, res.errors) == (2, 1, 0)

    turns = read_traces(engine, "turn")
    sessions = read_traces(engine, "session")
    assert len(turns) == 2 and len(sessions) == 1
    by_turn = {t["turn_id"]: t["body"] for t in turns}
    assert set(by_turn) == {TURN1, TURN2}
    truth = _rollout_turn_usages(rollout)
    prompts = {TURN1: "Please run echo hello", TURN2: "Now summarise what you did"}
    for tid, body in by_turn.items():
        assert body["trace_id"] == trace_id(SID, tid, "turn")
        assert body["input_summary"] == prompts[tid]
        assert body["output_summary"] == "Done: the command printed hello."
        prompt_steps = [s for s in body["steps"] if s["action"] == "user_prompt"]
        assert [s["input_preview"] for s in prompt_steps] == [prompts[tid]]
        tools = [s for s in body["steps"] if s["action"] == "tool_use"]
        assert len(tools) == 1
        assert tools[0]["command"] == "echo hello" and tools[0]["exit_code"] == 0
        assert tools[0]["output_preview"] == "hello\n"
        assert tools[0]["duration_ms"] >= 0 and "error" not in tools[0]
        models = [s for s in body["steps"] if s["action"] == "model_request"]
        assert len(models) == 2 and all(m["usage"]["total"] > 0 for m in models)
        expected = _post_model_usage(tid)
        assert {k: body["usage"][k] for k in expected} == expected
        assert {k: body["usage"][k] for k in expected} == truth["turns"][tid]
        assert body["usage_source"] == "hooks"
        assert body["event_count"] == 8 and body["errors"] == []
        assert body["environment"]["codex_version"] == "0.169.0"
        assert body["environment"]["git_branch"] == "master"
        assert body["environment"]["model"] == "gpt-fake"
        assert body["environment"]["cwd"] == str(project)
        assert body["environment"]["permission_mode"] == "bypassPermissions"
        assert body["environment"]["session_source"] == "startup"
        assert body["project"] == str(project.resolve())
        assert body["started_at"] <= body["ended_at"] and body["duration_ms"] >= 0
        assert body["current_datetime"].endswith("Z")

    summary = sessions[0]["body"]
    assert summary["name"].startswith("(Summary) ")
    assert summary["revision"] == 1 and summary["supersedes"] is None
    final = truth["final"]
    assert summary["usage"]["input"] == final["input_tokens"]
    assert summary["usage"]["cached"] == final["cached_input_tokens"]
    assert summary["usage"]["output"] == final["output_tokens"]
    assert summary["usage"]["reasoning"] == final["reasoning_output_tokens"]
    assert summary["usage"]["total"] == final["total_tokens"]
    assert summary["usage"]["requests"] == 4
    assert summary["event_count"] == 20
    assert [t["trace_id"] for t in summary["turns"]] == [trace_id(SID, TURN1, "turn"),
                                                        trace_id(SID, TURN2, "turn")]

    with db.read(engine) as conn:
        # One outbox row per trace (no agent id: the file sink), pending.
        rows = conn.exec_driver_sql("SELECT trace_id, sink, state, attempts FROM outbox").fetchall()
        assert sorted(r[0] for r in rows) == sorted(t["trace_id"] for t in turns + sessions)
        assert {(r[1], r[2], r[3]) for r in rows} == {("file", "pending", 0)}
        # Every event consumed by the session trace; turn events by their turn trace.
        ev = conn.exec_driver_sql(
            f"SELECT event, turn_trace_id, session_trace_id FROM {EVENTS}").fetchall()
        assert all(r[2] == summary["trace_id"] for r in ev)
        assert sum(1 for r in ev if r[1]) == 16
        assert all(r[1] for r in ev if r[0] not in ("SessionStart", "SessionEnd"))
        assert conn.exec_driver_sql("SELECT state FROM sessions").scalar() == "final"
        assert conn.exec_driver_sql(
            "SELECT count(*) FROM turns WHERE state != 'traced'").scalar() == 0

    # Re-running creates nothing new.
    again = aggregate.aggregate(engine, now + 1)
    assert again.traces == 0 and sweep(engine, now + 10_000) == 0
    assert len(read_traces(engine)) == 3


def test_infinium_rendering_of_a_real_turn(replayed):
    engine, _, _ = replayed
    aggregate.aggregate(engine, time.time() + 60)
    body = next(t["body"] for t in read_traces(engine, "turn") if t["turn_id"] == TURN1)
    inf = to_infinium(body)
    assert inf["environment"]["custom_tags"]["trace_type"] == "turn"
    assert inf["llm_usage"]["prompt_tokens"] == 3022  # input including cached
    assert inf["llm_usage"]["completion_tokens"] == 314
    assert inf["llm_usage"]["api_calls_count"] == 2
    assert inf["environment"]["custom_tags"]["cached_input_tokens"] == 1500
    assert inf["environment"]["custom_tags"]["reasoning_output_tokens"] == 90
    tool = next(s for s in inf["steps"] if s["action"] == "tool_use")
    assert "echo hello" in tool["description"] and tool["input_preview"] == "echo hello"
    summary = read_traces(engine, "session")[0]["body"]
    assert to_infinium(summary)["environment"]["custom_tags"]["trace_type"] == "session"
    assert to_infinium(summary)["name"].startswith("(Summary) ")


def test_turn_traces_before_session_end(replayed):
    """Closed turns are traced at once; the session waits for its grace period."""
    engine, _, _ = replayed
    with db.read(engine) as conn:
        last = conn.exec_driver_sql("SELECT max(received_at) FROM raw_events").scalar()
    res = aggregate.aggregate(engine, last + 1)  # SessionEnd just arrived: within grace
    assert (res.turn_traces, res.session_traces) == (2, 0)
    with db.read(engine) as conn:
        assert conn.exec_driver_sql("SELECT state FROM sessions").scalar() == "ended"
    res = aggregate.aggregate(engine, last + 11)
    assert (res.turn_traces, res.session_traces, res.sessions_finalised) == (0, 1, 1)


# --- scenarios with events inserted directly (no hook subprocess) -------------------------

T0 = 1_800_000_000.0


def _insert(engine, payloads, t0: float) -> float:
    """Recorded payloads 1 s apart (no cwd column), then ingested."""
    return insert_raw(engine, payloads, t0, step=1.0, cwd=None, parse=True)


def _fixture(project, rollout, strip_usage=False):
    out = []
    for name, raw in fixture_payloads():
        obj = json.loads(rewrite_payload(raw, project, rollout))
        if strip_usage:
            obj.pop("token_usage", None)
        out.append(json.dumps(obj).encode())
    return out


def test_resumed_after_summary_gets_a_new_revision(tmp_path):
    project, rollout = project_with_rollout(tmp_path, "both")
    engine = db.open_db()
    payloads = _fixture(project, rollout)
    t = _insert(engine, payloads[:10], T0)  # turn 1, SessionEnd
    res = aggregate.aggregate(engine, t + 11)
    assert (res.turn_traces, res.session_traces) == (1, 1)
    first = read_traces(engine, "session")[0]["body"]
    assert first["revision"] == 1 and first["event_count"] == 10
    t = _insert(engine, payloads[10:], t + 100)  # codex exec resume: turn 2, SessionEnd
    res = aggregate.aggregate(engine, t + 1)  # within the grace: the turn only
    assert (res.turn_traces, res.session_traces) == (1, 0)
    with db.read(engine) as conn:
        assert conn.exec_driver_sql("SELECT state FROM sessions").scalar() == "ended"
    res = aggregate.aggregate(engine, t + 11)
    assert (res.turn_traces, res.session_traces) == (0, 1)
    second = next(s["body"] for s in read_traces(engine, "session") if s["revision"] == 2)
    assert second["supersedes"] == first["trace_id"]
    assert second["trace_id"] == trace_id(SID, None, "session", 2) != first["trace_id"]
    assert second["event_count"] == 20 and second["usage"]["total"] == 11072
    assert second["name"] == first["name"]
    with db.read(engine) as conn:
        assert {r[0] for r in conn.exec_driver_sql(f"SELECT session_trace_id FROM {EVENTS}")} == {
            second["trace_id"]}


def test_late_event_goes_into_the_session_trace(tmp_path):
    project, rollout = project_with_rollout(tmp_path, "both")
    engine = db.open_db()
    payloads = _fixture(project, rollout)
    t = _insert(engine, payloads[:9], T0)  # turn 1 up to its Stop
    assert aggregate.aggregate(engine, t + 1).turn_traces == 1
    late = json.loads(payloads[5])  # the PostToolUse again, arriving after the trace
    late["tool_use_id"] = "call_late"
    t = _insert(engine, [json.dumps(late).encode(), payloads[9]], t)
    res = aggregate.aggregate(engine, t + 11)
    assert (res.turn_traces, res.session_traces) == (0, 1)
    summary = read_traces(engine, "session")[0]["body"]
    assert summary["late_event_count"] == 1 and summary["event_count"] == 11
    assert any("arrived after their turn was traced" in n for n in summary["notes"])
    with db.read(engine) as conn:
        row = conn.exec_driver_sql(
            f"SELECT late, turn_trace_id, session_trace_id FROM {EVENTS} WHERE id = 10").one()
        assert row == (1, None, summary["trace_id"])
        assert conn.exec_driver_sql("SELECT late_event_count FROM sessions").scalar() == 1


def test_turn_granularity_revises_a_turn_with_late_events(tmp_path):
    project, rollout = project_with_rollout(tmp_path, "turn")
    engine = db.open_db()
    payloads = _fixture(project, rollout)
    t = _insert(engine, payloads[:9], T0)
    assert aggregate.aggregate(engine, t + 1).turn_traces == 1
    t = _insert(engine, [payloads[5], payloads[9]], t)  # a duplicate Post arrives late
    res = aggregate.aggregate(engine, t + 11)
    assert (res.turn_traces, res.session_traces, res.sessions_finalised) == (1, 0, 1)
    traces = read_traces(engine, "turn")
    assert [t_["revision"] for t_ in traces] == [0, 1]
    rev = traces[1]["body"]
    assert rev["supersedes"] == traces[0]["trace_id"] and rev["late_event_count"] == 1
    assert rev["event_count"] == 9
    with db.read(engine) as conn:
        assert conn.exec_driver_sql("SELECT state FROM sessions").scalar() == "final"
        assert {r[0] for r in conn.exec_driver_sql(
            f"SELECT turn_trace_id FROM {EVENTS} WHERE event NOT IN"
            " ('SessionStart', 'SessionEnd')")} == {rev["trace_id"]}


def test_turn_granularity_stale_session_traces_the_open_turn(tmp_path):
    project, rollout = project_with_rollout(tmp_path, "turn")
    engine = db.open_db()
    payloads = _fixture(project, rollout)
    t = _insert(engine, payloads[:6], T0)  # no Stop, no SessionEnd
    assert aggregate.aggregate(engine, t + 100).traces == 0
    assert sweep(engine, t + 599) == 0  # not stale yet
    assert sweep(engine, t + 601) == 1
    (turn,) = read_traces(engine)
    body = turn["body"]
    assert body["kind"] == "turn" and body["incomplete"] and "stale" in body["notes"][0]
    assert body["event_count"] == 5
    with db.read(engine) as conn:
        assert conn.exec_driver_sql("SELECT state FROM sessions").scalar() == "final"
        assert conn.exec_driver_sql("SELECT count(*) FROM turns WHERE state != 'traced'").scalar() == 0


def test_a_live_session_is_never_finalised_by_others(tmp_path):
    project, rollout = project_with_rollout(tmp_path, "session")
    engine = db.open_db()
    payloads = _fixture(project, rollout)
    other = [json.dumps(dict(json.loads(p), session_id="other")).encode() for p in payloads[:10]]
    t = _insert(engine, payloads[:9] + other, T0)  # ours: no SessionEnd; the other one ends
    res = aggregate.aggregate(engine, t + 11)
    assert res.session_traces == 1
    (s,) = read_traces(engine, "session")
    assert s["body"]["session_id"] == "other"
    with db.read(engine) as conn:
        states = dict(conn.exec_driver_sql("SELECT session_id, state FROM sessions").all())
    assert states == {SID: "open", "other": "final"}


def test_empty_session_emits_nothing_and_turn_mode_no_summary(tmp_path):
    project, rollout = project_with_rollout(tmp_path, "both")
    engine = db.open_db()
    payloads = _fixture(project, rollout)
    t = _insert(engine, [payloads[0], payloads[9]], T0)
    res = aggregate.aggregate(engine, t + 11)
    assert res.traces == 0 and res.sessions_finalised == 1
    with db.read(engine) as conn:
        assert conn.exec_driver_sql("SELECT state FROM sessions").scalar() == "final"


def test_usage_from_the_rollout_when_hooks_carry_none(tmp_path):
    project, rollout = project_with_rollout(tmp_path, "both")
    engine = db.open_db()
    t = _insert(engine, _fixture(project, rollout, strip_usage=True), T0)
    aggregate.aggregate(engine, t + 11)
    truth = _rollout_turn_usages(rollout)
    for tr in read_traces(engine, "turn"):
        body = tr["body"]
        assert body["usage_source"] == "rollout"
        assert {k: body["usage"][k] for k in truth["turns"][tr["turn_id"]]} == truth["turns"][tr["turn_id"]]
    summary = read_traces(engine, "session")[0]["body"]
    assert summary["usage"]["total"] == truth["final"]["total_tokens"]
    with db.read(engine) as conn:
        off, ver = conn.exec_driver_sql("SELECT rollout_offset, codex_version FROM sessions").one()
    assert off == rollout.stat().st_size and ver == "0.169.0"
    assert read_incremental(rollout).offset == off


def test_failed_command_is_an_error_step(tmp_path):
    project, rollout = project_with_rollout(tmp_path, "turn")
    text = rollout.read_text().replace('"exit_code":0,"duration":{"secs":0,"nanos":8005}',
                                       '"exit_code":127,"duration":{"secs":0,"nanos":8005}')
    rollout.write_text(text)
    engine = db.open_db()
    t = _insert(engine, _fixture(project, rollout)[:9], T0)
    aggregate.aggregate(engine, t + 1)
    (tr,) = read_traces(engine, "turn")
    (err,) = tr["body"]["errors"]
    assert "127" in err["message"] and "echo hello" in err["message"]
    inf = to_infinium(tr["body"])
    assert inf["errors"][0]["error_type"] == "ToolError" and "127" in inf["errors"][0]["message"]


def test_sinks_from_config_get_one_outbox_row_each(tmp_path):
    project, rollout = project_with_rollout(tmp_path, "turn")
    engine = db.open_db()
    t = _insert(engine, _fixture(project, rollout)[:9], T0)
    aggregate.aggregate(engine, t + 1, env={"SPOOL_SINKS": "infinium,file"})
    with db.read(engine) as conn:
        rows = conn.exec_driver_sql(
            "SELECT sink, state, attempts, created_at, next_attempt_at FROM outbox ORDER BY sink").all()
    assert rows == [("file", "pending", 0, t + 1, t + 1), ("infinium", "pending", 0, t + 1, t + 1)]
