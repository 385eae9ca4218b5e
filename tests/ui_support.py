"""Helpers for the `spool ui` tests: a spool filled by a real recorded session, a live server."""
from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from conftest import fixture_payloads, fixture_rollout, run_hook
from spool import aggregate, config, db, ingest


def fill_from_fixture(tmp_path: Path, engine, secret: str | None = None) -> dict:
    """Replay the recorded two-turn Codex session through the real hook, ingest and
    aggregate it.  ``secret`` (optional) is put into the second prompt.  Returns the
    session id and the stored turn bodies."""
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    config.write_file(project, {"granularity": "both"})
    rollout = tmp_path / "rollout.jsonl"
    shutil.copy(fixture_rollout(), rollout)
    sid = None
    for name, payload in fixture_payloads():
        obj = json.loads(payload)
        obj["transcript_path"], obj["cwd"] = str(rollout), str(project)
        if secret and name == "UserPromptSubmit":
            obj["prompt"] = f"{obj['prompt']} OPENAI_API_KEY={secret}"
        sid = obj["session_id"]
        r = run_hook(json.dumps(obj).encode(), cwd=project)
        assert r.returncode == 0, r.stderr
    ingest.ingest_all(engine)
    res = aggregate.aggregate(engine, time.time() + 60)
    assert res.turn_traces == 2, res
    return {"session_id": sid, "project": str(project), "turns": turn_bodies(engine)}


def fill_from_subagent_fixture(tmp_path: Path, engine) -> dict:
    """The recorded session with a subagent, replayed through the hook and aggregated."""
    from conftest import FIXTURES

    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    agents, sids = set(), []
    for p in sorted((FIXTURES / "codex-0.169.0" / "subagent" / "payloads").glob("*.json")):
        obj = json.loads(p.read_bytes())
        obj["cwd"] = str(project)
        obj.pop("transcript_path", None)
        if obj.get("agent_id"):
            agents.add(obj["agent_id"])
        if obj["hook_event_name"] == "SessionStart":
            sids.append(obj["session_id"])
        r = run_hook(json.dumps(obj).encode(), cwd=project)
        assert r.returncode == 0, r.stderr
    ingest.ingest_all(engine)
    aggregate.aggregate(engine, time.time() + 60)
    return {"session_id": sids[0], "agents": agents}


def turn_bodies(engine) -> list[dict]:
    with db.read(engine) as conn:
        rows = conn.exec_driver_sql(
            "SELECT body FROM traces WHERE kind = 'turn' ORDER BY started_at").fetchall()
    return [json.loads(r[0]) for r in rows]


@contextmanager
def ui_server(engine, **kw):
    """A live `spool ui` server on a free loopback port (stopped afterwards)."""
    from spool.ui.server import UIServer

    server = UIServer(engine, 0, **kw)
    server.start_background()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


# The e2e Codex session of the browser test and scripts/screenshot_ui.py: one turn with
# model requests and tool calls, one command failing with exit 3.
FAILING = "sh -c 'echo failing >&2; exit 3'"
E2E_PROMPTS = ["inspect the project: run the listed commands"]


def e2e_script() -> list:
    from fake_model import Final, ToolCall

    return [[[ToolCall("echo hello"), ToolCall("ls -1")], [ToolCall(FAILING)],
             [ToolCall("git log --oneline -1")],
             [Final("Turn one done: four commands, one failed with exit 3.")]]]


def fill_from_codex(tmp_path: Path, engine) -> dict:
    """A real Codex CLI session (`spool run -- codex exec` against the fake model, the
    hooks writing into this spool, no worker), ingested and aggregated."""
    import os
    import sys

    from codex_env import make_codex_home, make_project, run_session

    home = make_codex_home(tmp_path)
    proj = make_project(tmp_path)
    spool = str(Path(sys.executable).with_name("spool"))
    run_session(proj, home, E2E_PROMPTS, script=e2e_script(),
                env={"SPOOL_NO_AUTOSTART": "1", "SPOOL_HOME": os.environ["SPOOL_HOME"]},
                wrap=[spool, "run", "--wait", "0", "--no-summary", "--"]).check()
    ingest.ingest_all(engine)
    res = aggregate.aggregate(engine, time.time() + 60)
    assert res.turn_traces == 1, res
    with db.read(engine) as conn:
        sid = conn.exec_driver_sql("SELECT session_id FROM sessions").scalar_one()
    return {"session_id": sid, "project": str(proj), "turns": turn_bodies(engine)}
