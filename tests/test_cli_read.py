"""The read/state commands through Typer's runner and the installed `spool` script."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from spool import config, db, paths
from spool.cli import get_app

from support.hookproc import run_hook
from support.queries import (T0, add_attempt, add_error, add_quarantine, add_session, add_trace,
                             outbox_rows)
from support.recorded import fixture_payloads

SPOOL = str(Path(sys.executable).parent / "spool")


@pytest.fixture
def runner():
    return CliRunner()


def invoke(runner, *args, input=None):
    return runner.invoke(get_app(), list(args), input=input, env={"COLUMNS": "200"})


def run_spool(*args, cwd=None, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([SPOOL, *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=dict(os.environ))


def populate(engine) -> None:
    add_trace(engine, "aaaa-sent", created_at=T0)
    (f,) = add_trace(engine, "bbbb-failed", created_at=T0 + 10, outbox=(("infinium", "failed"),),
                     attempts=3, last_status=503, last_error="HTTP 503: busy")
    add_attempt(engine, f, "bbbb-failed", at=T0 + 11, outcome="retry", status=503,
                error_class="HTTP 503", message="busy")
    add_trace(engine, "cccc-dead", created_at=T0 + 20, outbox=(("infinium", "dead"),))
    add_trace(engine, "dddd-held", created_at=T0 + 30, outbox=(("infinium", "held"),),
              held_reason="no credentials")
    add_trace(engine, "eeee-pending", created_at=T0 + 40, outbox=(("infinium", "pending"),))
    add_quarantine(engine, at=T0 + 12, reason="not JSON")
    add_error(engine, at=T0 + 13, source="worker", message="job crashed")


# --- status ------------------------------------------------------------------------------

def test_status_json_reports_counts_outbox_and_worker(runner, engine, spool_home, tmp_path,
                                                      monkeypatch):
    populate(engine)
    monkeypatch.chdir(tmp_path)
    res = invoke(runner, "status", "--json")
    assert res.exit_code == 0, res.output
    st = json.loads(res.stdout)
    assert st["traces"] == 5 and st["quarantined"] == 1 and st["events"] == 0
    assert st["outbox"] == {"pending": 1, "in_flight": 0, "sent": 1, "failed": 1, "dead": 1,
                            "held": 1}
    assert st["next_attempt_at"] == T0 + 10 + 60  # the failed row's (earlier than pending's)
    assert st["paused"] is False and st["config_source"] == "defaults"
    assert st["project"] == str(tmp_path.resolve())
    assert st["worker_running"] is False and st["worker_pid"] is None
    assert st["spool_bytes"] >= paths.db_path(spool_home).stat().st_size > 0
    assert st["overflow_files"] == 0

    # A worker holding the lock (here: this process, on its own open file).
    lock = spool_home / paths.WORKER_LOCK
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"4242\n")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        (spool_home / "overflow-1-2-x.jsonl").write_text("{}\n")
        st = json.loads(invoke(runner, "status", "--json").stdout)
        assert st["worker_running"] is True and st["worker_pid"] == 4242
        assert st["overflow_files"] == 1
    finally:
        os.close(fd)
    st = json.loads(invoke(runner, "status", "--json").stdout)
    assert st["worker_running"] is False  # the lock file alone means nothing


def test_status_table_and_config_source(runner, engine, tmp_path, monkeypatch):
    proj = tmp_path / "proj"
    (proj / "sub").mkdir(parents=True)
    config.write_file(proj, {"agent_id": "agent-1"})
    monkeypatch.chdir(proj / "sub")
    res = invoke(runner, "status")
    assert res.exit_code == 0, res.output
    assert str(config.config_path(proj)) in res.stdout.replace("\n", "") or \
        "config.json" in res.stdout
    assert "not running" in res.stdout
    # It says only what it knows: not paused (whether Codex runs the hooks here is doctor's).
    assert f"{proj.resolve()} (not paused)" in res.stdout.replace("\n", "")
    assert "recording" not in res.stdout
    st = json.loads(invoke(runner, "status", "--json").stdout)
    assert st["config_source"] == str(config.config_path(proj))
    assert st["project"] == str(proj.resolve())


# --- history ---------------------------------------------------------------------------------

def test_history_json_and_table(runner, engine):
    populate(engine)
    res = invoke(runner, "history", "--json", "-n", "2")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [r["trace_id"] for r in rows] == ["eeee-pending", "dddd-held"]
    assert set(rows[0]) == {"trace_id", "kind", "name", "session_id", "project", "created_at",
                            "sink", "state", "attempts", "sent_at", "last_status", "last_error",
                            "next_attempt_at", "cost_usd", "cost_flags"}
    res = invoke(runner, "history")
    assert res.exit_code == 0
    for tid in ("aaaa-sent", "bbbb-faile", "eeee-pendi"):
        assert tid in res.stdout
    assert res.stdout.index("eeee-pendi") < res.stdout.index("aaaa-sent")


@pytest.mark.parametrize("cmd", ["history", "errors", "sessions"])
@pytest.mark.parametrize("value", ["0", "-3", "abc"])
def test_limit_must_be_at_least_one(runner, cmd, value):
    res = invoke(runner, cmd, "--limit", value)
    assert res.exit_code == 2  # a malformed command line
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: --limit")
    assert "Pass --limit 1 or more" in lines[0]


def test_history_clear_forgets_delivered_only_after_confirmation(runner, engine):
    populate(engine)
    add_trace(engine, "ffff-half", created_at=T0, outbox=(("infinium", "sent"), ("file", "failed")))
    res = invoke(runner, "history", "--clear", input="n\n")
    assert res.exit_code == 1 and "nothing forgotten" in res.stderr
    assert len(outbox_rows(engine)) == 7
    res = invoke(runner, "history", "--clear", input="y\n")
    assert res.exit_code == 0, res.output
    assert "Forgot 1 delivered trace" in res.stdout
    with db.read(engine) as conn:
        left = {r[0] for r in conn.execute(text("SELECT trace_id FROM traces"))}
    assert left == {"bbbb-failed", "cccc-dead", "dddd-held", "eeee-pending", "ffff-half"}
    res = invoke(runner, "history", "--clear", "--yes")
    assert res.exit_code == 0 and "No delivered traces" in res.stdout


# --- errors -------------------------------------------------------------------------------------

def test_errors_json_newest_first_every_kind(runner, engine, spool_home):
    populate(engine)
    (spool_home / paths.HOOK_ERROR_LOG).write_text(
        "2030-01-01T00:00:00Z\t123\tdatabase not writable, event kept in overflow\n")
    res = invoke(runner, "errors", "--json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert [r["kind"] for r in rows] == ["hook", "worker", "quarantine", "delivery"]
    assert rows[3]["http_status"] == 503 and rows[3]["trace_id"] == "bbbb-failed"
    assert rows[3]["message"] == "busy"
    text_out = invoke(runner, "errors").stdout
    assert "job crashed" in text_out and "not JSON" in text_out


# --- retry --------------------------------------------------------------------------------------

def _db_state(home: Path) -> tuple[str, int]:
    path = paths.db_path(home)
    wal = Path(str(path) + "-wal")
    return hashlib.sha256(path.read_bytes()).hexdigest(), (wal.stat().st_size if wal.exists() else 0)


def _checkpoint(home: Path) -> None:
    conn = sqlite3.connect(paths.db_path(home))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def test_retry_dry_run_leaves_the_database_byte_identical(engine, spool_home):
    populate(engine)
    engine.dispose()
    run_spool("path")  # any migration work happens before we look
    _checkpoint(spool_home)
    before = _db_state(spool_home)
    assert before[1] == 0

    res = run_spool("retry", "--dry-run", "--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    assert [(r["trace_id"], r["state"]) for r in rows] == [
        ("bbbb-failed", "failed"), ("cccc-dead", "dead"), ("dddd-held", "held")]
    assert _db_state(spool_home) == before  # main file identical, nothing left in the WAL

    res = run_spool("retry", "--dry-run")  # the table for people: same rows
    assert res.returncode == 0 and "Would retry 3 deliveries" in res.stdout
    assert _db_state(spool_home) == before

    # The check can fail: a real retry changes the file.
    assert run_spool("retry").returncode == 0
    _checkpoint(spool_home)
    assert _db_state(spool_home) != before


def test_retry_requeues_failed_dead_held_or_the_named_ones(runner, engine):
    populate(engine)
    before = time.time()
    res = invoke(runner, "retry", "--json", "cccc")  # a unique prefix
    assert res.exit_code == 0, res.output
    assert [r["trace_id"] for r in json.loads(res.stdout)] == ["cccc-dead"]
    rows = outbox_rows(engine)
    assert rows[("cccc-dead", "infinium")]["state"] == "pending"
    assert rows[("cccc-dead", "infinium")]["next_attempt_at"] >= before
    assert rows[("bbbb-failed", "infinium")]["state"] == "failed"
    res = invoke(runner, "retry")
    assert res.exit_code == 0 and "Retrying 2 deliveries" in res.stdout
    rows = outbox_rows(engine)
    assert {k[0]: v["state"] for k, v in rows.items()} == {
        "aaaa-sent": "sent", "bbbb-failed": "pending", "cccc-dead": "pending",
        "dddd-held": "pending", "eeee-pending": "pending"}
    assert invoke(runner, "retry").stdout.strip() == "Nothing to retry."


def test_retry_unknown_or_ambiguous_trace_id_is_a_clear_error(runner, engine):
    populate(engine)
    res = invoke(runner, "retry", "zzzz")
    assert res.exit_code == 1
    assert res.stderr.strip() == "Error: no trace with id 'zzzz'. Run `spool history` to see trace ids."
    add_trace(engine, "cccc-other", created_at=T0)
    res = invoke(runner, "retry", "--dry-run", "cccc")
    assert res.exit_code == 1 and "matches several traces" in res.stderr


# --- pause / resume -----------------------------------------------------------------------------

def test_pause_records_nothing_and_holds_deliveries_until_resume(runner, engine, tmp_path,
                                                                 monkeypatch):
    proj = tmp_path / "proj"
    sub = proj / "src"
    sub.mkdir(parents=True)
    config.write_file(proj, {})
    add_trace(engine, "mine", created_at=T0, project=str(proj.resolve()),
              outbox=(("infinium", "pending"),))
    add_trace(engine, "other", created_at=T0, project=str(tmp_path / "elsewhere"),
              outbox=(("infinium", "pending"),))
    _, payload = fixture_payloads()[0]

    def events() -> int:
        with db.read(engine) as conn:
            return conn.execute(text("SELECT count(*) FROM raw_events")).scalar_one()

    monkeypatch.chdir(sub)
    res = invoke(runner, "pause")
    assert res.exit_code == 0, res.output
    assert str(proj.resolve()) in res.stdout and "1 waiting deliveries held" in res.stdout
    rows = outbox_rows(engine)
    assert rows[("mine", "infinium")]["state"] == "held"
    assert rows[("other", "infinium")]["state"] == "pending"
    assert json.loads(invoke(runner, "status", "--json").stdout)["paused"] is True
    assert invoke(runner, "retry").stdout.strip() == "Nothing to retry."  # a pause wins
    assert outbox_rows(engine)[("mine", "infinium")]["state"] == "held"

    assert run_hook(payload, cwd=sub).returncode == 0  # the real hook, in the paused project
    assert events() == 0
    assert not list(paths.spool_home().glob("overflow-*.jsonl"))  # not kept aside either

    res = invoke(runner, "resume")
    assert res.exit_code == 0 and "1 held deliveries released" in res.stdout
    assert outbox_rows(engine)[("mine", "infinium")]["state"] == "pending"
    assert run_hook(payload, cwd=sub).returncode == 0
    assert events() == 1
    assert "was not paused" in invoke(runner, "resume").stdout


# --- sessions / show -----------------------------------------------------------------------------

def test_sessions_json(runner, engine):
    add_session(engine, "s-1", last=T0, turns=2, events=7)
    add_trace(engine, "t-1", created_at=T0, session_id="s-1")
    res = invoke(runner, "sessions", "--json")
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)
    assert row["session_id"] == "s-1" and (row["events"], row["turns"], row["traces"]) == (7, 2, 1)
    assert "s-1" in invoke(runner, "sessions").stdout


def test_show_renders_a_timeline_and_json_prints_the_body(runner, engine):
    populate(engine)
    res = invoke(runner, "show", "bbbb")
    assert res.exit_code == 0, res.output
    out = res.stdout
    for piece in ("trace bbbb-failed", "say hello", "model_request", "1.50s", "in 1,200",
                  "shell: echo hi", "ToolError: exit status 2", "3 step(s)",
                  "infinium: failed after 1 attempt(s): HTTP 503: busy"):
        assert piece in out, piece
    res = invoke(runner, "show", "--json", "bbbb-failed")
    body = json.loads(res.stdout)
    assert body["trace_id"] == "bbbb-failed" and len(body["steps"]) == 3
    res = invoke(runner, "show", "nope")
    assert res.exit_code == 1 and "no trace or session with id 'nope'" in res.stderr


# --- cleanup / test ---------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["abc", "-1"])
def test_cleanup_rejects_a_bad_age(runner, value):
    res = invoke(runner, "cleanup", "--older-than", value)
    assert res.exit_code == 2  # a malformed command line
    assert len(res.stderr.strip().splitlines()) == 1 and "--older-than" in res.stderr


def test_cleanup_deletes_old_delivered_traces_never_undelivered(runner, engine):
    add_trace(engine, "old-sent", created_at=T0, session_id=None)
    add_trace(engine, "old-failed", created_at=T0, session_id=None,
              outbox=(("infinium", "sent"), ("file", "failed")))
    add_trace(engine, "old-held", created_at=T0, session_id=None, outbox=(("infinium", "held"),))
    res = invoke(runner, "cleanup", "--older-than", "1", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["traces"] == 1
    with db.read(engine) as conn:
        left = {r[0] for r in conn.execute(text("SELECT trace_id FROM traces"))}
    assert left == {"old-failed", "old-held"}
    res = invoke(runner, "cleanup", "--older-than", "1")
    assert res.exit_code == 0 and "traces 0" in res.stdout


def test_spool_test_sends_a_connection_test_to_a_real_receiver(runner, tmp_path, monkeypatch):
    receiver = pytest.importorskip("spool.demo.receiver")
    monkeypatch.chdir(tmp_path)
    with receiver.Receiver(secret="s3cret-value") as rx:
        monkeypatch.setenv("INFINIUM_AGENT_ID", "11111111-2222-3333-4444-555555555555")
        monkeypatch.setenv("INFINIUM_AGENT_SECRET", "s3cret-value")
        monkeypatch.setenv("INFINIUM_BASE_URL", rx.url)
        res = invoke(runner, "test", "-v")
        assert res.exit_code == 0, res.output
        assert f"OK: infinium {rx.url}/agents/" in res.stdout and "answered HTTP 200" in res.stdout
        assert '"name": "Connection Test"' in res.stdout
        (req,) = rx.requests
        assert req.json()["name"] == "Connection Test"
        rx.script((422, {}, {"message": "bad trace"}))
        res = invoke(runner, "test", "--json")
        assert res.exit_code == 1
        out = json.loads(res.stdout)
        assert out["status"] == 422 and out["ok"] is False and "bad trace" in out["message"]
        assert "s3cret-value" not in res.output


# --- process-level behaviour ---------------------------------------------------------------------

def test_installed_script_history_json_and_newer_schema_error(engine, spool_home):
    populate(engine)
    res = run_spool("history", "--json", "--limit", "1")
    assert res.returncode == 0, res.stderr
    assert [r["trace_id"] for r in json.loads(res.stdout)] == ["eeee-pending"]
    engine.dispose()
    conn = sqlite3.connect(paths.db_path(spool_home))
    conn.execute("UPDATE alembic_version SET version_num = '9999_future'")
    conn.commit()
    conn.close()
    for args in (["history"], ["errors", "--json"], ["status"], ["retry", "--dry-run"]):
        res = run_spool(*args)
        assert res.returncode == 1, args
        assert "Traceback" not in res.stderr
        (line,) = res.stderr.strip().splitlines()
        assert "newer spool" in line and "Upgrade spool" in line


def test_commands_import_nothing_heavy_at_startup():
    # _register imports every command module, as `spool --help` does.
    code = ("import sys; from spool.cli import _register; _register(); "
            "print(','.join(m for m in ('sqlalchemy', 'rich', 'httpx', 'alembic') "
            "if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == ""


def test_no_command_module_imports_the_entry_point():
    # The app lives in spool/app.py; a command importing spool.cli would close the
    # circle cli -> commands -> cli again.
    code = ("import importlib, pkgutil, sys; import spool.commands as c\n"
            "for m in pkgutil.iter_modules(c.__path__):\n"
            "    importlib.import_module('spool.commands.' + m.name)\n"
            "print('spool.cli' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"
