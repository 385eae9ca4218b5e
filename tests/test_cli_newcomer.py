"""What a first-time user hit (issue 13), through the installed `spool` script."""
from __future__ import annotations

import re

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spool import __version__

SPOOL = str(Path(sys.executable).parent / "spool")
ROOT = Path(__file__).resolve().parent.parent


def run_spool(*args, cwd=None, env=None, timeout=60, input=None) -> subprocess.CompletedProcess:
    full = {**os.environ, "COLUMNS": "80", "SPOOL_NO_AUTOSTART": "1", **(env or {})}
    full = {k: v for k, v in full.items() if v is not None}
    return subprocess.run([SPOOL, *args], capture_output=True, text=True, cwd=cwd, env=full,
                          timeout=timeout, input=input)


def one_line_error(res, code: int) -> str:
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    return lines[0]


# --- 6: usage errors exit 2 --------------------------------------------------------------

@pytest.mark.parametrize("args", [("history", "-n", "abc"), ("errors", "-n", "0"),
                                  ("sessions", "--limit", "x"),
                                  ("cleanup", "--older-than", "soon")])
def test_malformed_option_values_exit_2_with_one_line(args, tmp_path):
    line = one_line_error(run_spool(*args, cwd=tmp_path), 2)
    assert line.startswith("Error: ") and "Pass" in line


def test_init_bad_granularity_exits_2_before_touching_anything(tmp_path):
    line = one_line_error(run_spool("init", "--no-interactive", "--granularity", "weekly",
                                    "--codex-bin", sys.executable, cwd=tmp_path), 2)
    assert "weekly" in line and "turn" in line
    assert not (tmp_path / ".spool").exists() and not (tmp_path / ".codex").exists()


# --- 14: --version, flags shown as flags ----------------------------------------------------

