"""`spool import` end to end: a REAL Codex session run with no hooks at all, imported from
its rollout, aggregated and delivered to the loopback Infinium receiver; tokens, exit codes,
prompts and answers must equal what Codex wrote in the rollout."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codex_env import codex_binary, make_codex_home, make_project, run_session
from fake_model import Final, ToolCall
from spool import aggregate, config, credentials, db, ingest
from spool.deliver import deliver
from spool.demo.receiver import Receiver
from spool.trace import trace_id
from test_deliver_support import AGENT, SECRET
from test_e2e import USAGE_KEYS, read_rollout

pytestmark = pytest.mark.e2e

FAILING = "sh -c 'exit 4'"
PROMPTS = ["run two commands", "and one more"]
FINALS = ["First turn done.", "Second turn done."]
SCRIPT = [
    [[ToolCall("echo imported")], [ToolCall(FAILING)], [Final(FINALS[0])]],
    [[ToolCall("ls -1")], [Final(FINALS[1])]],
]


def test_real_codex_session_without_hooks_is_imported_and_delivered(tmp_path, monkeypatch):
    home = make_codex_home(tmp_path)
    proj = make_project(tmp_path)
    res = run_session(proj, home, PROMPTS, script=SCRIPT, codex_bin=codex_binary()).check()
    assert len(res.served) == sum(len(t) for t in SCRIPT)
    truth = read_rollout(home)
    assert len(truth["turns"]) == 2

    with Receiver() as rx:
        monkeypatch.setenv("INFINIUM_AGENT_SECRET", SECRET)
        config.write_file(proj, {"agent_id": AGENT, "base_url": rx.url, "granularity": "both"})
        credentials.approve_base_url(None, proj, rx.url)
        # The real CLI, as a user runs it (rollout just written: --settle 0 ends it now).
        spool = Path(sys.executable).parent / "spool"
        env = dict(os.environ, CODEX_HOME=str(home), SPOOL_NO_AUTOSTART="1")
        r = subprocess.run([str(spool), "import", "--json", "--settle", "0"], env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        summary = json.loads(r.stdout)
        assert (summary["files"], summary["sessions"], summary["turns"]) == (1, 1, 2)
        assert summary["tokens"]["total_tokens"] == truth["total"]["total_tokens"]

        engine = db.open_db()
        try:
            ingest.ingest_all(engine)
            got = aggregate.aggregate(engine, time.time() + 60)
            assert (got.turn_traces, got.session_traces) == (2, 1)
            sent = deliver(engine, time.time() + 60)
            assert sent.sent == 3
            with db.read(engine) as conn:
                stored = {row[0]: json.loads(row[1]) for row in conn.exec_driver_sql(
                    "SELECT trace_id, body FROM traces")}
        finally:
            engine.dispose()
        received = {q.key: q.json() for q in rx.requests if q.status == 200}

    sid = truth["session_id"]
    assert set(received) == set(stored)
    for i, t in enumerate(truth["turns"]):
        tid = trace_id(sid, t["turn_id"], "turn")
        body = received[tid]
        assert body["input_summary"] == PROMPTS[i]
        assert body["output_summary"] == t["last_message"] == FINALS[i]
        u = body["llm_usage"]
        assert u["prompt_tokens"] == t["usage"]["input_tokens"]
        assert u["completion_tokens"] == t["usage"]["output_tokens"]
        assert u["total_tokens"] == t["usage"]["total_tokens"]
        assert u["api_calls_count"] == len(t["usages"])
        tags = body["environment"]["custom_tags"]
        assert tags["cached_input_tokens"] == t["usage"]["cached_input_tokens"]
        assert tags["reasoning_output_tokens"] == t["usage"]["reasoning_output_tokens"]
        steps = [s for s in stored[tid]["steps"] if s["action"] == "tool_use"]
        assert {s["tool_use_id"]: s["exit_code"] for s in steps} == \
            {c: truth["commands"][c]["exit_code"] for c in t["commands"]}
        assert "imported from the Codex rollout file (spool import)" in stored[tid]["notes"]
    assert sorted(s["exit_code"] for tid in stored for s in stored[tid]["steps"]
                  if s["action"] == "tool_use" and stored[tid]["kind"] == "turn") == [0, 0, 4]
    summary_body = received[trace_id(sid, None, "session", 1)]
    total = truth["total"]
    assert summary_body["llm_usage"]["total_tokens"] == total["total_tokens"]
    assert summary_body["llm_usage"]["prompt_tokens"] == total["input_tokens"]
    assert summary_body["llm_usage"]["completion_tokens"] == total["output_tokens"]
    assert {k: sum(t["usage"][k] for t in truth["turns"]) for k in USAGE_KEYS} == \
        {k: total[k] for k in USAGE_KEYS}
