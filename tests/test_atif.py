"""ATIF export (issue 15): the recorded Codex session through the real hook, exported,
validated by Harbor's own validator, and checked against the rollout Codex wrote."""
from __future__ import annotations

import json
import shutil
import stat
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spool import aggregate, config, db, ingest
from spool.cli import get_app
from spool.deliver import Dispatcher

from support.atif import harbor_validate
from support.hookproc import run_hook
from support.recorded import fixture_payloads, fixture_rollout


SID = "01a20038-88d1-76a3-89e0-645a8f69229c"
TURNS = ["01a20038-88e8-7592-844d-9a4c2114b9d0", "01a20038-a3f6-7272-b707-136584472438"]


def rollout_truth(path: Path) -> dict:
    """The rollout read independently of spool: calls, outputs, messages, final total."""
    calls, outputs, finals, prompts, total = {}, {}, [], [], None
    for line in path.read_text().splitlines():
        obj = json.loads(line)
        p = obj["payload"]
        if obj["type"] == "response_item" and p.get("type") == "function_call":
            calls[p["call_id"]] = (p["name"], json.loads(p["arguments"]))
        elif obj["type"] == "response_item" and p.get("type") == "function_call_output":
            outputs[p["call_id"]] = p["output"]
        elif obj["type"] == "event_msg" and p.get("type") == "task_complete":
            finals.append(p["last_agent_message"])
        elif obj["type"] == "event_msg" and p.get("type") == "item_completed" and \
                p["item"]["type"] == "UserMessage":
            prompts.append(p["item"]["content"][0]["text"])
        elif obj["type"] == "event_msg" and p.get("type") == "token_count" and p.get("info"):
            total = p["info"]["total_token_usage"]
    return {"calls": calls, "outputs": outputs, "finals": finals, "prompts": prompts,
            "total": total}


def setup_project(tmp_path: Path, settings: dict, rollout_text=None) -> tuple[Path, Path]:
    project = tmp_path / "project"
    project.mkdir()
    config.write_file(project, settings)
    rollout = tmp_path / "rollout.jsonl"
    shutil.copy(fixture_rollout(), rollout)
    if rollout_text is not None:
        rollout.write_text(rollout_text(rollout.read_text()))
    return project, rollout


def feed(engine, project: Path, rollout: Path, payloads) -> None:
    """Payloads through the real hook subprocess, then ingested and aggregated."""
    for name, payload in payloads:
        obj = json.loads(payload)
        obj["transcript_path"] = str(rollout)
        obj["cwd"] = str(project)
        r = run_hook(json.dumps(obj).encode(), cwd=project)
        assert r.returncode == 0, (name, r)
    ingest.ingest_all(engine)
    aggregate.aggregate(engine, time.time() + 60)


def replay(tmp_path: Path, granularity: str = "both", payloads=None, rollout_text=None):
    """The fixture payloads through the real hook subprocess, ingested and aggregated."""
    project, rollout = setup_project(tmp_path, {"granularity": granularity}, rollout_text)
    engine = db.open_db()
    feed(engine, project, rollout, payloads or fixture_payloads())
    return engine, project, rollout


def export(*args: str):
    return CliRunner().invoke(get_app(), ["export", *args])


@pytest.fixture
def replayed(tmp_path):
    engine, project, rollout = replay(tmp_path)
    yield engine, project, rollout
    engine.dispose()


