"""The Infinium rendering of the neutral trace model."""
from __future__ import annotations

import json

from spool.render import to_infinium
from spool.sinks.size import MAX_BODY, shrink
from spool.trace import CommandFacts, Event, Limits, RolloutFacts, SessionFacts
from spool.trace_build import build_part, build_session_trace, build_turn_trace

S = SessionFacts("sess", cwd="/proj", project="/proj", source="startup", model="gpt-x",
                 permission_mode="default", codex_version="0.169.0", git_branch="main")
USAGE = {"input_tokens": 1000, "cached_input_tokens": 400, "output_tokens": 50,
         "reasoning_output_tokens": 20, "total_tokens": 1050}


def _turn(n_tools=1, exit_code=0, response="out"):
    evs = [Event(1, 10.0, "UserPromptSubmit", "T", {"prompt": "Fix the build please"}),
           Event(2, 10.5, "PreModelRequest", "T", {"model": "gpt-x"}),
           Event(3, 11.0, "PostModelRequest", "T", {"token_usage": USAGE, "status": "completed"})]
    cmds = {}
    for k in range(n_tools):
        cid = f"c{k}"
        cmd = "*** Begin Patch\n*** Update File: src/a.py\n" if k == 0 and n_tools > 1 else f"make {k}"
        evs.append(Event(10 + 2 * k, 12.0 + k, "PreToolUse", "T",
                         {"tool_name": "Bash", "tool_input": {"command": cmd}, "tool_use_id": cid}))
        evs.append(Event(11 + 2 * k, 12.5 + k, "PostToolUse", "T",
                         {"tool_name": "Bash", "tool_input": {"command": cmd},
                          "tool_response": response, "tool_use_id": cid}))
        cmds[cid] = CommandFacts(exit_code, "completed" if exit_code == 0 else "failed", 1.0, cmd)
    evs.append(Event(10_000, 99.0, "Stop", "T", {"last_assistant_message": "Fixed."}))
    return build_part("T", evs, Limits(), RolloutFacts(commands=cmds))


def test_turn_body_fields():
    body = to_infinium(build_turn_trace(S, _turn(exit_code=2)).to_dict())
    assert body["name"] == "Fix the build please" and body["description"] == "Fix the build please"
    assert body["duration"] == 89.0 and body["current_datetime"] == "1970-01-01T00:01:39Z"
    assert body["output_summary"] == "Fixed."
    assert body["llm_usage"] == {"model": "gpt-x", "provider": "openai", "prompt_tokens": 1000,
                                 "completion_tokens": 50, "total_tokens": 1050,
                                 "api_calls_count": 1}
    tags = body["environment"]["custom_tags"]
    assert tags["trace_type"] == "turn" and tags["cached_input_tokens"] == 400
    assert tags["reasoning_output_tokens"] == 20 and tags["session_id"] == "sess"
    assert tags["working_directory"] == "/proj" and tags["codex_version"] == "0.169.0"
    assert body["environment"]["framework"] == "codex-cli"
    tool = [s for s in body["steps"] if s["action"] == "tool_use"][0]
    assert tool["description"] == "Bash: make 0 (exit 2)" and tool["input_preview"] == "make 0"
    assert tool["duration_ms"] == 500.0
    assert tool["error"]["error_type"] == "ToolError" and "code 2" in tool["error"]["message"]
    assert "make 0" in tool["error"]["message"] and tool["error"]["retry_count"] == 0
    assert body["errors"] == [dict(tool["error"], step_number=tool["step_number"])]
    assert body["sections"]["general"]["tools_used"] == ["Bash"]
    assert [s["step_number"] for s in body["steps"]] == list(range(1, len(body["steps"]) + 1))


def test_preview_limits_and_files_modified():
    part = _turn(n_tools=2, response="x" * 1000)
    body = to_infinium(build_turn_trace(S, part).to_dict(), max_input_preview=10,
                       max_output_preview=20)
    tools = [s for s in body["steps"] if s["action"] == "tool_use"]
    assert all(len(s["input_preview"]) <= 10 and len(s["output_preview"]) <= 20 for s in tools)
    assert body["sections"]["development"]["files_modified"] == ["src/a.py"]


def test_session_body_and_size_limit():
    big = _turn(n_tools=3000, response="y" * 5000)
    body, note = shrink(to_infinium(build_session_trace(S, [big]).to_dict(),
                                    max_output_preview=5000))
    assert body["name"].startswith("(Summary) ")
    assert body["environment"]["custom_tags"]["trace_type"] == "session"
    assert len(json.dumps(body).encode()) < MAX_BODY
    assert body["environment"]["custom_tags"]["steps_left_out"] > 0
    assert body["steps"][0]["action"] == "user_prompt"  # the start is kept


def test_missing_fields_render():
    body = to_infinium({"kind": "turn"})
    assert body["name"] == "Codex trace" and body["steps"] == [] and body["duration"] == 0.0


def _priced(model):
    """A turn body whose one model request used ``model``, priced as aggregation does."""
    from spool.cost import add_cost

    body = build_turn_trace(S, _turn()).to_dict()
    body["environment"]["model"] = model
    body["steps"] = [dict(s, model=model) if s.get("action") == "model_request" else s
                     for s in body["steps"]]
    return add_cost(body)


def test_cost_in_custom_tags_matches_the_body_and_unknown_model_leaves_it_out():
    body = _priced("gpt-5")
    assert body["cost_usd"] > 0
    tags = to_infinium(body)["environment"]["custom_tags"]
    assert tags["cost_usd"] == body["cost_usd"] and "cost_flags" not in tags
    unknown = _priced("gpt-fake")
    assert unknown["cost_usd"] is None
    tags = to_infinium(unknown)["environment"]["custom_tags"]
    assert "cost_usd" not in tags and tags["cost_flags"] == "no price for model gpt-fake"
