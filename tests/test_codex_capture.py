"""The REAL Codex CLI fires spool's hooks after `spool init` (no bypass flag).

`spool init --no-interactive` on a scratch git project, then `codex exec` and
`codex exec resume --last` against the fake model server (inside `unshare -n`
with only loopback up, when the machine allows it).  Every lifecycle hook event of
the run must be in raw_events, once, for one session.  The mid-turn events run
async (issue 20): `codex exec` kills those still running when it exits, so the
last of them may be missing, and they may arrive in any order; none may be
duplicated or differ from what Codex sent (the traces then take the missing ones
from the rollout: tests/test_async_e2e.py).
"""
from __future__ import annotations

import json
from collections import Counter

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from spool import db, ingest
from spool.cli import get_app

from support.codex import codex_binary, make_codex_home, make_codex_project, run_session
from support.fake_model import default_script

pytestmark = pytest.mark.e2e

EXPECTED = {"SessionStart", "UserPromptSubmit", "PreModelRequest", "PostModelRequest",
            "PreToolUse", "PostToolUse", "Stop", "SessionEnd"}


def test_codex_exec_and_resume_fire_every_hook_into_raw_events(tmp_path):
    binary = codex_binary()
    home = make_codex_home(tmp_path)
    proj = make_codex_project(tmp_path)
    r = CliRunner().invoke(get_app(), ["init", "--no-interactive", "--project", str(proj),
                                       "--codex-home", str(home), "--codex-bin", str(binary)])
    assert r.exit_code == 0, r.output

    script = default_script()
    res = run_session(proj, home, ["run the three commands", "one more"], script=script,
                      env={"SPOOL_NO_AUTOSTART": "1"}).check()

    engine = db.open_db()
    try:
        ingest.ingest_all(engine)
        with db.read(engine) as conn:
            rows = conn.execute(text(
                "SELECT event, session_id, turn_id, status, payload, cwd FROM raw_events "
                "ORDER BY id")).all()
    finally:
        engine.dispose()

    assert rows, "no hook event reached spool: are the hooks trusted?"
    assert {r.status for r in rows} == {"ok"}
    events = [r.event for r in rows]
    counts = Counter(events)
    from spool.codex import ASYNC_EVENTS

    assert EXPECTED - set(ASYNC_EVENTS) <= set(counts), counts
    assert len({r.session_id for r in rows}) == 1
    assert {r.cwd for r in rows} == {str(proj)}
    # two turns: exec and resume, each opening and closing the session
    assert counts["SessionStart"] == 2 and counts["SessionEnd"] == 2 and counts["Stop"] == 2
    assert counts["UserPromptSubmit"] == 2
    starts = [json.loads(r.payload)["source"] for r in rows if r.event == "SessionStart"]
    assert starts == ["startup", "resume"]
    # the tool calls of the script through Pre/PostToolUse (async: a subset, never twice)
    calls = [c.cmd for turn in script for step in turn for c in step if hasattr(c, "cmd")]
    pre = [json.loads(r.payload)["tool_input"]["command"] for r in rows if r.event == "PreToolUse"]
    assert not Counter(pre) - Counter(calls), (pre, calls)
    assert counts["PostToolUse"] <= len(calls)
    # Pre/PostModelRequest: at most one per model request, with the usage the model sent
    assert counts["PreModelRequest"] <= len(res.served)
    assert counts["PostModelRequest"] <= len(res.served)
    got = [json.loads(r.payload)["token_usage"] for r in rows if r.event == "PostModelRequest"]
    sent = [s["usage"] for s in res.served]
    assert not (Counter((u["input_tokens"], u["output_tokens"], u["cached_input_tokens"])
                        for u in got)
                - Counter((u["input_tokens"], u["output_tokens"],
                           u["input_tokens_details"]["cached_tokens"]) for u in sent)), (got, sent)
    # the failing command really failed: Codex ran it and told the model exit code 3
    outputs = {req["input"][-1]["call_id"]: req["input"][-1]["output"] for req in res.requests
               if req["input"] and req["input"][-1].get("type") == "function_call_output"}
    failing = [s for s in res.served if any("exit 3" in c for c in s["commands"])]
    assert len(failing) == 1
    assert "Process exited with code 3" in outputs[failing[0]["call_ids"][0]]
    post = [json.loads(r.payload)["tool_use_id"] for r in rows if r.event == "PostToolUse"]
    assert len(set(post)) == len(post) <= len(calls)
    # turn ids: every event but SessionStart/SessionEnd carries one, two turns in all
    turn_ids = {r.turn_id for r in rows if r.event not in ("SessionStart", "SessionEnd")}
    assert None not in turn_ids and len(turn_ids) == 2