def test_fixture_session_exports_a_harbor_valid_trajectory_matching_the_rollout(replayed, tmp_path):
    engine, project, rollout = replayed
    out = tmp_path / "out" / "s.atif.json"
    out.parent.mkdir()
    r = export(SID[:8], "-o", str(out))
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    v = harbor_validate(out)
    assert v.returncode == 0, v.stdout + v.stderr
    doc = json.loads(out.read_text())
    truth = rollout_truth(rollout)

    assert doc["schema_version"] == "ATIF-v1.8"
    assert doc["session_id"] == SID
    assert doc["agent"] == {"name": "codex", "version": "0.169.0", "model_name": "gpt-fake",
                            "extra": doc["agent"]["extra"]}
    steps = doc["steps"]
    assert [s["step_id"] for s in steps] == list(range(1, len(steps) + 1))
    # per turn: user prompt, model request with the tool call, model request with the answer
    assert [s["source"] for s in steps] == ["user", "agent", "agent"] * 2
    assert [s["message"] for s in steps if s["source"] == "user"] == truth["prompts"]
    times = [s["timestamp"] for s in steps]
    assert times == sorted(times) and all(t.endswith("Z") for t in times)

    agent = [s for s in steps if s["source"] == "agent"]
    calls = [tc for s in agent for tc in s.get("tool_calls", [])]
    assert {tc["tool_call_id"]: (tc["function_name"], tc["arguments"]) for tc in calls} == \
        truth["calls"]
    for s in agent:
        ids = [tc["tool_call_id"] for tc in s.get("tool_calls", [])]
        results = s.get("observation", {}).get("results", [])
        assert [res["source_call_id"] for res in results] == ids
        for res in results:
            assert res["extra"]["exit_code"] == 0
            assert "hello" in res["content"]
    # the turn's final answer on its last agent step; reasoning where the rollout has it
    assert [agent[1]["message"], agent[3]["message"]] == truth["finals"]
    assert agent[0]["reasoning_content"] == "Run the command."
    # per-request metrics are the rollout's last_token_usage lines, totals its final total
    total = truth["total"]
    assert sum(s["metrics"]["prompt_tokens"] for s in agent) == total["input_tokens"]
    assert sum(s["metrics"]["completion_tokens"] for s in agent) == total["output_tokens"]
    assert sum(s["metrics"]["cached_tokens"] for s in agent) == total["cached_input_tokens"]
    assert sum(s["metrics"]["extra"]["reasoning_output_tokens"] for s in agent) == \
        total["reasoning_output_tokens"]
    fm = doc["final_metrics"]
    assert (fm["total_prompt_tokens"], fm["total_completion_tokens"],
            fm["total_cached_tokens"], fm["total_steps"]) == (
        total["input_tokens"], total["output_tokens"], total["cached_input_tokens"], len(steps))
    assert fm["extra"]["reasoning_output_tokens"] == total["reasoning_output_tokens"]
    assert "still open" not in doc["notes"]
    assert len(out.read_bytes()) < 20_000  # compact by default


def test_full_takes_complete_tool_outputs_from_the_rollout(replayed, tmp_path):
    _engine, _project, rollout = replayed
    truth = rollout_truth(rollout)
    r = export(SID, "--full")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    results = {res["source_call_id"]: res["content"] for s in doc["steps"]
               for res in s.get("observation", {}).get("results", [])}
    assert results == truth["outputs"]
    (tmp_path / "full.json").write_text(r.stdout)
    assert harbor_validate(tmp_path / "full.json").returncode == 0


def test_preview_limits_and_redaction(tmp_path):
    secret = "sk-proj-" + "A" * 40
    def edit(text):  # a long, secret-bearing output for the first call
        long = "x" * 1000 + " OPENAI_API_KEY=" + secret
        return text.replace("Output:\\nhello\\n\"", "Output:\\n" + long + "\"", 1)
    payloads = []
    for name, raw in fixture_payloads():
        obj = json.loads(raw)
        if name == "PostToolUse" and obj["tool_use_id"] == "call_fake_1":
            obj["tool_response"] = "token " + secret + " " + "y" * 1000
        payloads.append((name, json.dumps(obj).encode()))
    engine, _p, _r = replay(tmp_path, payloads=payloads, rollout_text=edit)
    try:
        default = export(SID).stdout
        full = export(SID, "--full").stdout
    finally:
        engine.dispose()
    assert secret not in default and secret not in full
    first = lambda doc: next(res["content"] for s in json.loads(doc)["steps"]  # noqa: E731
                             for res in s.get("observation", {}).get("results", []))
    assert len(first(default)) <= 300 and first(default).endswith("...")  # the preview
    assert len(first(full)) > 1000 and "[REDACTED:" in first(full)


def test_unknown_and_ambiguous_ids_are_one_line_errors(replayed, engine):
    with db.write(engine) as conn:
        conn.exec_driver_sql(
            "INSERT INTO sessions (session_id, first_event_at, last_event_at) VALUES (?, 1, 1)",
            (SID[:9] + "ffff",))
    r = export("nope")
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "no session with id 'nope'" in r.output
    r = export(SID[:8])
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "matches several sessions" in r.output
    r = export(SID[:8] + "-88d1")  # unique again
    assert r.exit_code == 0
    r = export(SID, "--format", "yaml")
    assert r.exit_code == 2
    r = export(SID, "-o", "/nonexistent-dir/x.json")
    assert r.exit_code == 1 and r.output.count("\n") == 1 and "does not exist" in r.output


