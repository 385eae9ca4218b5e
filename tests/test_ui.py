"""`spool ui` over real HTTP on loopback (no browser): the token, every page, filters,
keyset pages, redaction, the waterfall's failed marks, `spool export --format html`."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime

import pytest
from typer.testing import CliRunner

from spool import db
from spool.cli import get_app
from spool.ui.waterfall import waterfall
from support.ui import fill_from_fixture, fill_from_subagent_fixture, get, ui_server

SECRET = "sk-proj-" + "Q7w9xZ2kLm4Np6Rt8Vb0Yc3Hd5Jf1Gs"


@pytest.fixture
def filled(tmp_path, engine):
    return fill_from_fixture(tmp_path, engine, secret=SECRET)


def test_every_request_needs_the_token(engine, filled):
    with ui_server(engine) as s:
        assert get(s.url)[0] == 200
        root = s.url.rsplit(s.token, 1)[0]
        for bad in ("", "session/" + filled["session_id"], "x" * len(s.token) + "/",
                    s.token[:-1] + "/", s.token.upper() + "/"):
            status, body = get(root + bad)
            assert status == 403, bad
            assert filled["session_id"] not in body
        # a new start makes a new token: the old URL no longer works
        with ui_server(engine) as other:
            assert other.token != s.token
            assert get(other.url.replace(other.token, s.token))[0] == 403


def test_pages_show_the_recorded_session(engine, filled):
    sid, turns = filled["session_id"], filled["turns"]
    with ui_server(engine) as s:
        status, page = get(s.url)
        assert status == 200 and sid in page and filled["project"] in page
        status, page = get(s.url + "session/" + sid)
        assert status == 200
        for t in turns:
            assert f'href="turn/{t["trace_id"]}"' in page
        status, page = get(s.url + "turn/" + turns[0]["trace_id"])
        assert status == 200
        for action in ("model_request", "tool_use"):
            want = sum(1 for st in turns[0]["steps"] if st["action"] == action)
            assert want > 0 and page.count(f'data-action="{action}"') == want
        assert 'data-failed="1"' not in page  # the recorded commands all exited 0
        assert "echo hello" in page
        status, page = get(s.url + "usage")
        total = sum(t["usage"]["total"] for t in turns)
        assert status == 200 and "<svg" in page and f"{total:,}" in page
        status, page = get(s.url + "delivery")
        assert status == 200 and f'href="turn/{turns[0]["trace_id"]}"' in page
        assert re.search(r"<td class=n>3</td>", page)  # three traces pending for the file sink
        assert get(s.url + "session/nope")[0] == 404
        assert get(s.url + "turn/nope")[0] == 404
        assert get(s.url + "?after=garbage")[0] == 404


def test_secrets_are_redacted_on_every_page(engine, filled):
    sid, turns = filled["session_id"], filled["turns"]
    # stored already redacted (redaction comes before any cut, so at trace building)
    assert not any(SECRET in (t["input_summary"] or "") for t in turns)
    assert any("[REDACTED:" in (t["input_summary"] or "") for t in turns)
    with ui_server(engine) as s:
        for path in ("", "session/" + sid, "usage", "delivery",
                     *("turn/" + t["trace_id"] for t in turns)):
            status, page = get(s.url + path)
            assert status == 200 and SECRET not in page, path
        assert "[REDACTED:" in get(s.url + "turn/" + turns[1]["trace_id"])[1]


def _insert_sessions(engine, n: int, t0: float) -> list[str]:
    """n sessions, one a minute (two share each timestamp, to test the tie-break)."""
    ids = [f"s-{i:05d}" for i in range(n)]
    with db.write(engine) as conn:
        conn.exec_driver_sql(
            "INSERT INTO sessions (session_id, project, first_event_at, last_event_at, state)"
            " VALUES (?, ?, ?, ?, ?)",
            [(sid, "/p/a" if i % 3 else "/p/b", t0 + (i // 2) * 60, t0 + (i // 2) * 60,
              "final" if i % 2 else "open") for i, sid in enumerate(ids)])
    return ids


def _listed(page: str) -> list[str]:
    return re.findall(r'href="session/(s-\d+)"', page)


def _next(page: str) -> str | None:
    m = re.search(r'id="next" href="\./\?([^"]+)"', page)
    return m.group(1).replace("&amp;", "&") if m else None


def test_keyset_pages_cover_every_session_once_newest_first(engine):
    ids = _insert_sessions(engine, 123, 1_700_000_000.0)
    seen = []
    with ui_server(engine) as s:
        query = ""
        for _ in range(10):
            page = get(s.url + ("?" + query if query else ""))[1]
            seen += _listed(page)
            query = _next(page)
            if query is None:
                break
    assert len(seen) == 123 and set(seen) == set(ids)
    assert seen[:2] == ["s-00122", "s-00121"]  # newest first, ties by insertion, newest first


def test_filters_by_state_project_and_date(engine):
    t0 = datetime(2026, 3, 1, 12, 0).timestamp()
    _insert_sessions(engine, 40, t0)
    with ui_server(engine) as s:
        listed = _listed(get(s.url + "?state=final")[1])
        assert listed and all(int(x[2:]) % 2 for x in listed)
        listed = _listed(get(s.url + "?project=/p/b")[1])
        assert listed and all(int(x[2:]) % 3 == 0 for x in listed)
        assert len(_listed(get(s.url + "?date=2026-03-01")[1])) == 40
        assert _listed(get(s.url + "?date=2026-03-02")[1]) == []
        assert get(s.url + "?date=March")[0] == 404


def test_the_waterfall_marks_failed_steps_and_places_bars_in_time():
    body = {"started_at": 100.0, "ended_at": 110.0, "steps": [
        {"action": "model_request", "started_at": 100.0, "ended_at": 105.0, "duration_ms": 5000,
         "usage": {"input": 10, "output": 2}},
        {"action": "tool_use", "tool_name": "Bash", "command": "sh -c 'exit 3'",
         "started_at": 105.0, "ended_at": 110.0, "duration_ms": 5000, "exit_code": 3,
         "error": {"type": "ToolError", "message": "exit 3"}},
        {"action": "tool_use", "tool_name": "Bash", "command": "true", "started_at": 106.0,
         "ended_at": 107.0, "exit_code": 0}]}
    html = waterfall(body)
    rows = re.findall(r'<details class="([^"]*)" data-action="(\w+)" data-failed="(\d)"', html)
    assert rows == [("model_request", "model_request", "0"),
                    ("tool_use failed", "tool_use", "1"), ("tool_use", "tool_use", "0")]
    assert re.findall(r"left:([\d.]+)%;width:([\d.]+)%", html) == [
        ("0.00", "50.00"), ("50.00", "50.00"), ("60.00", "10.00")]
    assert "exit 3" in html and "ToolError" in html


def test_export_html_is_one_self_contained_file(engine, filled, tmp_path):
    out = tmp_path / "s.html"
    res = CliRunner().invoke(get_app(), ["export", filled["session_id"][:8], "--format", "html",
                                         "-o", str(out)])
    assert res.exit_code == 0, res.output
    page = out.read_text()
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    assert page.count('<div class="tl">') == 2 and SECRET not in page
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing loaded from elsewhere
    for t in filled["turns"]:
        assert f'id="t-{t["trace_id"]}"' in page


def test_the_command_prints_a_tokened_url_and_stops_on_ctrl_c(engine, filled):
    proc = subprocess.Popen([sys.executable, "-m", "spool", "ui", "--no-browser"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ))
    try:
        line = proc.stdout.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+/([\w-]+)/)", line)
        assert m, line
        assert get(m.group(1))[0] == 200
        assert get(m.group(1).replace(m.group(2), "nope"))[0] == 403
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_taken_port_is_one_clear_line(engine):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = CliRunner().invoke(get_app(), ["ui", "--port", str(port), "--no-browser"])
    assert res.exit_code == 1
    assert f"cannot listen on 127.0.0.1:{port}" in res.output and "Traceback" not in res.output


def test_a_session_with_a_subagent_lists_it(engine, tmp_path):
    filled = fill_from_subagent_fixture(tmp_path, engine)
    assert filled["agents"]
    with ui_server(engine) as s:
        status, page = get(s.url + "session/" + filled["session_id"])
    assert status == 200 and "<h2>Subagents</h2>" in page
    for agent in filled["agents"]:
        assert agent in page


def test_filter_by_run_lists_a_runs_sessions_together(engine):
    """Two sessions started with one SPOOL_RUN_ID (through the real hook) are listed
    together by ?run=, each shows its run, and the session page names it."""
    import json

    from support.hookproc import run_hook
    from support.recorded import codex_like_session
    from spool import aggregate, ingest

    for sid, env in (("run-s1", {"SPOOL_RUN_ID": "run-A"}), ("run-s2", {"SPOOL_RUN_ID": "run-A"}),
                     ("other", None)):
        for e in codex_like_session(sid, turns=1):
            assert run_hook(json.dumps(e).encode(), env=env).returncode == 0
    ingest.ingest_all(engine)
    aggregate.aggregate(engine, time.time() + 60)
    with ui_server(engine) as s:
        listed = lambda page: sorted(re.findall(r'href="session/([^"]+)"', page))  # noqa: E731
        assert listed(get(s.url)[1]) == ["other", "run-s1", "run-s2"]
        page = get(s.url + "?run=run-A")[1]
        assert listed(page) == ["run-s1", "run-s2"]
        assert page.count('href="./?run=run-A">run run-A</a>') == 2  # each row links its run
        assert 'name="run" placeholder="run id" value="run-A"' in page  # the form keeps it
        assert listed(get(s.url + "?run=run-B")[1]) == []
        status, page = get(s.url + "session/run-s1")
        assert status == 200 and "<th>Run</th>" in page and "run run-A" in page
        status, page = get(s.url + "session/other")
        assert status == 200 and "<th>Run</th>" not in page
