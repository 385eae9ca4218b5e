"""`spool init` / `spool uninstall` against the REAL Codex CLI's trust mechanism.

Codex 0.169 skips an untrusted hook silently, and does not even load a project's
.codex/hooks.json until the project is trusted.  These tests ask Codex itself
(`codex app-server` hooks/list) what it will run.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spool import codex as cx
from spool.cli import get_app

from support.codex import codex_binary, make_codex_home, make_codex_project

pytestmark = pytest.mark.e2e

OTHER = {"type": "command", "command": "/usr/local/bin/other-tool pre", "timeout": 7}


@pytest.fixture
def setup(tmp_path):
    binary = codex_binary()
    home = make_codex_home(tmp_path)
    proj = make_codex_project(tmp_path)
    (proj / ".codex").mkdir()
    (proj / ".codex" / "hooks.json").write_text(json.dumps(
        {"hooks": {"PreToolUse": [{"matcher": "Bash", "hooks": [OTHER]}]}}, indent=2))
    return binary, home, proj


def listing(binary: Path, home: Path, proj: Path) -> list[dict]:
    with cx.AppServer(binary, home) as server:
        return server.list_hooks(proj)["hooks"]


def init(binary, home, proj, *extra):
    r = CliRunner().invoke(get_app(), ["init", "--no-interactive", "--project", str(proj),
                                       "--codex-home", str(home), "--codex-bin", str(binary),
                                       *extra])
    assert r.exit_code == 0, r.output
    return r


def test_init_trusts_spool_hooks_only_then_is_a_no_op_and_uninstall_keeps_others(setup):
    binary, home, proj = setup
    assert listing(binary, home, proj) == []  # untrusted project: Codex loads nothing

    out = init(binary, home, proj).output
    assert "trusted the project" in out and "trusted spool's 14 hooks" in out
    hooks = listing(binary, home, proj)
    mine = [h for h in hooks if cx.is_spool_command(h["command"])]
    others = [h for h in hooks if not cx.is_spool_command(h["command"])]
    assert sorted(h["eventName"] for h in mine) == sorted(
        cx.snake(e).split("_")[0] + "".join(w.title() for w in cx.snake(e).split("_")[1:])
        for e in cx.EVENTS)
    assert all(h["trustStatus"] == "trusted" for h in mine), [h["trustStatus"] for h in mine]
    assert [(h["command"], h["trustStatus"]) for h in others] == [(OTHER["command"], "untrusted")]

    files = [proj / ".codex" / "hooks.json", proj / ".spool" / "config.json",
             home / "config.toml", proj / ".gitignore"]
    before = {p: p.read_bytes() for p in files}
    out2 = init(binary, home, proj).output
    assert "Nothing to change" in out2
    assert {p: p.read_bytes() for p in files} == before

    doctor = CliRunner().invoke(get_app(), ["doctor", "--json", "--project", str(proj),
                                            "--codex-home", str(home), "--codex-bin", str(binary)])
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert doctor.exit_code == 0, doctor.stdout
    assert checks["hooks trusted"]["status"] == "ok"
    assert checks["project trusted"]["status"] == "ok"

    r = CliRunner().invoke(get_app(), ["uninstall", "-y", "--project", str(proj),
                                       "--codex-home", str(home)])
    assert r.exit_code == 0, r.output
    assert json.loads((proj / ".codex" / "hooks.json").read_text()) == {
        "hooks": {"PreToolUse": [{"matcher": "Bash", "hooks": [OTHER]}]}}
    state = cx.hooks_state(home)
    assert not any("hooks.json" in k and str(proj) in k for k in state), state
    after = listing(binary, home, proj)
    assert [(h["command"], h["trustStatus"]) for h in after] == [(OTHER["command"], "untrusted")]


def test_no_trust_project_leaves_hooks_unloaded_and_doctor_says_so(setup):
    binary, home, proj = setup
    out = init(binary, home, proj, "--no-trust-project").output
    assert "will NOT run" in out
    assert listing(binary, home, proj) == []
    doctor = CliRunner().invoke(get_app(), ["doctor", "--project", str(proj),
                                            "--codex-home", str(home), "--codex-bin", str(binary)])
    assert doctor.exit_code == 1
    assert "[FAIL] project trusted" in doctor.output and "[FAIL] hooks trusted" in doctor.output
    # accepting later fixes it
    init(binary, home, proj)
    assert all(h["trustStatus"] == "trusted" for h in listing(binary, home, proj)
               if cx.is_spool_command(h["command"]))
