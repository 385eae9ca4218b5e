"""`spool run -- codex …` with the REAL Codex CLI against the fake model server.

* the hash rule of spool/codex_run.py against Codex's own ``hooks/list``;
* a scratch git project never ``init``ed: ``spool run -- codex exec …`` then
  ``spool run -- codex exec resume --last …``: both turns reach the loopback
  receiver with exact tokens; the project and $CODEX_HOME's config are
  untouched; stdout is Codex's alone, the summary is one line on stderr;
* a failing Codex invocation: spool's exit code is Codex's own;
* an ``init``ed project: every hook event Codex fired is stored once.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import text

from spool import codex, codex_run, db

from support.codex import (codex_binary, wrapped_codex, codex_env, free_port, make_codex_home, make_codex_project,
                           run_session)
from support.e2e import assert_hook_counts, expected_hook_counts, read_rollout, spool_cli, spool_init
from support.fake_model import Final, ToolCall

pytestmark = pytest.mark.e2e

PROMPTS = ["run two commands", "and one more"]
FINALS = ["first turn done", "second turn done"]


def script() -> list:
    return [[[ToolCall("echo hello"), ToolCall("ls -1")], [Final(FINALS[0])]],
            [[ToolCall("echo again")], [Final(FINALS[1])]]]




def test_hashes_match_codex_hooks_list_and_installed_spool_hooks_are_turned_off(tmp_path):
    home = make_codex_home(tmp_path)
    proj = make_codex_project(tmp_path)
    spool_init(proj, home, "http://127.0.0.1:9", str(uuid.uuid4()), "s-" + uuid.uuid4().hex)
    command = codex.hook_command()
    installed = codex_run.installed_keys([(codex.hooks_path(proj).resolve(),
                                           codex.read_hooks(codex.hooks_path(proj)))])
    assert len(installed) == len(codex.EVENTS)
    binary = wrapped_codex(tmp_path, codex_run.overrides(command, installed))
    with codex.AppServer(binary, codex_home=home, cwd=proj) as server:
        listing = server.list_hooks(proj)
    by_key = {h["key"]: h for h in listing["hooks"]}
    want = codex_run.trust_entries(codex_run.run_hooks(command))
    assert len(want) == len(codex.EVENTS)
    for key, digest in want.items():
        assert by_key[key]["currentHash"] == digest, key
        assert by_key[key]["trustStatus"] == "trusted", by_key[key]
    for key in installed:  # listed, and switched off for the run
        assert by_key[key].get("enabled") is False, by_key[key]


def file_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def run_env(secret: str, port: int, agent_id: str) -> dict:
    return {"SPOOL_NO_AUTOSTART": "0", "SPOOL_SESSION_END_GRACE": "3",
            "SPOOL_WORKER_IDLE_EXIT": "1", "INFINIUM_AGENT_SECRET": secret,
            "INFINIUM_AGENT_ID": agent_id, "INFINIUM_BASE_URL": f"http://127.0.0.1:{port}"}


def test_spool_run_traces_exec_and_resume_in_a_project_never_inited(tmp_path):
    home = make_codex_home(tmp_path)
    proj = make_codex_project(tmp_path)
    before = file_hashes(home)
    port = free_port()
    secret, agent_id = "e2e-" + uuid.uuid4().hex, str(uuid.uuid4())
    res = run_session(proj, home, PROMPTS, script=script(), env=run_env(secret, port, agent_id),
                      receiver_port=port, wait_worker=30,
                      wrap=[spool_cli(), "run", "--wait", "20", "--run-id", "r-1", "--"]).check()

    # --- both turns arrived, with the exact tokens Codex logged --------------------------------
    rollout = read_rollout(home)
    turns = rollout["turns"]
    assert [t["last_message"] for t in turns] == FINALS
    kept = {}
    for r in res.received:
        assert r["status"] == 200 and r["agent_key_ok"], r["status"]
        kept.setdefault(r["key"], json.loads(r["body"]))
    bodies = {b["environment"]["custom_tags"]["turn_id"]: b for b in kept.values()
              if b["environment"]["custom_tags"]["trace_type"] == "turn"}
    assert set(bodies) == {t["turn_id"] for t in turns}
    for i, t in enumerate(turns):
        b = bodies[t["turn_id"]]
        assert b["input_summary"] == PROMPTS[i]
        assert b["llm_usage"]["prompt_tokens"] == t["usage"]["input_tokens"]
        assert b["llm_usage"]["completion_tokens"] == t["usage"]["output_tokens"]
        assert b["llm_usage"]["total_tokens"] == t["usage"]["total_tokens"]
        assert b["environment"]["custom_tags"]["cached_input_tokens"] == \
            t["usage"]["cached_input_tokens"]

    # --- one summary line on stderr per run, nothing added to stdout ----------------------------
    for run, t in zip(res.runs, turns):
        lines = [ln for ln in run.stdout.splitlines() if ln.strip()]
        assert lines and all(json.loads(ln) for ln in lines)  # Codex's --json events only
        assert "spool run" not in run.stdout
        summary = [ln for ln in run.stderr.splitlines() if ln.startswith("spool run")]
        assert len(summary) == 1, run.stderr
        u = t["usage"]
        assert summary[0].startswith(
            f"spool run r-1: 1 session, 1 turn, {u['total_tokens']:,} tokens "
            f"(in {u['input_tokens']:,}, cached {u['cached_input_tokens']:,}, "
            f"out {u['output_tokens']:,}); 1 trace -> infinium: 1 sent"), summary[0]
        assert "still in progress" not in summary[0]

    # --- nothing written into the project or $CODEX_HOME's config -------------------------------
    git = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=proj,
                         capture_output=True, text=True, check=True)
    assert git.stdout == ""
    after = file_hashes(home)
    assert {k: after.get(k) for k in before} == before  # config.toml byte-identical
    assert not [k for k in after if k.endswith("hooks.json") or k.endswith(".toml")
                and k not in before]


def test_a_failing_codex_invocation_returns_codex_own_exit_code(tmp_path):
    home = make_codex_home(tmp_path)
    proj = make_codex_project(tmp_path)
    # Codex refuses a missing --output-schema file and exits non-zero
    argv = [str(codex_binary()), "exec", "--json", "--output-schema", str(tmp_path / "none"),
            "hello"]
    env = codex_env(home)
    plain = subprocess.run(argv, cwd=proj, env=env, capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, timeout=120)
    assert plain.returncode not in (0, 2), plain.stderr
    ran = subprocess.run([spool_cli(), "run", "--wait", "0", "--", *argv], cwd=proj, env=env,
                         capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert ran.returncode == plain.returncode, ran.stderr
    assert ran.stderr.rstrip().splitlines()[-1].startswith("spool run: ")


def test_in_an_inited_project_every_fired_event_is_stored_once(tmp_path):
    home = make_codex_home(tmp_path)
    proj = make_codex_project(tmp_path)
    port = free_port()
    secret, agent_id = "e2e-" + uuid.uuid4().hex, str(uuid.uuid4())
    spool_init(proj, home, f"http://127.0.0.1:{port}", agent_id, secret)
    res = run_session(proj, home, PROMPTS, script=script(), env=run_env(secret, port, agent_id),
                      receiver_port=port, wait_worker=30,
                      wrap=[spool_cli(), "run", "--wait", "20", "--"]).check()
    engine = db.open_db()
    try:
        with db.read(engine) as conn:
            events = Counter(r[0] for r in conn.execute(text("SELECT event FROM raw_events")))
    finally:
        engine.dispose()
    assert_hook_counts(events, expected_hook_counts(res, len(PROMPTS)))
    assert sum(events.values()) > 0


def test_sink_option_routes_this_run_only(tmp_path):
    """--sink file: the run's trace goes to files although an agent id would pick Infinium."""
    home = make_codex_home(tmp_path)
    proj = make_codex_project(tmp_path)
    port = free_port()
    secret, agent_id = "e2e-" + uuid.uuid4().hex, str(uuid.uuid4())
    out_dir = tmp_path / "file-sink"
    env = dict(run_env(secret, port, agent_id), SPOOL_FILE_SINK_DIR=str(out_dir))
    res = run_session(proj, home, PROMPTS[:1], script=script()[:1], env=env, receiver_port=port,
                      wait_worker=30,
                      wrap=[spool_cli(), "run", "--sink", "file", "--wait", "20", "--"]).check()
    assert res.received == []  # nothing went to the Infinium receiver
    files = sorted(out_dir.rglob("*.json"))
    assert len(files) == 1, files
    body = json.loads(files[0].read_text())
    assert body["input_summary"] == PROMPTS[0]
    summary = [ln for ln in res.runs[0].stderr.splitlines() if ln.startswith("spool run")]
    assert summary and summary[0].endswith("1 trace -> file: 1 sent"), summary
