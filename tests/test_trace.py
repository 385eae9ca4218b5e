"""The pure trace builders."""
from __future__ import annotations

from spool.trace import (CommandFacts, Event, Limits, RolloutFacts, SessionFacts, clip, short_name,
                         trace_id)
from spool.trace_build import build_part, build_session_trace, build_turn_trace

S = SessionFacts("sess", cwd="/p", project="/p", source="startup", codex_version="0.1")


def ev(i, name, t=None, turn="T", **payload):
    return Event(i, 100.0 + (t if t is not None else i), name, turn,
                 {"hook_event_name": name, **payload})


def test_tool_pairing_duration_exit_code_error_and_previews():
    events = [
        ev(1, "UserPromptSubmit", prompt="  Please   run\nthe failing thing now, it is a long prompt"),
        ev(2, "PreToolUse", tool_name="Bash", tool_input={"command": "false && x"}, tool_use_id="c1"),
        ev(3, "PostToolUse", t=4.5, tool_name="Bash", tool_input={"command": "false && x"},
           tool_response="E" * 50, tool_use_id="c1"),
        ev(6, "PostToolUse", tool_name="Bash", tool_input={"command": "ls"}, tool_response="a",
           tool_use_id="c2"),
        ev(7, "Stop", last_assistant_message="it failed"),
    ]
    facts = RolloutFacts(commands={"c1": CommandFacts(1, "failed", 3.0, "false && x")})
    part = build_part("T", events, Limits(max_input_preview=8, max_output_preview=10), facts)
    t = build_turn_trace(S, part).to_dict()
    tools = [s for s in t["steps"] if s["action"] == "tool_use"]
    assert [s["tool_use_id"] for s in tools] == ["c1", "c2"]
    assert tools[0]["duration_ms"] == 2500.0 and tools[0]["exit_code"] == 1
    assert tools[0]["input_preview"] == "false..." and len(tools[0]["output_preview"]) == 10
    assert "exit" in tools[0]["error"]["message"] and "code 1" in tools[0]["error"]["message"]
    assert "false && x" in tools[0]["error"]["message"]
    assert t["errors"] == [dict(tools[0]["error"], step_number=tools[0]["number"])]
    assert any("without PreToolUse" in n for n in t["notes"])
    assert t["name"] == "Please run the failing thing n..."
    assert t["description"].startswith("Please run the failing")
    assert t["output_summary"] == "it failed" and not t["incomplete"]
    assert [s["number"] for s in t["steps"]] == list(range(1, len(t["steps"]) + 1))
    assert t["trace_id"] == trace_id("sess", "T", "turn") != trace_id("sess", "T", "turn", 1)
    assert t["duration_ms"] == 6000.0 and t["current_datetime"] == "1970-01-01T00:01:47Z"


def test_usage_from_hooks_else_rollout_and_incomplete_turn():
    usage = {"input_tokens": 7, "cached_input_tokens": 3, "output_tokens": 2,
             "reasoning_output_tokens": 1, "total_tokens": 9}
    with_hooks = [ev(1, "PreModelRequest"), ev(2, "PostModelRequest", status="completed",
                                                 token_usage=usage)]
    part = build_part("T", with_hooks, Limits())
    assert part.usage_source == "hooks" and part.usage["input"] == 7 and part.usage["requests"] == 1
    roll = RolloutFacts(turn_usage={"T": {"input": 50, "cached": 5, "output": 4, "reasoning": 0,
                                          "total": 54, "requests": 2}})
    old = [ev(1, "PreModelRequest"), ev(2, "PostModelRequest")]  # older Codex: no usage
    part = build_part("T", old, Limits(), roll)
    assert part.usage_source == "rollout" and part.usage["total"] == 54
    t = build_turn_trace(S, part, end_reason="session went stale").to_dict()
    assert t["incomplete"] and "stale" in t["notes"][0]
    assert t["name"] == "Codex turn"


def test_session_trace_orders_turns_and_lifecycle_and_sums():
    u = {"input_tokens": 1, "cached_input_tokens": 0, "output_tokens": 1,
         "reasoning_output_tokens": 0, "total_tokens": 2}
    a = build_part("A", [ev(2, "UserPromptSubmit", turn="A", prompt="first"),
                         ev(3, "PostModelRequest", turn="A", token_usage=u),
                         ev(4, "Stop", turn="A")], Limits())
    b = build_part("B", [ev(7, "UserPromptSubmit", turn="B", prompt="second"),
                         ev(8, "PostModelRequest", turn="B", token_usage=u)], Limits())
    life = [ev(1, "SessionStart", turn=None, source="startup"),
            ev(5, "SessionEnd", turn=None, reason="x"),
            ev(6, "SessionStart", turn=None, source="resume")]
    t = build_session_trace(S, [b, a], lifecycle=life, revision=2,
                            supersedes=trace_id("sess", None, "session", 1)).to_dict()
    assert [s["action"] for s in t["steps"]] == [
        "session_start", "user_prompt", "model_request", "session_end", "session_start",
        "user_prompt", "model_request"]
    assert t["name"] == "(Summary) first" and t["kind"] == "session" and t["revision"] == 2
    assert t["usage"]["total"] == 4 and t["usage"]["requests"] == 2
    assert t["event_count"] == 8 and t["incomplete"]
    assert [x["turn_id"] for x in t["turns"]] == ["A", "B"]
    assert t["trace_id"] == trace_id("sess", None, "session", 2)


def test_clip_and_name():
    assert clip("abcdef", 4) == "a..." and clip(None, 5) == "" and clip({"a": 1}, 50) == '{"a": 1}'
    assert short_name("x" * 40) == "x" * 30 + "..."


def test_garbage_payloads_never_raise():
    bad = [Event.from_row(1, 1.0, "PostToolUse", "T", b"{not json"),
           Event.from_row(2, 2.0, "PreToolUse", "T", b"[1,2]"),
           Event.from_row(3, 3.0, "PostModelRequest", "T",
                          b'{"token_usage": {"input_tokens": "x"}, "error": {"m": 1}}'),
           Event.from_row(4, 4.0, "UserPromptSubmit", "T", b'{"prompt": 5}')]
    t = build_turn_trace(S, build_part("T", bad, Limits())).to_dict()
    assert t["event_count"] == 4 and t["errors"][0]["type"] == "ModelError"
