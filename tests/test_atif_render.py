"""The pure parts of the ATIF export: spool.atif.render and spool.transcript, checked
with Harbor's own pydantic models (the ones its validator uses)."""
from __future__ import annotations

import json

import pytest

from spool import atif, transcript
from spool.cost import add_cost
from spool.trace import INPUT_SUMMARY_MAX, Limits
from support.atif import harbor_validate

Trajectory = pytest.importorskip(
    "harbor.models.trajectories", reason="Harbor's validator: run scripts/test.sh").Trajectory


def valid(doc: dict) -> dict:
    Trajectory.model_validate(doc)  # raises on any schema violation
    return doc


def step(number, action, t, **kw):
    return {"number": number, "action": action, "description": kw.pop("description", action),
            "turn_id": kw.pop("turn_id", "t1"), "started_at": t, **kw}


def turn_body(steps, **kw):
    body = {"schema": "spool.trace/1", "trace_id": "tr-1", "kind": "turn", "turn_id": "t1",
            "revision": 0, "input_summary": "do it", "output_summary": "all done",
            "incomplete": False, "environment": {"model": "m1", "codex_version": "0.1"},
            "steps": steps}
    body.update(kw)
    return body


USAGE = {"input": 10, "cached": 4, "cache_write": 0, "output": 3, "reasoning": 1, "total": 13,
         "requests": 1}


def test_without_a_rollout_hook_names_and_the_turns_final_answer():
    body = turn_body([
        step(1, "user_prompt", 1.0, input_preview="do it"),
        step(2, "model_request", 2.0, usage=USAGE, model="m1"),
        step(3, "tool_use", 3.0, tool_name="Bash", tool_use_id="c1", command="false",
             exit_code=1, status="failed", output_preview="",
             error={"type": "ToolError", "message": "exited 1", "recoverable": True}),
        step(4, "model_request", 4.0, usage=USAGE),
    ])
    doc = valid(atif.render(atif.Session("s1", [body])))
    s = doc["steps"]
    assert [x["source"] for x in s] == ["user", "agent", "agent"]
    assert s[0]["message"] == "do it" and s[0]["timestamp"] == "1970-01-01T00:00:01.000Z"
    (tc,) = s[1]["tool_calls"]
    assert tc == {"tool_call_id": "c1", "function_name": "Bash",
                  "arguments": {"command": "false"},
                  "extra": {"tool_name": "Bash", "command": "false"}}
    (res,) = s[1]["observation"]["results"]
    assert res["source_call_id"] == "c1" and res["extra"]["exit_code"] == 1
    assert res["extra"]["error"]["type"] == "ToolError"
    assert s[1]["message"] == "" and s[2]["message"] == "all done"
    assert doc["final_metrics"]["total_prompt_tokens"] == 20
    assert doc["final_metrics"]["extra"]["source"] == "sum of the steps' usage"
    assert "no rollout total_token_usage" in doc["notes"]


def test_system_steps_orphan_tool_calls_and_an_empty_session():
    body = turn_body([
        step(1, "tool_use", 1.0, tool_name="Bash", tool_use_id="c9", command="ls",
             exit_code=0, output_preview="a"),
        step(2, "compaction", 2.0, description="Context compaction (auto)"),
        step(3, "subagent_start", 3.0, description="Subagent started: worker", agent_id="a1"),
        step(4, "interrupt", 4.0, description="Turn interrupted"),
    ], incomplete=True)
    doc = valid(atif.render(atif.Session("s1", [body])))
    s = doc["steps"]
    assert [x["source"] for x in s] == ["agent", "system", "system", "system"]
    assert s[0]["llm_call_count"] == 0 and "metrics" not in s[0]
    assert s[2]["extra"]["agent_id"] == "a1"
    assert "turn t1: incomplete" in doc["notes"]
    empty = valid(atif.render(atif.Session("s2", [turn_body([])])))
    assert len(empty["steps"]) == 1 and empty["steps"][0]["source"] == "system"


