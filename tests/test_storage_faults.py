"""Storage faults: the hook still exits 0 at once, the event is preserved, and once
the fault is gone the worker's ingest takes it in exactly once."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from spool import db, ingest, paths

from support.hookproc import run_hook
from support.recorded import fixture_payloads

PAYLOAD = fixture_payloads()[1][1]


def _events() -> list[bytes]:
    conn = sqlite3.connect(paths.db_path())
    try:
        return [bytes(r[0]) for r in conn.execute("SELECT payload FROM raw_events ORDER BY id")]
    finally:
        conn.close()


def _ingest_twice() -> None:
    engine = db.open_db()
    ingest.ingest_all(engine)
    ingest.ingest_all(engine)
    engine.dispose()


def _hook(tmp_path) -> float:
    t0 = time.monotonic()
    res = run_hook(PAYLOAD, cwd=tmp_path)
    elapsed = time.monotonic() - t0
    assert (res.returncode, res.stdout, res.stderr) == (0, b"", b"")
    return elapsed


@pytest.fixture
def small_fs(tmp_path):
    """A 4 MiB tmpfs (root only); skips where mounting is not allowed."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mnt)],
                         capture_output=True)
    if res.returncode != 0:
        pytest.skip("cannot mount a small filesystem here: " + res.stderr.decode().strip())
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_disk_full(small_fs, tmp_path, monkeypatch):
    home = small_fs / "home"
    monkeypatch.setenv("SPOOL_HOME", str(home))
    db.open_db().dispose()
    filler = small_fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:  # fill the filesystem to the last byte
        for size in (65536, 4096, 512, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError:
                    break
    finally:
        os.close(fd)
    assert _hook(tmp_path) < 10
    fallback = paths.fallback_overflow_dir()
    assert len(list(fallback.glob("overflow-*.jsonl"))) == 1  # the home had no room either
    filler.unlink()
    _ingest_twice()
    assert _events() == [PAYLOAD]


def _set_immutable(path: Path, on: bool) -> None:
    if os.geteuid() == 0:
        res = subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True)
        if on and res.returncode != 0:
            pytest.skip("root without chattr +i: cannot make a directory read-only")
    else:
        os.chmod(path, 0o500 if on else 0o700)


def test_spool_home_read_only(spool_home, tmp_path):
    db.open_db().dispose()
    dbfile = paths.db_path()
    _set_immutable(dbfile, True)
    _set_immutable(spool_home, True)
    try:
        assert _hook(tmp_path) < 10
        fallback = paths.fallback_overflow_dir()
        assert len(list(fallback.glob("overflow-*.jsonl"))) == 1
        # the hook's error line went to the fallback dir too
        assert (fallback / "hook-errors.log").read_text().count("overflow") == 1
    finally:
        _set_immutable(spool_home, False)
        _set_immutable(dbfile, False)
    _ingest_twice()
    assert _events() == [PAYLOAD]


def test_schema_at_an_older_revision(spool_home, tmp_path):
    """A database the worker has not migrated yet (here: at base, no tables)."""
    db.upgrade(paths.ensure_home() / "spool.db")
    db.downgrade(paths.db_path(), "base")
    assert _hook(tmp_path) < 10
    assert len(list(spool_home.glob("overflow-*.jsonl"))) == 1
    _ingest_twice()  # open_db upgrades to head, then ingests
    assert _events() == [PAYLOAD]


def test_schema_from_a_newer_spool(spool_home, tmp_path):
    """The hook never crashes on it; the worker/CLI refuse to touch it until spool is upgraded."""
    db.open_db().dispose()
    conn = sqlite3.connect(paths.db_path())
    conn.execute("UPDATE alembic_version SET version_num = '9999_future'")
    conn.execute("ALTER TABLE raw_events ADD COLUMN future_column TEXT")
    conn.commit()
    conn.close()
    assert _hook(tmp_path) < 10
    kept = len(_events()) + len(list(spool_home.glob("overflow-*.jsonl")))
    assert kept == 1
    with pytest.raises(db.NewerSchemaError) as err:
        db.open_db()
    assert "newer spool" in str(err.value) and "Upgrade spool" in str(err.value)


def test_long_writer_then_released(spool_home, tmp_path):
    """A writer holding the lock longer than the hook's busy timeout."""
    db.open_db().dispose()
    holder = sqlite3.connect(paths.db_path(), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        t0 = time.monotonic()
        res = run_hook(PAYLOAD, cwd=tmp_path, env={"SPOOL_HOOK_BUSY_TIMEOUT": "0.3"})
        assert res.returncode == 0 and time.monotonic() - t0 < 10
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert len(list(spool_home.glob("overflow-*.jsonl"))) == 1
    _ingest_twice()
    assert _events() == [PAYLOAD]


def test_corrupt_database_cli_says_what_to_do(spool_home, tmp_path):
    """CLI and worker on a corrupt file: one line with the fix, no traceback; the hook
    keeps every event in overflow and does not fork a worker per event."""
    import sys

    spool_home.mkdir(mode=0o700)
    (spool_home / "spool.db").write_bytes(b"garbage, not SQLite " * 200)
    env = {**os.environ, "SPOOL_NO_AUTOSTART": ""}
    for name, payload in fixture_payloads()[1:4]:  # no session milestone among them
        res = run_hook(payload, cwd=tmp_path, env={"SPOOL_NO_AUTOSTART": ""})
        assert res.returncode == 0
    assert not (spool_home / "worker.stderr").exists()  # no worker was started
    assert len(list(spool_home.glob("overflow-*.jsonl"))) == 3
    for args in (["status"], ["worker", "--once"], ["history"]):
        res = subprocess.run([sys.executable, "-m", "spool", *args], capture_output=True,
                             text=True, env=env, timeout=120)
        assert res.returncode == 1, args
        assert "Traceback" not in res.stderr
        assert "cannot be read" in res.stderr and "mv " in res.stderr, res.stderr
    # the fix the message gives works: move it aside, then everything is ingested once
    (spool_home / "spool.db").rename(spool_home / "spool.db.bad")
    _ingest_twice()
    assert len(_events()) == 3
