"""Acceptance of issue 16 with the REAL Codex CLI and the real ccusage: same sessions,
same tokens, cost within 2 %.

A two-turn Codex session (``codex exec`` + ``exec resume``) against the fake model,
named ``gpt-5`` so both tools price it; the hooks autostart spool's worker, which
traces it and delivers to a loopback receiver.  Then spool's per-request usage is
recorded from the stored trace bodies (``usage.backfill``: the same function the
migration runs; the aggregate writer records them as it writes) and
``spool usage --by session --json`` is compared with ``ccusage codex session
--json --offline`` run on the same CODEX_HOME.  ccusage's ``inputTokens``
excludes cached tokens; spool's ``input`` includes them.
"""
from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest

from spool import db, usage

from support.codex import (codex_binary, free_port, make_codex_home, make_codex_project, npm_tool,
                          run_session)
from support.e2e import PROMPTS, codex_run_env, read_rollout, script, spool_cli, spool_init

pytestmark = pytest.mark.e2e


def test_spool_tokens_equal_ccusage_and_cost_within_2_percent(tmp_path):
    cc = npm_tool("ccusage")
    home = make_codex_home(tmp_path)
    proj = make_codex_project(tmp_path)
    port = free_port()
    secret = "e2e-" + uuid.uuid4().hex
    spool_init(proj, home, f"http://127.0.0.1:{port}", str(uuid.uuid4()), secret)
    res = run_session(proj, home, PROMPTS, script=script(), env=codex_run_env(secret),
                      codex_bin=codex_binary(), receiver_port=port, wait_worker=45,
                      extra_args=["-c", 'model="gpt-5"']).check()
    assert not res.worker_timed_out
    rollout = read_rollout(home)
    sid = rollout["session_id"]

    engine = db.open_db()
    try:
        raw = engine.raw_connection()
        con = raw.driver_connection
        con.execute("BEGIN IMMEDIATE")
        usage.backfill(con)
        con.execute("COMMIT")
        raw.close()
    finally:
        engine.dispose()
    out = subprocess.run([spool_cli(), "usage", "--by", "session", "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    mine = {r["key"]: r for r in json.loads(out.stdout)["rows"]}
    assert list(mine) == [sid]
    s = mine[sid]

    env = dict(os.environ, CODEX_HOME=str(home))
    theirs = json.loads(subprocess.run([str(cc), "codex", "session", "--json", "--offline"],
                                       env=env, capture_output=True, text=True, timeout=120,
                                       check=True).stdout)["sessions"]
    assert len(theirs) == 1 and sid in theirs[0]["sessionId"], theirs
    t = theirs[0]
    print(f"spool: {s}\nccusage: {t}")
    assert s["models"] == ["gpt-5"] and list(t["models"]) == ["gpt-5"]
    assert s["requests"] == len(res.served)
    assert s["input"] == t["inputTokens"] + t["cacheReadTokens"]  # ccusage's input excludes cached
    assert s["cached"] == t["cacheReadTokens"]
    assert s["output"] == t["outputTokens"]
    assert s["reasoning"] == t["reasoningOutputTokens"]
    assert s["total"] == t["totalTokens"] == rollout["total"]["total_tokens"]
    assert s["unpriced"] == 0 and t["costUSD"] > 0
    assert s["cost_usd"] == pytest.approx(t["costUSD"], rel=0.02)