def test_the_summary_wins_a_turn_it_knows_more_of_and_lifecycle_steps_are_left_out():
    turn = turn_body([step(1, "user_prompt", 1.0, input_preview="do it"),
                      step(2, "model_request", 2.0, usage=USAGE)])
    summary = {"kind": "session", "trace_id": "tr-s", "revision": 1, "turns": [
        {"turn_id": "t1", "complete": True}], "environment": {}, "steps": [
        step(1, "session_start", 0.5, turn_id=None),
        step(2, "user_prompt", 1.0, input_preview="do it"),
        step(3, "model_request", 2.0, usage=USAGE),
        step(4, "tool_use", 2.5, tool_name="Bash", tool_use_id="late", command="x"),
        step(5, "session_end", 9.0, turn_id=None)]}
    doc = valid(atif.render(atif.Session("s1", [turn, summary])))
    assert [x["source"] for x in doc["steps"]] == ["user", "agent"]
    assert doc["steps"][1]["tool_calls"][0]["tool_call_id"] == "late"
    assert doc["steps"][1]["message"] == "all done"  # the turn trace's final answer
    assert [t["trace_id"] for t in doc["extra"]["spool"]["traces"]] == ["tr-1", "tr-s"]


def rollout_lines(items):
    return [json.dumps(i).encode() + b"\n" for i in items]


def test_transcript_groups_a_response_by_the_usage_line_after_it():
    meta = {"internal_chat_message_metadata_passthrough": {"turn_id": "t1"}}
    lines = rollout_lines([
        {"type": "turn_context", "payload": {"turn_id": "t1"}},
        {"type": "event_msg", "payload": {"type": "item_completed", "turn_id": "t1",
                                          "item": {"type": "UserMessage",
                                                   "content": [{"type": "text", "text": "go"}]}}},
        {"type": "response_item", "payload": {"type": "reasoning", "summary": [
            {"type": "summary_text", "text": "plan"}], **meta}},
        {"type": "response_item", "payload": {"type": "function_call", "name": "exec_command",
                                              "arguments": "{\"cmd\": \"a\"}", "call_id": "c1",
                                              **meta}},
        {"type": "response_item", "payload": {"type": "custom_tool_call", "name": "apply_patch",
                                              "input": "*** Begin Patch", "call_id": "c2"}},
        {"type": "token_usage_record", "payload": {"turn_id": "t1"}},
        {"type": "response_item", "payload": {"type": "function_call_output", "call_id": "c1",
                                              "output": "out-a"}},
        {"type": "response_item", "payload": {"type": "custom_tool_call_output",
                                              "call_id": "c2", "output": {"content": "ok"}}},
        {"type": "event_msg", "payload": {"type": "token_count", "info": {"x": 1}}},
        {"type": "response_item", "payload": {"type": "message", "role": "assistant",
                                              "content": [{"type": "output_text", "text": "done"}],
                                              **meta}},
        "not json",
    ])
    t = transcript.parse_lines(lines + [b"{broken\n"])
    turn = t.turn("t1")
    assert turn.prompts == ["go"]
    assert len(turn.responses) == 2
    first, second = turn.responses
    assert first.reasoning_text == "plan" and first.message == ""
    assert [(c.call_id, c.name, c.arguments) for c in first.calls] == [
        ("c1", "exec_command", {"cmd": "a"}), ("c2", "apply_patch", "*** Begin Patch")]
    assert second.message == "done" and not second.calls
    assert t.outputs == {"c1": "out-a", "c2": "ok"}

    body = turn_body([step(1, "user_prompt", 1.0, input_preview="g"),
                      step(2, "model_request", 2.0, usage=USAGE),
                      step(3, "tool_use", 3.0, tool_name="Bash", tool_use_id="c1", command="a",
                           output_preview="out-a"),
                      step(4, "tool_use", 3.5, tool_name="apply_patch", tool_use_id="c2",
                           output_preview="o"),
                      step(5, "model_request", 4.0, usage=USAGE)])
    doc = valid(atif.render(atif.Session("s1", [body], transcript=t, full=True,
                                         rollout_total={"input": 99, "output": 9, "cached": 1,
                                                        "reasoning": 2, "total": 108})))
    s = doc["steps"]
    assert s[0]["message"] == "go" and s[1]["reasoning_content"] == "plan"
    assert [tc["arguments"] for tc in s[1]["tool_calls"]] == [{"cmd": "a"},
                                                              {"input": "*** Begin Patch"}]
    assert [r["content"] for r in s[1]["observation"]["results"]] == ["out-a", "ok"]
    assert s[2]["message"] == "done"
    assert doc["final_metrics"]["total_prompt_tokens"] == 99


