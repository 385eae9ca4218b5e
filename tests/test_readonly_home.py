"""A read-only SPOOL_HOME (the real CLI as a subprocess): with a database there, read
commands read it (it is fine: no "cannot be read ... move it aside"), a command that would
change it says the home is read-only; an empty read-only or uncreatable home is one line
for every command, never an OSError traceback."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from spool import db
from support.delivery import add_trace


def _freeze(*paths: Path) -> None:
    """Read-only for real: the immutable flag as root (root ignores modes), else modes."""
    for p in paths:
        if os.geteuid() == 0:
            if subprocess.run(["chattr", "+i", str(p)], capture_output=True).returncode:
                pytest.skip("running as root without chattr +i: cannot make a home read-only")
        else:
            os.chmod(p, 0o500 if p.is_dir() else 0o400)


def _thaw(*paths: Path) -> None:
    for p in paths:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(p)], capture_output=True)
        os.chmod(p, 0o700 if p.is_dir() else 0o600)


def spool(home: Path, *args: str) -> tuple[int, str]:
    env = {**os.environ, "SPOOL_HOME": str(home), "SPOOL_NO_AUTOSTART": "1", "COLUMNS": "200"}
    r = subprocess.run([sys.executable, "-m", "spool", *args], capture_output=True, text=True,
                       timeout=60, env=env)
    return r.returncode, (r.stdout + r.stderr).strip()


@pytest.fixture
def frozen_home(spool_home):
    engine = db.open_db(spool_home)
    add_trace(engine, "7e1a0c55-1111-4222-8333-944455556666", sink="file")
    engine.dispose()
    dbfile = db.paths.db_path(spool_home)
    assert sorted(p.name for p in spool_home.iterdir()) == ["spool.db"]  # no -wal left
    _freeze(dbfile, spool_home)
    yield spool_home
    _thaw(spool_home, dbfile)


def test_read_commands_read_a_database_in_a_read_only_home(frozen_home):
    code, out = spool(frozen_home, "history")
    assert code == 0 and "7e1a0c55" in out, out
    code, out = spool(frozen_home, "show", "7e1a0c55")
    assert code == 0 and "trace 7e1a0c55" in out, out
    code, out = spool(frozen_home, "status")
    assert code == 0 and "cannot be read" not in out and "Traceback" not in out, out
    code, out = spool(frozen_home, "usage")
    assert code == 0 and "No model requests recorded" in out, out


def test_changing_a_read_only_home_is_one_line(frozen_home):
    code, out = spool(frozen_home, "pause")
    assert code == 1 and len(out.splitlines()) == 1, out
    assert "is read-only" in out and "writable" in out and "mv " not in out
    code, out = spool(frozen_home, "worker", "--once")
    assert code == 1 and len(out.splitlines()) == 1 and "Traceback" not in out, out


@pytest.mark.parametrize("command", [["status"], ["history"], ["sessions"], ["errors"],
                                     ["pause"], ["usage"], ["worker", "--once"]])
def test_an_empty_read_only_or_uncreatable_home_is_one_line(tmp_path, command):
    empty = tmp_path / "empty"
    empty.mkdir()
    _freeze(empty)
    try:
        for home in (empty, empty / "sub", Path("/proc/spool-cannot-be-here")):
            code, out = spool(home, *command)
            assert code == 1 and len(out.splitlines()) == 1, (home, out)
            assert "Traceback" not in out
            assert str(home) in out and ("writable" in out or "SPOOL_HOME" in out), out
    finally:
        _thaw(empty)
