"""The hook: real subprocesses, real payloads, a real SQLite file."""
from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from spool import db, hook, ingest, paths

from support.hookproc import hook_cmd, run_hook
from support.recorded import fixture_payloads
from support.rows import db_rows

RAW = "SELECT payload, status, source, cwd, size, truncated FROM raw_events ORDER BY id"
QUARANTINE = "SELECT payload, reason, size FROM quarantine ORDER BY id"
HEAVY = ("sqlalchemy", "typer", "httpx", "keyring", "alembic", "apscheduler", "platformdirs",
         "rich", "click")


@pytest.fixture
def ready_db(spool_home):
    engine = db.open_db()
    yield engine
    engine.dispose()


def test_hook_imports_only_the_standard_library():
    code = ("import sys, runpy; sys.argv=['hook']\n"
            "import spool.hook\n"
            "print(','.join(sorted(m for m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.strip().split(","))
    assert not [m for m in loaded if m.split(".")[0] in HEAVY]
    assert "spool.hook" in loaded


def test_hook_as_installed_runs_without_site(ready_db, tmp_path):
    """The hooks.json command (-I -S script) works without site-packages on sys.path."""
    payload = fixture_payloads()[1][1]
    res = run_hook(payload, cwd=tmp_path)
    assert (res.returncode, res.stdout, res.stderr) == (0, b"", b"")
    rows = db_rows(RAW)
    assert rows == [(payload, "new", "hook", str(tmp_path), len(payload), 0)]


def test_python_m_spool_hook_works_too(ready_db, tmp_path):
    payload = fixture_payloads()[0][1]
    res = subprocess.run([sys.executable, "-m", "spool.hook"], input=payload, capture_output=True,
                         cwd=tmp_path)
    assert (res.returncode, res.stdout) == (0, b"")
    assert [r[0] for r in db_rows(RAW)] == [payload]


def test_real_payload_round_trip_and_file_modes(ready_db, tmp_path, spool_home):
    for _, payload in fixture_payloads():
        res = run_hook(payload, cwd=tmp_path)
        assert (res.returncode, res.stdout) == (0, b"")
    stored = [r[0] for r in db_rows(RAW)]
    assert stored == [p for _, p in fixture_payloads()]
    ingest.ingest_all(ready_db)
    names = [r[0] for r in db_rows("SELECT event FROM raw_events ORDER BY id")]
    assert names == [n for n, _ in fixture_payloads()]
    assert stat.S_IMODE(spool_home.stat().st_mode) == 0o700
    for f in spool_home.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def test_received_at_has_sub_millisecond_resolution(ready_db, tmp_path):
    for _ in range(3):
        run_hook(fixture_payloads()[2][1], cwd=tmp_path)
    stamps = [r[0] for r in db_rows("SELECT received_at FROM raw_events")]
    assert len(set(stamps)) == 3
    assert any(abs(s * 1000 - round(s * 1000)) > 1e-6 for s in stamps)


BAD_INPUTS = {
    "empty": b"",
    "not json": b"not json",
    "json array": b'[{"session_id": "s", "hook_event_name": "Stop"}]',
    "invalid utf-8": b'{"session_id": "s\xff\xfe", "hook_event_name": "Stop"}',
    "no session_id": b'{"hook_event_name": "Stop", "turn_id": "t"}',
}


def test_bad_inputs_exit_zero_silently_and_are_findable(ready_db, tmp_path):
    for name, data in BAD_INPUTS.items():
        res = run_hook(data, cwd=tmp_path)
        assert (res.returncode, res.stdout, res.stderr) == (0, b"", b""), name
    assert len(db_rows(RAW)) == len(BAD_INPUTS)
    ingest.ingest_all(ready_db)
    assert db_rows(RAW) == []  # none of them is an event...
    quarantined = {bytes(p): reason for p, reason, _ in db_rows(QUARANTINE)}
    assert set(quarantined) == set(BAD_INPUTS.values())  # ...and every one is kept, bytes intact
    assert quarantined[b""] == "empty input"
    assert quarantined[b"not json"].startswith("not JSON")
    assert quarantined[BAD_INPUTS["json array"]] == "not a JSON object (got list)"
    assert quarantined[BAD_INPUTS["invalid utf-8"]].startswith("not UTF-8")
    assert quarantined[BAD_INPUTS["no session_id"]] == "missing or invalid session_id"


def test_huge_prompt_is_kept_truncated_and_flagged(ready_db, tmp_path):
    obj = json.loads(fixture_payloads()[1][1])
    obj["prompt"] = "x" * (20 * 1024 * 1024)
    data = json.dumps(obj).encode()
    res = run_hook(data, cwd=tmp_path)
    assert (res.returncode, res.stdout) == (0, b"")
    (payload, status, _, _, size, truncated), = db_rows(RAW)
    assert (len(payload), size, truncated) == (hook.MAX_PAYLOAD, len(data), 1)
    assert payload == data[: hook.MAX_PAYLOAD]
    ingest.ingest_all(ready_db)
    (sid, event, status), = db_rows("SELECT session_id, event, status FROM raw_events")
    assert (sid, event, status) == (obj["session_id"], "UserPromptSubmit", "ok")


def test_paused_project_records_nothing(ready_db, tmp_path):
    project = tmp_path / "proj"
    (project / "sub").mkdir(parents=True)
    other = tmp_path / "proj-other"
    other.mkdir()
    with db.write(ready_db) as conn:
        conn.exec_driver_sql("INSERT INTO pauses (project, paused_at) VALUES (?, 1)", (str(project),))
    payload = fixture_payloads()[1][1]
    for cwd in (project, project / "sub", other):
        assert run_hook(payload, cwd=cwd).returncode == 0
    assert [r[3] for r in db_rows(RAW)] == [str(other)]  # a sibling with a common prefix still records


def test_no_database_yet_goes_to_overflow_then_ingested_once(spool_home, tmp_path):
    payload = fixture_payloads()[0][1]
    res = run_hook(payload, cwd=tmp_path)
    assert (res.returncode, res.stdout) == (0, b"")
    files = list(spool_home.glob("overflow-*.jsonl"))
    assert len(files) == 1 and stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert not paths.db_path().exists()  # the hook never creates the database
    engine = db.open_db()
    r1 = ingest.ingest_overflow(engine)
    r2 = ingest.ingest_overflow(engine)
    assert (r1.events, r2.events) == (1, 0)
    assert db_rows("SELECT payload, source, cwd FROM raw_events") == [(payload, "overflow", str(tmp_path))]
    engine.dispose()


def test_overflow_ingest_is_exactly_once_across_a_crash(spool_home, tmp_path):
    """A crash after the commit but before the file is deleted: a re-run adds nothing."""
    payload = fixture_payloads()[0][1]
    hook.write_overflow(str(spool_home), 10.0, str(tmp_path), payload, len(payload), 0, "test")
    (f,) = spool_home.glob("overflow-*.jsonl")
    saved = f.read_bytes()
    engine = db.open_db()
    assert ingest.ingest_overflow(engine).events == 1
    f.write_bytes(saved)  # as if the unlink never happened
    res = ingest.ingest_overflow(engine)
    assert (res.events, res.duplicates) == (0, 1)
    assert len(db_rows(RAW)) == 1
    assert not f.exists()
    engine.dispose()


def _make_read_only(path: Path) -> None:
    """A real read-only database file: mode 0400, plus the immutable flag for root
    (root ignores modes)."""
    os.chmod(path, 0o400)
    if os.geteuid() == 0:
        res = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
        if res.returncode != 0:
            pytest.skip("running as root without chattr +i: cannot make a file read-only")


def _make_writable(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    os.chmod(path, 0o600)


def test_read_only_database_goes_to_overflow(ready_db, tmp_path, spool_home):
    ready_db.dispose()
    dbfile = paths.db_path()
    _make_read_only(dbfile)
    try:
        payload = fixture_payloads()[1][1]
        res = run_hook(payload, cwd=tmp_path)
        assert (res.returncode, res.stdout) == (0, b"")
        assert len(list(spool_home.glob("overflow-*.jsonl"))) == 1
        assert "readonly" in (spool_home / "hook-errors.log").read_text()
    finally:
        _make_writable(dbfile)
    # fault removed: the worker ingests it exactly once
    ingest.ingest_overflow(ready_db)
    ingest.ingest_overflow(ready_db)
    assert [r[0] for r in db_rows(RAW)] == [payload]


def _proc_start(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return int(stat[stat.rindex(b")") + 2:].split()[19])


def test_overflow_event_keeps_its_run_id_and_codex_process(ready_db, tmp_path, spool_home):
    """An event the database could not take still carries SPOOL_RUN_ID and the Codex
    process (here: this test's process, the hook's parent) once ingested."""
    ready_db.dispose()
    dbfile = paths.db_path()
    _make_read_only(dbfile)
    try:
        payload = fixture_payloads()[1][1]
        res = run_hook(payload, cwd=tmp_path, env={"SPOOL_RUN_ID": "run-overflow"})
        assert (res.returncode, res.stdout) == (0, b"")
        (f,) = spool_home.glob("overflow-*.jsonl")
        rec = json.loads(f.read_bytes())
        assert (rec["run_id"], rec["codex_pid"]) == ("run-overflow", os.getpid())
    finally:
        _make_writable(dbfile)
    assert ingest.ingest_overflow(ready_db).events == 1
    assert db_rows("SELECT payload, source, run_id, codex_pid, codex_start FROM raw_events") == [
        (payload, "overflow", "run-overflow", os.getpid(), _proc_start(os.getpid()))]


def test_overflow_record_without_a_process_ingests_with_none(ready_db, tmp_path, spool_home):
    """Records of an older hook (or one /proc could not tell) have no run/process keys."""
    payload = fixture_payloads()[1][1]
    hook.write_overflow(str(spool_home), 10.0, str(tmp_path), payload, len(payload), 0, "test")
    hook.write_overflow(str(spool_home), 11.0, str(tmp_path), payload, len(payload), 0, "test",
                        ("run-x", 4242, None))
    assert ingest.ingest_overflow(ready_db).events == 2
    assert db_rows("SELECT run_id, codex_pid, codex_start FROM raw_events ORDER BY id") == [
        (None, None, None), ("run-x", 4242, None)]


def test_locked_database_goes_to_overflow(ready_db, tmp_path, spool_home):
    holder = sqlite3.connect(paths.db_path(), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        payload = fixture_payloads()[1][1]
        res = run_hook(payload, cwd=tmp_path, env={"SPOOL_HOOK_BUSY_TIMEOUT": "0.2"})
        assert (res.returncode, res.stdout) == (0, b"")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert len(list(spool_home.glob("overflow-*.jsonl"))) == 1
    ingest.ingest_overflow(ready_db)
    ingest.ingest_overflow(ready_db)
    assert db_rows("SELECT payload, source FROM raw_events") == [(payload, "overflow")]


def test_unwritable_home_falls_back_to_user_dir(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the spool home should be")
    monkeypatch.setenv("SPOOL_HOME", str(blocker / "home"))
    payload = fixture_payloads()[1][1]
    res = run_hook(payload, cwd=tmp_path)
    assert (res.returncode, res.stdout) == (0, b"")
    fallback = paths.fallback_overflow_dir()
    assert len(list(fallback.glob("overflow-*.jsonl"))) == 1
    assert stat.S_IMODE(fallback.stat().st_mode) == 0o700
    # Another spool (a demo, a test) never takes this spool's fallback files...
    monkeypatch.setenv("SPOOL_HOME", str(tmp_path / "other-home"))
    other = db.open_db()
    assert ingest.ingest_overflow(other).events == 0
    other.dispose()
    # ...and once this home is usable its worker ingests them.
    blocker.unlink()
    monkeypatch.setenv("SPOOL_HOME", str(blocker / "home"))
    engine = db.open_db()
    assert ingest.ingest_overflow(engine).events == 1
    assert list(fallback.glob("overflow-*.jsonl")) == []
    engine.dispose()


def test_a_planted_fallback_dir_is_never_used(tmp_path, monkeypatch):
    """A fallback directory another user could write is neither written nor read."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the spool home should be")
    monkeypatch.setenv("SPOOL_HOME", str(blocker / "home"))
    fallback = paths.fallback_overflow_dir()
    fallback.mkdir(parents=True)
    os.chmod(fallback, 0o777)
    planted = fallback / "overflow-planted.jsonl"
    planted.write_text('{"v":1,"key":"x","received_at":1,"cwd":"/","payload_b64":"e30="}\n')
    res = run_hook(fixture_payloads()[1][1], cwd=tmp_path)
    assert (res.returncode, res.stdout) == (0, b"")
    assert sorted(p.name for p in fallback.iterdir()) == ["overflow-planted.jsonl"]
    blocker.unlink()
    engine = db.open_db()
    assert ingest.ingest_overflow(engine).events == 0  # the planted file is not ingested
    assert planted.exists()
    engine.dispose()


@pytest.mark.slow  # 1600 real hook processes: ~55 s
def test_parallel_hooks_lose_nothing(ready_db, tmp_path):
    """8 processes x 200 hook invocations at once -> 1600 rows, 0 failures."""
    payload = fixture_payloads()[4][1]
    script = (
        "import subprocess, sys\n"
        "cmd = sys.argv[2:]\n"
        "fails = 0\n"
        "for i in range(int(sys.argv[1])):\n"
        "    r = subprocess.run(cmd, input=%r, capture_output=True)\n"
        "    fails += (r.returncode != 0) or bool(r.stdout)\n"
        "print(fails)\n" % payload
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, "200", *hook_cmd()], cwd=tmp_path,
                              stdout=subprocess.PIPE, text=True) for _ in range(8)]
    fails = [int(p.communicate(timeout=600)[0]) for p in procs]
    assert fails == [0] * 8
    # On a loaded machine a hook can wait out its 2 s busy timeout; it then keeps the
    # event in an overflow file (the designed path), never drops it.  So: every event is
    # in raw_events once the overflow is ingested, and any overflow says why.
    spilled = list(paths.spool_home().glob("overflow-*.jsonl"))
    log = paths.spool_home() / hook.ERROR_LOG
    reasons = log.read_text() if log.exists() else ""
    assert reasons.count("database is locked") == len(spilled), reasons
    engine = db.open_db()
    assert ingest.ingest_overflow(engine).events == len(spilled)
    engine.dispose()
    assert db_rows("SELECT count(*), count(DISTINCT id) FROM raw_events") == [(1600, 1600)]


def test_hook_and_platformdirs_agree_on_home(monkeypatch):
    monkeypatch.delenv("SPOOL_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", "/tmp/xdg-data-test")
    assert hook.spool_home() == str(paths.spool_home())
    monkeypatch.delenv("XDG_DATA_HOME")
    assert hook.spool_home() == str(paths.spool_home())
    monkeypatch.setenv("SPOOL_HOME", "~/custom-spool")
    assert hook.spool_home() == str(paths.spool_home())
    assert hook.fallback_dir() == str(paths.fallback_overflow_dir())


def test_corrupt_database_goes_to_overflow_and_says_why(tmp_path, spool_home):
    spool_home.mkdir(mode=0o700)
    (spool_home / "spool.db").write_bytes(b"this is not a database" * 100)
    res = run_hook(b'{"session_id":"s","hook_event_name":"Stop"}', cwd=tmp_path)
    assert (res.returncode, res.stdout, res.stderr) == (0, b"", b"")
    assert len(list(spool_home.glob("overflow-*.jsonl"))) == 1
    assert "DatabaseError" in (spool_home / "hook-errors.log").read_text()


def test_a_lone_surrogate_id_is_quarantined_and_blocks_nothing(ready_db, tmp_path):
    poison = b'{"session_id":"\\udc80","hook_event_name":"Stop"}'
    good = fixture_payloads()[1][1]
    for data in (poison, good):
        assert run_hook(data, cwd=tmp_path).returncode == 0
    ingest.ingest_all(ready_db)
    assert db_rows("SELECT payload, status FROM raw_events") == [(good, "ok")]
    ((payload, reason, _),) = db_rows(QUARANTINE)
    assert payload == poison and "session_id is not valid Unicode" in reason


def test_an_undecodable_project_path_is_stored_readably(ready_db, tmp_path):
    weird = os.path.join(os.fsencode(tmp_path), b"proj\xff")
    os.mkdir(weird)
    payload = fixture_payloads()[1][1]
    res = subprocess.run(hook_cmd(), input=payload, capture_output=True, cwd=weird)
    assert (res.returncode, res.stdout, res.stderr) == (0, b"", b"")
    ingest.ingest_all(ready_db)
    ((cwd, status),) = db_rows("SELECT cwd, status FROM raw_events")
    assert status == "ok" and cwd == str(tmp_path) + "/proj\ufffd"


def test_unusable_hook_settings_fall_back_to_defaults(ready_db, tmp_path):
    payload = fixture_payloads()[1][1]
    res = run_hook(payload, cwd=tmp_path, env={"SPOOL_HOOK_BUSY_TIMEOUT": "2s",
                                                "SPOOL_WORKER_IDLE_EXIT": "soon"})
    assert (res.returncode, res.stdout, res.stderr) == (0, b"", b"")
    assert [r[0] for r in db_rows(RAW)] == [payload]
