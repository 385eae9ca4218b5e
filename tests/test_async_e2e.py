"""Async mid-turn hooks end to end (issue 20), with the REAL Codex CLI.

spool's Pre/PostModelRequest and Pre/PostToolUse hooks run ``"async": true``;
``codex exec`` SIGKILLs async hooks still running when it shuts down.  Here
that is provoked: the mid-turn hooks sleep 4 s before running spool's hook,
so exec (a ~1 s turn) kills every one of them, while the lifecycle hooks run
at once.  The hooks are passed as ``-c`` overrides trusted by
spool.codex_run's hashes (which must carry ``"async": true``, or Codex skips
them).  Then the real ingest and aggregation: each turn's trace must equal
the rollout Codex wrote (tokens per request, exit codes, commands), though
not one of its mid-turn hook events arrived.
"""
from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from support.codex import make_codex_home, make_codex_project, run_session, wrapped_codex
from support.fake_model import Final, ToolCall
from spool import aggregate, codex, codex_run, config, db, ingest
from spool.trace import trace_id

pytestmark = pytest.mark.e2e

FAILING = "sh -c 'exit 5'"
PROMPTS = ["run the commands", "once more"]
SCRIPT = [
    [[ToolCall("echo hello"), ToolCall("ls -1")], [ToolCall(FAILING)], [Final("done one")]],
    [[ToolCall("echo again")], [Final("done two")]],
]


def slow_mid_turn_overrides(command: str, delay_s: float) -> list[str]:
    """spool's hook set with the async (mid-turn) hooks made slow, trusted as Codex hashes it."""
    groups = codex_run.run_hooks(command)
    slow = f"sleep {delay_s}; {command}"
    for event in codex.ASYNC_EVENTS:
        groups[event] = codex.spool_group(event, slow)
        assert groups[event]["hooks"][0]["async"] is True
    state = {k: {"trusted_hash": h} for k, h in codex_run.trust_entries(groups).items()}
    args = ["-c", "features.hooks=true"]
    for event, group in groups.items():
        args += ["-c", f"hooks.{event}={codex_run.toml_value([group])}"]
    return args + ["-c", f"hooks.state={codex_run.toml_value(state)}"]


def rollout_truth(codex_home) -> tuple[str, dict[str, dict]]:
    (path,) = sorted((codex_home / "sessions").rglob("rollout-*.jsonl"))
    sid, turns = None, {}
    for line in path.read_text().splitlines():
        obj = json.loads(line)
        p = obj.get("payload") or {}
        if obj["type"] == "session_meta":
            sid = p["id"]
        elif obj["type"] == "token_usage_record":
            turns.setdefault(p["turn_id"], {"requests": [], "exit_codes": {}})["requests"].append(
                (p["usage"]["input_tokens"], p["usage"]["output_tokens"], p["usage"]["total_tokens"]))
        elif p.get("type") == "item_completed" and p["item"].get("type") == "CommandExecution":
            turns.setdefault(p["turn_id"], {"requests": [], "exit_codes": {}})["exit_codes"][
                p["item"]["id"]] = (p["item"]["exit_code"], p["item"]["command"][-1])
    return sid, turns


def test_async_events_killed_at_exit_leave_every_trace_equal_to_the_rollout(tmp_path):
    home = make_codex_home(tmp_path)
    proj = make_codex_project(tmp_path)
    config.write_file(proj, {"granularity": "both", "sinks": ["file"]})
    binary = wrapped_codex(tmp_path, slow_mid_turn_overrides(codex.hook_command(), 4))
    res = run_session(proj, home, PROMPTS, script=SCRIPT, codex_bin=binary).check()
    assert len(res.served) == sum(len(t) for t in SCRIPT)

    engine = db.open_db()
    try:
        ingest.ingest_all(engine)
        with db.read(engine) as conn:
            fired = Counter(r[0] for r in conn.exec_driver_sql("SELECT event FROM raw_events"))
        # the lifecycle hooks ran (synchronously); every mid-turn one was killed
        assert fired == Counter({"SessionStart": 2, "UserPromptSubmit": 2, "Stop": 2,
                                 "SessionEnd": 2}), fired
        got = aggregate.aggregate(engine, time.time() + 3600)
        assert got.turn_traces == 2, got
        with db.read(engine) as conn:
            stored = {r[0]: json.loads(r[1]) for r in conn.exec_driver_sql(
                "SELECT trace_id, body FROM traces")}
    finally:
        engine.dispose()

    sid, truth = rollout_truth(home)
    assert len(truth) == 2
    for turn_id, want in truth.items():
        body = stored[trace_id(sid, turn_id, "turn")]
        steps = body["steps"]
        requests = [(s["usage"]["input"], s["usage"]["output"], s["usage"]["total"])
                    for s in steps if s["action"] == "model_request"]
        assert requests == want["requests"]
        tools = {s["tool_use_id"]: (s["exit_code"], s["command"]) for s in steps
                 if s["action"] == "tool_use"}
        assert tools == want["exit_codes"]
        assert body["usage"]["total"] == sum(r[2] for r in want["requests"])
        assert body["usage"]["requests"] == len(want["requests"])
        failing = [s for s in steps if s.get("error")]
        assert [s["command"] for s in failing] == [
            cmd for code, cmd in want["exit_codes"].values() if code != 0]
        assert not body["incomplete"]
        assert any("completed from the rollout" in n for n in body["notes"]), body["notes"]
