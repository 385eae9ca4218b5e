"""`spool init --user` against the REAL Codex CLI: spool's hooks at user level
($CODEX_HOME/hooks.json), trusted through `codex app-server`, really run in a project
that holds no machine-specific file and is not even trusted; `doctor` agrees, and
finds a project hooks.json whose interpreter does not exist."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import text

from codex_env import codex_binary, make_codex_home, make_project, run_session
from spool import codex as cx
from spool import db, ingest

pytestmark = pytest.mark.e2e
SPOOL = str(Path(sys.executable).parent / "spool")


def spool(*args, cwd, home):
    return subprocess.run([SPOOL, *args], capture_output=True, text=True, cwd=cwd, timeout=120,
                          env={**os.environ, "CODEX_HOME": str(home), "COLUMNS": "100",
                               "SPOOL_NO_AUTOSTART": "1"})


def test_init_user_hooks_run_in_an_untrusted_project_with_no_codex_files(tmp_path):
    binary = codex_binary()
    home = make_codex_home(tmp_path)
    proj = make_project(tmp_path)
    r = spool("init", "--user", "--no-interactive", "--no-trust-project",
              "--codex-bin", str(binary), cwd=proj, home=home)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "every project" in r.stdout
    assert not (proj / ".codex").exists()  # nothing machine-specific in the project
    user_hooks = json.loads((home / "hooks.json").read_text())
    assert {ev for ev, *_ in cx.spool_positions(user_hooks)} == set(cx.EVENTS)
    assert cx.project_trust(home, proj) is None

    d = spool("doctor", "--json", cwd=proj, home=home)
    checks = {c["name"]: c for c in json.loads(d.stdout)["checks"]}
    assert checks["hooks installed"]["status"] == "ok", checks
    assert checks["hooks trusted"]["status"] == "ok", checks
    assert str(home / "hooks.json") in checks["hooks installed"]["detail"]

    run_session(proj, home, ["say hello"], env={"SPOOL_NO_AUTOSTART": "1"}).check()
    engine = db.open_db()
    try:
        ingest.ingest_all(engine)
        with db.read(engine) as conn:
            rows = conn.execute(text("SELECT event, cwd FROM raw_events")).all()
    finally:
        engine.dispose()
    counts = Counter(r.event for r in rows)
    assert counts["SessionStart"] == 1 and counts["Stop"] == 1, counts  # once, not twice
    assert {r.cwd for r in rows} == {str(proj)}

    # A second `spool init` remembers --user; project hooks put back with --project-hooks.
    r2 = spool("init", "--no-interactive", "--no-trust-project", cwd=proj, home=home)
    assert r2.returncode == 0 and "Nothing to change" in r2.stdout, r2.stdout + r2.stderr

    # uninstall keeps the hooks every project shares unless told --user.
    u = spool("uninstall", "-y", cwd=proj, home=home)
    assert "kept spool's user-level hooks" in u.stdout, u.stdout + u.stderr
    assert cx.spool_positions(json.loads((home / "hooks.json").read_text()))
    u = spool("uninstall", "-y", "--user", cwd=proj, home=home)
    assert u.returncode == 0, u.stdout + u.stderr
    assert not cx.spool_positions(json.loads((home / "hooks.json").read_text()))
    assert "hooks.state" not in (home / "config.toml").read_text() or \
        str(home / "hooks.json") not in (home / "config.toml").read_text()


def test_doctor_finds_a_committed_hooks_json_with_another_machines_interpreter(tmp_path):
    binary = codex_binary()
    home = make_codex_home(tmp_path)
    proj = make_project(tmp_path)
    r = spool("init", "--no-interactive", "--codex-bin", str(binary), cwd=proj, home=home)
    assert r.returncode == 0, r.stdout + r.stderr
    hooks = proj / ".codex" / "hooks.json"
    # As cloned from a teammate: their virtualenv's python.
    hooks.write_text(hooks.read_text().replace(sys.executable, "/home/teammate/.venv/bin/python"))
    d = spool("doctor", cwd=proj, home=home)
    assert d.returncode == 1
    (line,) = [ln for ln in d.stdout.splitlines() if ln.startswith("[FAIL] hooks installed")]
    assert "interpreter /home/teammate/.venv/bin/python does not exist" in line
    assert "spool init --user" in d.stdout