def test_rollout_text_is_redacted_before_it_is_clipped():
    secret = "ghp_" + "B" * 36
    t = transcript.Transcript(turns={"t1": transcript.Turn(
        prompts=["x" * (INPUT_SUMMARY_MAX - 10) + " " + secret])})  # the cut is mid-secret
    body = turn_body([step(1, "user_prompt", 1.0, input_preview="x")])
    doc = valid(atif.render(atif.Session("s1", [body], transcript=t,
                                         limits=Limits(200, 300))))
    msg = doc["steps"][0]["message"]
    assert "BBBB" not in json.dumps(doc) and msg.endswith(" [REDAC...")
    assert len(msg) == INPUT_SUMMARY_MAX


def test_cost_per_agent_step_and_in_final_metrics_unknown_model_left_out(tmp_path):
    body = add_cost(turn_body([
        step(1, "user_prompt", 1.0, input_preview="do it"),
        step(2, "model_request", 2.0, usage=USAGE, model="gpt-5"),
        step(3, "model_request", 3.0, usage=USAGE, model="gpt-fake"),
        step(4, "model_request", 4.0, usage=USAGE, model="gpt-5")]))
    costs = [s.get("cost_usd") for s in body["steps"] if s["action"] == "model_request"]
    assert costs[0] > 0 and costs[1] is None and costs[2] == costs[0]
    doc = valid(atif.render(atif.Session("s1", [body])))
    agents = [s for s in doc["steps"] if s["source"] == "agent"]
    assert [a["metrics"].get("cost_usd") for a in agents] == costs
    assert "cost_usd" not in agents[1]["metrics"]  # unpriced: absent, never 0
    fm = doc["final_metrics"]
    assert fm["total_cost_usd"] == body["cost_usd"] == pytest.approx(2 * costs[0])
    assert fm["extra"]["unpriced_model_requests"] == 1
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    assert harbor_validate(path).returncode == 0
    unknown = add_cost(turn_body([step(1, "model_request", 1.0, usage=USAGE, model="gpt-fake")]))
    fm = valid(atif.render(atif.Session("s1", [unknown])))["final_metrics"]
    assert "total_cost_usd" not in fm and fm["extra"]["unpriced_model_requests"] == 1


def test_a_tool_call_whose_hook_came_before_its_requests_goes_on_that_request():
    """Async hooks finish in any order: request 2's call c2 was stored before request 2's
    own step.  With the rollout's responses (which call each request made), c2 is on the
    second agent step; a call the rollout does not know stays where the hooks put it."""
    t = transcript.Transcript(turns={"t1": transcript.Turn(responses=[
        transcript.Response(calls=[transcript.Call("c1", "exec_command", {"cmd": "a"})]),
        transcript.Response(calls=[transcript.Call("c2", "exec_command", {"cmd": "b"})]),
        transcript.Response(messages=["done"])])})
    body = turn_body([
        step(1, "user_prompt", 1.0, input_preview="do it"),
        step(2, "model_request", 2.0, usage=USAGE),
        step(3, "tool_use", 3.0, tool_name="Bash", tool_use_id="c1", command="a", exit_code=0),
        step(4, "tool_use", 3.5, tool_name="Bash", tool_use_id="c2", command="b", exit_code=0),
        step(5, "tool_use", 3.6, tool_name="Bash", tool_use_id="cx", command="x", exit_code=0),
        step(6, "model_request", 4.0, usage=USAGE),
        step(7, "model_request", 5.0, usage=USAGE),
    ])
    doc = valid(atif.render(atif.Session("s1", [body], transcript=t)))
    agents = [s for s in doc["steps"] if s["source"] == "agent"]
    assert [[c["tool_call_id"] for c in a.get("tool_calls", [])] for a in agents] == \
        [["c1", "cx"], ["c2"], []]
    assert [[r["source_call_id"] for r in a.get("observation", {}).get("results", [])]
            for a in agents] == [["c1", "cx"], ["c2"], []]