def test_version_flag_and_boolean_flags_show_without_a_metavar(tmp_path):
    res = run_spool("--version", cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.strip() == __version__
    helptext = run_spool("history", "--help", cwd=tmp_path).stdout
    assert "--json" in helptext and "<bool>" not in helptext and "BOOLEAN" not in helptext


def test_test_sh_skips_the_install_when_pyproject_is_unchanged():
    script = (ROOT / "scripts" / "test.sh").read_text()
    assert ".spool-installed" in script and "sha256sum pyproject.toml" in script
    assert "install.log" in script


def test_readme_prerequisites():
    readme = (ROOT / "README.md").read_text()
    assert "python3-venv" in readme and "git ≥ 2.28" in readme


# --- 4: URLs validated where entered; the environment named --------------------------------

@pytest.mark.parametrize("url", ["not a url", "https://999.999.1.1/api", "https://[::1",
                                 "ftp://example.test"])
def test_init_rejects_a_malformed_base_url_with_one_line(url, tmp_path):
    line = one_line_error(run_spool("init", "--no-interactive", "--base-url", url,
                                    "--codex-bin", sys.executable, cwd=tmp_path), 2)
    assert "--base-url" in line and "not a valid URL" in line
    assert not (tmp_path / ".spool").exists()


def test_update_credentials_rejects_a_malformed_base_url(tmp_path):
    line = one_line_error(run_spool("update-credentials", "--no-interactive", "--agent-id", "a",
                                    "--agent-secret", "s" * 40, "--base-url", "https://[::1",
                                    cwd=tmp_path), 2)
    assert "--base-url" in line


def test_a_bad_base_url_in_the_environment_is_named_by_test_and_doctor(tmp_path):
    env = {"INFINIUM_BASE_URL": "https://999.999.1.1/api", "INFINIUM_AGENT_ID": "agent"}
    line = one_line_error(run_spool("test", "--sink", "infinium", cwd=tmp_path, env=env), 1)
    assert "INFINIUM_BASE_URL" in line and "config.json" not in line
    res = run_spool("doctor", "--codex-bin", "/nonexistent/codex", cwd=tmp_path, env=env)
    assert res.returncode == 1
    assert "[FAIL] sinks: INFINIUM_BASE_URL" in res.stdout


# --- 5: unknown sinks named; `spool test` tests the configured ones ----------------------------

def test_doctor_fails_on_an_unknown_sink_naming_the_known_ones(tmp_path):
    res = run_spool("doctor", "--codex-bin", "/nonexistent/codex", cwd=tmp_path,
                    env={"SPOOL_SINKS": "infinum"})
    assert res.returncode == 1
    assert "[FAIL] sinks: unknown sink 'infinum' in SPOOL_SINKS." in res.stdout
    from spool.sinks import SINKS

    assert f"Known sinks: {', '.join(sorted(SINKS))}." in res.stdout  # the registry's names


def test_spool_test_refuses_an_unknown_configured_or_named_sink(tmp_path):
    line = one_line_error(run_spool("test", cwd=tmp_path, env={"SPOOL_SINKS": "otlpx"}), 1)
    assert "'otlpx'" in line and "infinium" in line
    line = one_line_error(run_spool("test", "--sink", "nope", cwd=tmp_path), 2)
    assert "'nope'" in line and "file" in line


def test_spool_test_tests_every_configured_sink_and_shows_the_url(tmp_path, spool_home):
    from spool.demo.receiver import Receiver

    with Receiver() as rx:
        env = {"SPOOL_SINKS": "file,infinium", "INFINIUM_BASE_URL": rx.url,
               "INFINIUM_AGENT_ID": "agent-7", "INFINIUM_AGENT_SECRET": "s" * 40,
               "SPOOL_ALLOW_INSECURE_HTTP": "1"}
        res = run_spool("test", cwd=tmp_path, env=env)
        assert res.returncode == 0, res.stderr
        assert len(rx.requests) == 1
        url = rx.url
    lines = res.stdout.strip().splitlines()
    assert lines[0].startswith(f"OK: file wrote a test trace to {spool_home / 'traces'}")
    assert "no HTTP response" not in res.stdout
    assert lines[1].startswith(f"OK: infinium {url}/agents/agent-7/trace answered HTTP 2")


# --- 10: the file sink keeps nothing; paused projects refuse ------------------------------------

def test_spool_test_file_sink_leaves_no_test_trace(tmp_path, spool_home):
    res = run_spool("test", "--sink", "file", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["ok"] is True and out["target"] == str(spool_home / "traces")
    assert list((spool_home / "traces").glob("*.json")) == []


def test_spool_test_refuses_while_the_project_is_paused(tmp_path, spool_home):
    assert run_spool("pause", cwd=tmp_path).returncode == 0
    line = one_line_error(run_spool("test", "--sink", "file", cwd=tmp_path), 1)
    assert "paused" in line and "spool resume" in line
    assert not (spool_home / "traces").exists()


# --- 1: tables at 80 columns; history filters and --follow -----------------------------------

import signal  # noqa: E402
import time  # noqa: E402

from support.queries import add_attempt, add_error, add_session, add_trace  # noqa: E402

SID = "019abcde-1111-7222-8333-444455556666"
LONG_NAME = "please refactor the delivery module so that it fits on one screen"


def _fits(out: str, width: int = 80) -> None:
    assert out.strip(), out
    assert max(len(ln) for ln in out.splitlines()) <= width, out


def test_history_fits_80_columns_with_name_and_whole_state(engine, tmp_path):
    now = time.time()
    add_trace(engine, "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", created_at=now, name=LONG_NAME,
              session_id=SID, outbox=(("infinium", "in_flight"),))
    add_trace(engine, "aaaa1111-sent", created_at=now - 5, outbox=(("file", "sent"),))
    res = run_spool("history", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    _fits(res.stdout)
    assert "0f1e2d3c-4b5" in res.stdout and "in_flight" in res.stdout and "…" not in res.stdout
    assert "please refactor" in res.stdout and "screen" in res.stdout  # folded, not dropped
    assert "019abcde" in res.stdout


def test_errors_fits_80_columns_with_the_message(engine, tmp_path):
    now = time.time()
    (ob,) = add_trace(engine, "bbbb2222-failed", created_at=now, outbox=(("infinium", "failed"),))
    add_attempt(engine, ob, "bbbb2222-failed", at=now, outcome="retry", status=503,
                message="upstream busy, try again in a minute please")
    res = run_spool("errors", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    _fits(res.stdout)
    assert "HTTP 503" in res.stdout and "minute" in res.stdout and "please" in res.stdout
    assert "retrying" in res.stdout


def test_sessions_fits_80_columns_with_full_id_project_state_events(engine, tmp_path):
    add_session(engine, SID, last=time.time(), project="/home/dev/a-rather-long-project-name",
                turns=3, events=1234)
    res = run_spool("sessions", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    _fits(res.stdout)
    for piece in (SID, "a-rather-long-project-name", "open", "1234"):
        assert piece in res.stdout, piece


def test_history_filters(engine, tmp_path):
    now = time.time()
    add_trace(engine, "t-old", created_at=now - 3 * 86400, project="/p/one", session_id="s-1")
    add_trace(engine, "t-one", created_at=now - 60, project="/p/one/sub", session_id="s-1",
              outbox=(("infinium", "failed"),))
    add_trace(engine, "t-two", created_at=now - 30, project="/p/two", session_id="s-2")

    def ids(*args):
        res = run_spool("history", "--json", *args, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        return [r["trace_id"] for r in json.loads(res.stdout)]

    assert ids() == ["t-two", "t-one", "t-old"]
    assert ids("--session", "s-1") == ["t-one", "t-old"]
    assert ids("--project", "/p/one") == ["t-one", "t-old"]
    assert ids("--state", "failed") == ["t-one"]
    assert ids("--since", "1h") == ["t-two", "t-one"]
    assert ids("--since", "2h", "--project", "/p/two") == ["t-two"]
    one_line_error(run_spool("history", "--state", "lost", cwd=tmp_path), 2)
    one_line_error(run_spool("history", "--since", "yesterdayish", cwd=tmp_path), 2)


def test_history_follow_prints_new_traces_until_interrupted(engine, tmp_path):
    add_trace(engine, "t-before", created_at=time.time() - 10)
    proc = subprocess.Popen([SPOOL, "history", "--follow", "--session", "s-f"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "80"})
    try:
        deadline = time.time() + 30
        # Wait until it follows (its stderr says so), then add traces.
        assert "Following" in proc.stderr.readline()
        add_trace(engine, "t-other", created_at=time.time(), session_id="s-x")
        add_trace(engine, "t-new-1", created_at=time.time(), session_id="s-f", name="first")
        seen = ""
        while "t-new-1" not in seen and time.time() < deadline:
            seen += proc.stdout.readline()
        assert "t-new-1" in seen and "first" in seen and "t-other" not in seen
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- 9: one row per failure, with what became of it --------------------------------------------

def test_errors_lists_each_delivery_failure_once_with_its_outcome(engine, tmp_path):
    now = time.time()
    (ob,) = add_trace(engine, "cccc3333-later", created_at=now - 30)  # sent in the end
    add_attempt(engine, ob, "cccc3333-later", at=now - 20, outcome="retry", status=500,
                message="boom")
    (dead,) = add_trace(engine, "dddd4444-dead", created_at=now - 10,
                        outbox=(("infinium", "dead"),))
    add_attempt(engine, dead, "dddd4444-dead", at=now - 5, outcome="dead", status=401,
                message="bad secret")
    add_error(engine, at=now - 5, source="deliver:infinium", message="dead dddd4444-dead: 401")
    res = run_spool("errors", "--json", cwd=tmp_path)
    rows = json.loads(res.stdout)
    assert [(r["trace_id"], r["result"]) for r in rows] == [("dddd4444-dead", "dead"),
                                                            ("cccc3333-later", "later sent")]
    table = run_spool("errors", cwd=tmp_path).stdout
    assert "later sent" in table and "deliver:" not in table


# --- 11: attempts are requests made, not reset by retry ----------------------------------------

def test_show_counts_requests_made_even_after_retry(engine, tmp_path):
    now = time.time()
    (ob,) = add_trace(engine, "eeee5555-x", created_at=now - 30, attempts=2)
    for i, (out, st) in enumerate((("retry", 500), ("retry", 503), ("sent", 200))):
        add_attempt(engine, ob, "eeee5555-x", at=now - 20 + i, outcome=out, status=st)
    add_attempt(engine, ob, "eeee5555-x", at=now - 25, outcome="held")  # no request made
    res = run_spool("show", "eeee5555", cwd=tmp_path)
    assert "infinium: sent after 3 attempt(s)" in res.stdout, res.stdout
    (row,) = json.loads(run_spool("history", "--json", cwd=tmp_path).stdout)
    assert row["attempts"] == 3


# --- 13: show has model, exit codes, answer, cwd/branch, tokens; a session id works ----------

def _turn_body(tid: str) -> dict:
    return {"trace_id": tid, "kind": "turn", "name": "say hello", "started_at": 1.7e9,
            "ended_at": 1.7e9 + 2, "duration_ms": 2000.0, "output_summary": "Hello there!",
            "usage": {"input": 1200, "output": 34, "total": 1234},
            "environment": {"model": "gpt-5.1-codex", "cwd": "/home/dev/proj",
                            "git_branch": "main"},
            "steps": [{"kind": "user_prompt", "name": "say hello", "started_at": 1.7e9,
                       "ended_at": 1.7e9, "duration_ms": 0.0},
                      {"kind": "tool_call", "tool_name": "shell", "command": "echo hello",
                       "exit_code": 0, "started_at": 1.7e9, "ended_at": 1.7e9 + 0.2,
                       "duration_ms": 200.0}]}


def test_show_tells_model_exit_codes_answer_cwd_branch_tokens(engine, tmp_path):
    add_trace(engine, "ffff6666-t1", created_at=time.time(), session_id=SID,
              body=_turn_body("ffff6666-t1"))
    out = run_spool("show", "ffff6666", cwd=tmp_path).stdout
    for piece in ("model gpt-5.1-codex", "in /home/dev/proj (branch main)", "exit 0",
                  "Hello there!", "in 1,200", "200ms"):
        assert piece in out, (piece, out)
    assert "0ms" not in out.replace("200ms", "")


def test_show_accepts_a_session_id_prefix(engine, tmp_path):
    add_session(engine, SID, last=time.time())
    add_trace(engine, "ffff7777-t1", created_at=time.time() - 5, session_id=SID,
              body=_turn_body("ffff7777-t1"))
    add_trace(engine, "ffff7777-t2", created_at=time.time(), session_id=SID,
              body=_turn_body("ffff7777-t2"))
    res = run_spool("show", SID[:10], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.index("trace ffff7777-t1") < res.stdout.index("trace ffff7777-t2")
    line = one_line_error(run_spool("show", "zzzz", cwd=tmp_path), 1)
    assert "no trace or session" in line


# --- 7 / 8: init without a keyring; doctor remembers --codex-home/--codex-bin -------------------


NO_KEYRING = {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
              "INFINIUM_AGENT_SECRET": None}


def test_interactive_init_without_keyring_fails_before_asking_or_writing(tmp_path, stub_codex):
    proj = tmp_path / "proj"
    proj.mkdir()
    res = run_spool("init", "--agent-id", "agent-1", "--codex-home", str(tmp_path / "ch"),
                    "--codex-bin", str(stub_codex), cwd=proj, env=NO_KEYRING,
                    input="typed-secret-value\n")
    line = one_line_error(res, 1)
    assert "keyring" in line and "INFINIUM_AGENT_SECRET" in line
    assert "secret" not in res.stdout.lower()  # never asked
    assert not (proj / ".spool").exists() and not (proj / ".codex").exists()


def test_doctor_remembers_codex_home_and_bin_from_init(tmp_path, stub_codex):
    proj = tmp_path / "proj"
    proj.mkdir()
    home = tmp_path / "ch"
    res = run_spool("init", "--no-interactive", "--no-trust-project", "--codex-home", str(home),
                    "--codex-bin", str(stub_codex), cwd=proj)
    assert res.returncode == 0, res.stderr
    cfg = (proj / ".spool" / "config.json").read_text()
    assert str(stub_codex) in cfg and str(home) in cfg
    out = run_spool("doctor", cwd=proj, env={"PATH": "/usr/bin:/bin", "CODEX_HOME": None}).stdout
    assert f"[ok  ] codex: Codex 0.169.0 at {stub_codex}" in out, out
    assert f"[ok  ] feature flag: [features] hooks = true in {home}" in out, out


# --- 14: the demo says where its home was and what to do next ------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("keep", [False, True])
def test_demo_says_where_its_home_was_and_suggests_a_next_command(tmp_path, keep):
    res = run_spool("demo", *(["--keep"] if keep else []), cwd=tmp_path, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    last = res.stdout.strip().splitlines()[-1]
    home = Path(res.stdout.split("spool demo: home ", 1)[1].split("\n", 1)[0])
    if keep:
        assert f"SPOOL_HOME={home} " in last and "spool show" in last and home.is_dir()
        import shutil

        shutil.rmtree(home.parent, ignore_errors=True)
    else:
        assert f"removed the demo's temporary home {home}" in last and "spool init" in last
        assert not home.exists()


def test_readme_lists_every_command_and_visible_flag():
    import typer.main

    from spool.cli import get_app

    readme = (ROOT / "README.md").read_text()
    group = typer.main.get_command(get_app())
    for name, cmd in group.commands.items():
        rows = [line for line in readme.splitlines() if line.startswith("| `spool")
                and re.search(rf"`spool {name}[ `]", line.split(" | ")[0])]
        assert rows, f"no row for `spool {name}` in the README's command table"
        section = rows[0]
        for p in cmd.params:
            if p.param_type_name == "option" and not p.hidden:
                longest = max(p.opts + p.secondary_opts, key=len)
                assert longest in section, (name, longest)
    assert "`spool --version`" in readme
