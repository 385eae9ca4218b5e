"""ATIF end to end with the REAL Codex CLI (issue 15): a two-run session with a failing
command, captured by spool's hooks, delivered by the autostarted worker to the `atif`
sink, exported with `spool export`; Harbor's validator accepts both files and their
steps, tool calls, observations and totals are what Codex's rollout says."""
from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest

from support.atif import harbor_validate
from support.codex import (codex_binary, codex_version, make_codex_home, make_codex_project,
                           run_session)
from support.e2e import FAILING, FINALS, PROMPTS, read_rollout, script, spool_cli


pytestmark = pytest.mark.e2e


def rollout_outputs(path) -> dict:
    out = {}
    for line in path.read_text().splitlines():
        obj = json.loads(line)
        p = obj.get("payload") or {}
        if obj.get("type") == "response_item" and p.get("type") == "function_call_output":
            out[p["call_id"]] = p["output"]
    return out


def test_real_codex_session_exports_as_a_valid_atif_trajectory(tmp_path, spool_home):
    binary = codex_binary()
    home = make_codex_home(tmp_path)
    proj = make_codex_project(tmp_path)
    r = subprocess.run([spool_cli(), "init", "--no-interactive", "--granularity", "both",
                        "--project", str(proj), "--codex-home", str(home),
                        "--codex-bin", str(binary)],
                       env=dict(os.environ, CODEX_HOME=str(home)), cwd=proj, capture_output=True,
                       text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    env = {"SPOOL_NO_AUTOSTART": "0", "SPOOL_SESSION_END_GRACE": "3",
           "SPOOL_WORKER_IDLE_EXIT": "1", "SPOOL_SINKS": "atif"}
    res = run_session(proj, home, PROMPTS, script=script(), env=env, codex_bin=binary,
                      wait_worker=45).check()
    assert not res.worker_timed_out, "the autostarted worker did not finish in time"
    truth = read_rollout(home)
    sid = truth["session_id"]

    # the sink's file, kept up to date by the worker
    sunk = spool_home / "atif" / f"{sid}.json"
    assert stat.S_IMODE(sunk.stat().st_mode) == 0o600
    v = harbor_validate(sunk)
    assert v.returncode == 0, v.stdout + v.stderr

    # the command, to a file
    out = tmp_path / "export.json"
    r = subprocess.run([spool_cli(), "export", sid[:13], "-o", str(out)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    v = harbor_validate(out)
    assert v.returncode == 0, v.stdout + v.stderr
    doc = json.loads(out.read_text())
    assert json.loads(sunk.read_text())["steps"] == doc["steps"]

    assert doc["session_id"] == sid
    assert doc["agent"]["name"] == "codex" and doc["agent"]["version"] == codex_version()
    steps = doc["steps"]
    assert [s["step_id"] for s in steps] == list(range(1, len(steps) + 1))
    assert [s["message"] for s in steps if s["source"] == "user"] == PROMPTS
    agent = [s for s in steps if s["source"] == "agent"]
    # one agent step per model request, in order, with the calls that response made
    assert len(agent) == len(res.served)
    assert [sorted(tc["tool_call_id"] for tc in s.get("tool_calls", [])) for s in agent] == \
        [sorted(sv["call_ids"]) for sv in res.served]
    assert [s["metrics"]["prompt_tokens"] for s in agent] == \
        [sv["usage"]["input_tokens"] for sv in res.served]
    assert [s["metrics"]["completion_tokens"] for s in agent] == \
        [sv["usage"]["output_tokens"] for sv in res.served]
    # observations tied to their calls, with Codex's exit codes; the failing one visible
    commands = truth["commands"]
    results = {}
    for s in agent:
        ids = {tc["tool_call_id"] for tc in s.get("tool_calls", [])}
        for res_ in s.get("observation", {}).get("results", []):
            assert res_["source_call_id"] in ids
            results[res_["source_call_id"]] = res_
    assert set(results) == set(commands)
    assert {c: x["extra"]["exit_code"] for c, x in results.items()} == \
        {c: commands[c]["exit_code"] for c in commands}
    failing = [c for c in commands if commands[c]["command"][-1] == FAILING]
    assert len(failing) == 1 and results[failing[0]]["extra"]["exit_code"] == 3
    assert "failing" in results[failing[0]]["content"]
    calls = {tc["tool_call_id"]: tc for s in agent for tc in s.get("tool_calls", [])}
    assert sorted(tc["arguments"]["cmd"] for tc in calls.values()) == \
        sorted(commands[c]["command"][-1] for c in commands)
    # each turn's final answer on its last agent step
    by_turn: dict = {}
    for s in agent:
        by_turn.setdefault(s["extra"]["turn_id"], []).append(s)
    assert [by_turn[t["turn_id"]][-1]["message"] for t in truth["turns"]] == FINALS
    # totals: the rollout's final total_token_usage
    total, fm = truth["total"], doc["final_metrics"]
    assert (fm["total_prompt_tokens"], fm["total_completion_tokens"],
            fm["total_cached_tokens"]) == (total["input_tokens"], total["output_tokens"],
                                           total["cached_input_tokens"])
    assert fm["extra"]["reasoning_output_tokens"] == total["reasoning_output_tokens"]
    assert fm["total_steps"] == len(steps)
    assert "still open" not in doc["notes"]

    # --full: complete tool outputs, as Codex gave them to the model
    r = subprocess.run([spool_cli(), "export", sid, "--full"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    full = json.loads(r.stdout)
    got = {x["source_call_id"]: x["content"] for s in full["steps"]
           for x in s.get("observation", {}).get("results", [])}
    assert got == rollout_outputs(truth["path"])
    print(f"atif e2e: {len(steps)} steps, {out.stat().st_size} bytes "
          f"({out.stat().st_size / len(PROMPTS):.0f} per turn); --full "
          f"{len(r.stdout.encode())} bytes")