def test_json_format_is_spools_trace_model_latest_revisions(replayed):
    r = export(SID, "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["schema"] == "spool.session-export/1" and doc["session_id"] == SID
    kinds = sorted((t["kind"], t["turn_id"]) for t in doc["traces"])
    assert kinds == [("session", None), ("turn", TURNS[0]), ("turn", TURNS[1])]
    assert all(t["schema"] == "spool.trace/1" for t in doc["traces"])


def test_open_session_exports_what_is_known_and_says_so(tmp_path):
    payloads = fixture_payloads()[:9]  # first turn's Stop, no SessionEnd
    engine, _p, _r = replay(tmp_path, granularity="turn", payloads=payloads)
    try:
        r = export(SID)
    finally:
        engine.dispose()
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert "session still open" in doc["notes"] and doc["extra"]["spool"]["still_open"] is True
    assert [s["source"] for s in doc["steps"]] == ["user", "agent", "agent"]
    (tmp_path / "open.json").write_text(r.stdout)
    assert harbor_validate(tmp_path / "open.json").returncode == 0


def deliver(engine) -> list[tuple[str, str, str]]:
    with Dispatcher(engine) as d:  # rows are due from the aggregation pass's time (now + 60)
        return d.run_once(time.time() + 120).outcomes


def test_atif_sink_writes_and_rewrites_one_0600_file_per_session(tmp_path, monkeypatch):
    atif_dir = tmp_path / "atif-out"
    monkeypatch.setenv("SPOOL_ATIF_DIR", str(atif_dir))
    project, rollout = setup_project(tmp_path, {"granularity": "turn", "sinks": ["atif"]})
    engine = db.open_db()
    try:
        payloads = fixture_payloads()
        feed(engine, project, rollout, payloads[:9])  # the first turn, session still open
        assert [o[1:] for o in deliver(engine)] == [("atif", "sent")]
        path = atif_dir / f"{SID}.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(atif_dir.stat().st_mode) == 0o700
        first = json.loads(path.read_text())
        assert [s["source"] for s in first["steps"]] == ["user", "agent", "agent"]
        assert first["extra"]["spool"]["still_open"] is True
        # totals are the rollout's (already through both turns here), not the steps' sum
        truth = rollout_truth(rollout)["total"]
        assert first["final_metrics"]["total_prompt_tokens"] == truth["input_tokens"] > sum(
            s["metrics"]["prompt_tokens"] for s in first["steps"] if "metrics" in s)
        assert harbor_validate(path).returncode == 0
        inode = path.stat().st_ino

        feed(engine, project, rollout, payloads[9:])  # the second turn and the session end
        assert [o[1:] for o in deliver(engine)] == [("atif", "sent")]
        assert path.stat().st_ino != inode  # replaced by rename, never rewritten in place
        second = json.loads(path.read_text())
        assert [s["source"] for s in second["steps"]] == ["user", "agent", "agent"] * 2
        assert second["extra"]["spool"]["still_open"] is False
        assert second["final_metrics"]["total_prompt_tokens"] == \
            rollout_truth(rollout)["total"]["input_tokens"]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert harbor_validate(path).returncode == 0
        assert sorted(p.name for p in atif_dir.iterdir()) == [f"{SID}.json"]  # no temp left
    finally:
        engine.dispose()


def test_atif_sink_default_directory_is_spool_home(spool_home, tmp_path):
    project, rollout = setup_project(tmp_path, {"granularity": "both", "sinks": "atif"})
    engine = db.open_db()
    try:
        feed(engine, project, rollout, fixture_payloads())
        assert sorted(o[1:] for o in deliver(engine)) == [("atif", "sent")] * 3
    finally:
        engine.dispose()
    doc = json.loads((spool_home / "atif" / f"{SID}.json").read_text())
    assert len(doc["steps"]) == 6 and doc["session_id"] == SID


def test_spool_test_through_the_atif_sink_writes_a_valid_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SPOOL_ATIF_DIR", str(tmp_path / "atif"))
    r = CliRunner().invoke(get_app(), ["test", "--sink", "atif", "--json", "--verbose"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["ok"] and result["target"] == str(tmp_path / "atif")
    assert list((tmp_path / "atif").iterdir()) == []  # the test file is removed again
    path = tmp_path / "sent.json"  # what was written there, byte for byte
    path.write_text(result["payload"])
    v = harbor_validate(path)
    assert v.returncode == 0, v.stdout + v.stderr
