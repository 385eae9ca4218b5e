"""A real Codex killed mid-command (issue 18): its incomplete trace within about a minute.

The real Codex CLI runs a long command for the fake model; as soon as the PreToolUse hook
has stored the event (with the pid of the Codex process it ran under), the test SIGKILLs
that process, as a crash or an OOM kill would.  No Stop or SessionEnd ever comes.  The
worker the hooks started must notice the dead process and finalise the session as
incomplete ("codex exited") within ~60 s, long before the default 10-minute TTL.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
import uuid

import pytest

from spool import paths

from support.codex import codex_binary, free_port, make_codex_home, make_codex_project, run_session
from support.e2e import codex_run_env, spool_init
from support.fake_model import Final, ToolCall
from support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LONG = "sleep 45"


def _rows(sql: str, *args) -> list[tuple]:
    path = paths.db_path(paths.spool_home())
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []  # not migrated yet
    finally:
        conn.close()


def test_codex_killed_mid_command_gives_an_incomplete_trace_within_a_minute(tmp_path):
    home = make_codex_home(tmp_path)
    proj = make_codex_project(tmp_path)
    secret = "e2e-" + uuid.uuid4().hex
    port = free_port()
    spool_init(proj, home, f"http://127.0.0.1:{port}", str(uuid.uuid4()), secret)
    env = codex_run_env(secret)
    env.pop("SPOOL_SESSION_END_GRACE")  # defaults, as users get them (TTL 600 s)
    env["SPOOL_WORKER_IDLE_EXIT"] = "120"
    script = [[[ToolCall(LONG)], [Final("never reached")]]]
    result: dict = {}

    def codex() -> None:
        result["res"] = run_session(proj, home, ["run the long command"], script=script,
                                    env=env, codex_bin=codex_binary(), timeout=120)

    thread = threading.Thread(target=codex, daemon=True)
    thread.start()
    pid, started = wait_until(lambda: next(iter(_rows(
        "SELECT codex_pid, codex_start FROM raw_events WHERE CAST(payload AS TEXT) LIKE ? "
        "AND codex_pid IS NOT NULL", f"%{LONG}%")), None), 120, 0.05,
        what="the PreToolUse of the long command")
    with open(f"/proc/{pid}/stat", "rb") as f:  # the recorded process is the one alive now
        stat = f.read()
    assert int(stat[stat.rindex(b")") + 2:].split()[19]) == started
    os.kill(pid, signal.SIGKILL)
    killed_at = time.time()
    thread.join(150)
    assert not thread.is_alive()
    assert result["res"].runs[0].returncode != 0  # Codex did not finish: it was killed

    def turn_trace():
        rows = _rows("SELECT body, created_at FROM traces WHERE kind = 'turn'")
        return rows[0] if rows else None

    body, created_at = wait_until(turn_trace, 90, 0.2, what="the killed session's turn trace")
    body = json.loads(body)
    print(f"turn trace {created_at - killed_at:.1f} s after the kill")
    assert created_at - killed_at <= 60
    assert body["incomplete"] is True
    assert any("codex exited" in n for n in body.get("notes") or []), body.get("notes")
    tools = [s for s in body["steps"] if s["action"] == "tool_use"]
    assert [t.get("command") for t in tools] == [LONG]
    assert tools[0].get("exit_code") is None  # it never finished
    state = _rows("SELECT state FROM sessions")
    assert state == [("final",)], state
