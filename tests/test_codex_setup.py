"""spool's Codex set-up files, without Codex: hooks.json merge/unmerge, config.toml,
malformed files, idempotence, and the init/doctor/uninstall/update-credentials CLI
(with a stand-in `codex` that only answers --version; the trust step is covered with
the real Codex in test_codex_trust.py)."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spool import codex as cx
from spool.cli import get_app
from spool.errors import SpoolError

OTHER = {"type": "command", "command": "/usr/local/bin/other-tool --event", "timeout": 5}
OTHER_GROUP = {"matcher": "Bash", "hooks": [OTHER]}
CMD = cx.hook_command()
VENV_SPOOL = Path(sys.executable).parent / "spool"


def other_doc() -> dict:
    return {"hooks": {"PreToolUse": [OTHER_GROUP], "Stop": [{"hooks": [dict(OTHER)]}],
                      "NotAnEventYet": [{"hooks": [dict(OTHER)]}]},
            "x-other-tool": {"keep": True}}


# --- pure merge / unmerge -----------------------------------------------------------

def test_hook_command_is_isolated_stdlib_script():
    import shlex

    argv = shlex.split(CMD)
    assert argv[0] == sys.executable and argv[1:3] == ["-I", "-S"]
    assert argv[3].endswith("/spool/hook.py") and Path(argv[3]).is_file()
    assert cx.is_spool_command(CMD)
    assert cx.is_spool_command("/usr/bin/python3 -m spool.hook")
    assert cx.is_spool_command("'/opt/my env/bin/python' -I -S '/x y/spool/hook.py'")
    for other in ("/usr/bin/myspool/hook.py", "/bin/true", "python -m spool.hooks", None, 3):
        assert not cx.is_spool_command(other)


def test_merge_into_nothing_registers_every_event():
    doc = cx.merge_hooks(None, CMD)
    assert list(doc["hooks"]) == list(cx.EVENTS)
    for event, groups in doc["hooks"].items():
        assert len(groups) == 1
        (handler,) = groups[0]["hooks"]
        want = {"type": "command", "command": CMD,
                "timeout": 3 if event in ("SessionEnd", "Interrupt") else 30}
        if event in ("PreModelRequest", "PostModelRequest", "PreToolUse", "PostToolUse"):
            want["async"] = True  # mid-turn events: Codex does not wait (issue 20)
        assert handler == want
        assert ("matcher" in groups[0]) == (event in cx.MATCHER_EVENTS)
        if event in cx.MATCHER_EVENTS:
            assert groups[0]["matcher"] == "*"


def test_merge_keeps_other_hooks_in_place_and_appends_spool_last():
    before = other_doc()
    doc = cx.merge_hooks(before, CMD)
    assert before == other_doc()  # pure: the input is not modified
    assert doc["x-other-tool"] == {"keep": True}
    assert doc["hooks"]["NotAnEventYet"] == [{"hooks": [OTHER]}]
    assert doc["hooks"]["PreToolUse"][0] == OTHER_GROUP
    assert doc["hooks"]["PreToolUse"][1]["hooks"][0]["command"] == CMD
    assert doc["hooks"]["Stop"][0] == {"hooks": [OTHER]}
    assert sorted(e for e, *_ in cx.spool_positions(doc)) == sorted(cx.EVENTS)


def test_merge_is_idempotent_and_replaces_an_old_interpreter_in_place():
    once = cx.merge_hooks(other_doc(), CMD)
    assert cx.merge_hooks(once, CMD) == once
    old = cx.merge_hooks(other_doc(), "/old/venv/bin/python -m spool.hook")
    # someone added a hook after spool's group since
    old["hooks"]["PreToolUse"].append({"hooks": [{"type": "command", "command": "late"}]})
    new = cx.merge_hooks(old, CMD)
    pre = new["hooks"]["PreToolUse"]
    assert [g["hooks"][0]["command"] for g in pre] == [OTHER["command"], CMD, "late"]
    assert len(cx.spool_positions(new)) == len(cx.EVENTS)


def test_unmerge_restores_the_other_tools_document():
    merged = cx.merge_hooks(other_doc(), CMD)
    un = cx.unmerge_hooks(merged)
    assert un.doc == other_doc()
    assert len(un.removed_keys) == len(cx.EVENTS)
    assert un.moved == {}
    assert ("PreToolUse", 1, 0) in un.removed_keys


def test_unmerge_reports_shifted_groups_of_other_tools():
    merged = cx.merge_hooks(None, CMD)
    merged["hooks"]["Stop"].append({"hooks": [dict(OTHER)]})  # another tool after spool
    un = cx.unmerge_hooks(merged)
    assert un.doc == {"hooks": {"Stop": [{"hooks": [OTHER]}]}}
    assert un.moved == {("Stop", 1, 0): ("Stop", 0, 0)}


def test_trust_key_format():
    assert cx.snake("PreToolUse") == "pre_tool_use"
    assert cx.snake("SessionStart") == "session_start"
    assert cx.trust_key(Path("/p/.codex/hooks.json"), "PostModelRequest", 2, 0) == \
        "/p/.codex/hooks.json:post_model_request:2:0"


# --- files ---------------------------------------------------------------------------

def test_install_hooks_writes_once_and_then_changes_nothing(tmp_path):
    proj = tmp_path / "p"
    (proj / ".codex").mkdir(parents=True)
    path = proj / ".codex" / "hooks.json"
    path.write_text(json.dumps(other_doc()))
    ch = cx.install_hooks(proj, CMD)
    assert ch.changed and ch.existed
    after = path.read_bytes()
    assert json.loads(after) == cx.merge_hooks(other_doc(), CMD)
    st = path.stat()
    ch2 = cx.install_hooks(proj, CMD)
    assert not ch2.changed
    assert path.read_bytes() == after and path.stat().st_mtime_ns == st.st_mtime_ns


@pytest.mark.parametrize("content", [
    "{not json", "[]", '{"hooks": []}', '{"hooks": {"Stop": {}}}', '{"hooks": {"Stop": [3]}}',
    '{"hooks": {"Stop": [{"hooks": {}}]}}', '{"hooks": {"Stop": [{"hooks": ["x"]}]}}',
])
def test_malformed_hooks_json_is_an_error_and_left_untouched(tmp_path, content):
    proj = tmp_path / "p"
    (proj / ".codex").mkdir(parents=True)
    path = proj / ".codex" / "hooks.json"
    path.write_text(content)
    with pytest.raises(SpoolError) as err:
        cx.install_hooks(proj, CMD)
    assert str(path) in err.value.reason and "untouched" in err.value.reason
    assert path.read_text() == content
    with pytest.raises(SpoolError):
        cx.uninstall_hooks(proj, delete_if_empty=True)
    assert path.read_text() == content


def test_uninstall_hooks_deletes_only_a_file_spool_created_and_emptied(tmp_path):
    proj = tmp_path / "p"
    proj.mkdir()
    cx.install_hooks(proj, CMD)
    r = cx.uninstall_hooks(proj, delete_if_empty=False)
    assert r.removed == len(cx.EVENTS) and not r.deleted_file
    assert json.loads(cx.hooks_path(proj).read_text()) == {"hooks": {}}
    cx.install_hooks(proj, CMD)
    r = cx.uninstall_hooks(proj, delete_if_empty=True)
    assert r.deleted_file and not cx.hooks_path(proj).exists()
    assert not (proj / ".codex").exists()


TOML = """\
# my settings
model = "o3"  # keep this comment

[features]
other_feature = true   # aligned comment
hooks = false

[hooks.state."/elsewhere/.codex/hooks.json:stop:0:0"]
trusted_hash = "sha256:other"
"""


def test_feature_flag_keeps_formatting_and_is_idempotent(tmp_path):
    home = tmp_path / "ch"
    home.mkdir()
    (home / "config.toml").write_text(TOML)
    assert cx.feature_flag(home) is False
    assert cx.ensure_feature_flag(home) is True
    text = (home / "config.toml").read_text()
    assert text == TOML.replace("hooks = false", "hooks = true")
    assert cx.ensure_feature_flag(home) is False
    assert (home / "config.toml").read_text() == text
    assert cx.feature_flag(home) is True


def test_feature_flag_creates_the_file_and_the_table(tmp_path):
    home = tmp_path / "new-home"
    assert cx.ensure_feature_flag(home)
    assert cx.read_toml(home) == {"features": {"hooks": True}}
    assert stat.S_IMODE((home / "config.toml").stat().st_mode) == 0o600
    other = tmp_path / "h2"
    other.mkdir()
    (other / "config.toml").write_text('model = "x"\n')
    assert cx.ensure_feature_flag(other)
    assert cx.read_toml(other) == {"model": "x", "features": {"hooks": True}}


def test_malformed_config_toml_is_an_error_and_left_untouched(tmp_path):
    home = tmp_path / "ch"
    home.mkdir()
    (home / "config.toml").write_text("[features\nhooks = ")
    with pytest.raises(SpoolError) as err:
        cx.ensure_feature_flag(home)
    assert "config.toml" in err.value.reason
    assert (home / "config.toml").read_text() == "[features\nhooks = "


def test_remove_trust_entries_keeps_others_and_rekeys_shifted_ones(tmp_path):
    home = tmp_path / "ch"
    home.mkdir()
    mine = "/p/.codex/hooks.json:stop:0:0"
    theirs_old, theirs_new = "/p/.codex/hooks.json:stop:1:0", "/p/.codex/hooks.json:stop:0:0"
    (home / "config.toml").write_text(TOML + f'\n[hooks.state."{mine}"]\ntrusted_hash = "sha256:mine"\n'
                                      f'\n[hooks.state."{theirs_old}"]\ntrusted_hash = "sha256:theirs"\n')
    n = cx.remove_trust_entries(home, [mine], {theirs_old: theirs_new})
    assert n == 1
    state = cx.hooks_state(home)
    assert state == {"/elsewhere/.codex/hooks.json:stop:0:0": {"trusted_hash": "sha256:other"},
                     theirs_new: {"trusted_hash": "sha256:theirs"}}
    assert (home / "config.toml").read_text().startswith(TOML.split("[hooks.state")[0])


def test_project_trust_reads_exact_path_or_parent(tmp_path):
    home = tmp_path / "ch"
    home.mkdir()
    (home / "config.toml").write_text('[projects."/home/dev/a"]\ntrust_level = "trusted"\n')
    assert cx.project_trust(home, Path("/home/dev/a")) == "trusted"
    assert cx.project_trust(home, Path("/home/dev/a/sub")) == "trusted"
    assert cx.project_trust(home, Path("/home/dev/b")) is None


def test_codex_home_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEX_HOME", str(tmp_path / "env-home"))
    assert cx.codex_home() == (tmp_path / "env-home").resolve()
    assert cx.codex_home(tmp_path / "flag") == (tmp_path / "flag").resolve()
    monkeypatch.delenv("CODEX_HOME")
    assert cx.codex_home() == (Path.home() / ".codex").resolve()


# --- CLI (stand-in codex: answers --version only) ----------------------------------------


@pytest.fixture
def proj(tmp_path) -> Path:
    p = tmp_path / "proj"
    (p / ".codex").mkdir(parents=True)
    (p / ".codex" / "hooks.json").write_text(json.dumps(other_doc(), indent=4))
    subprocess.run(["git", "init", "-q", str(p)], check=True)
    return p.resolve()


def _init_args(proj, home, codex, *extra):
    return ["init", "--no-interactive", "--no-trust-project", "--project", str(proj),
            "--codex-home", str(home), "--codex-bin", str(codex), *extra]


def snapshot(*paths: Path) -> dict:
    return {str(p): p.read_bytes() for p in paths if p.exists()}


def test_cli_init_without_codex_changes_nothing_and_says_what_to_do(tmp_path, proj):
    before = snapshot(proj / ".codex" / "hooks.json")
    r = CliRunner().invoke(get_app(), ["init", "--no-interactive", "--project", str(proj),
                                       "--codex-home", str(tmp_path / "ch"),
                                       "--codex-bin", str(tmp_path / "no-such-codex")])
    assert r.exit_code == 1
    assert "npm install -g @openai/codex" in r.output and "--codex-bin" in r.output
    assert snapshot(proj / ".codex" / "hooks.json") == before
    assert not (proj / ".spool").exists() and not (tmp_path / "ch").exists()


def test_cli_init_malformed_hooks_json_fails_before_writing(tmp_path, proj, stub_codex):
    (proj / ".codex" / "hooks.json").write_text('{"hooks": {"Stop": "oops"}}')
    r = CliRunner().invoke(get_app(), _init_args(proj, tmp_path / "ch", stub_codex))
    assert r.exit_code == 1 and "hooks.Stop is not a list" in r.output
    assert (proj / ".codex" / "hooks.json").read_text() == '{"hooks": {"Stop": "oops"}}'
    assert not (proj / ".spool").exists() and not (tmp_path / "ch" / "config.toml").exists()


def test_cli_init_writes_files_then_is_a_no_op(tmp_path, proj, stub_codex):
    home = tmp_path / "ch"
    r = CliRunner().invoke(get_app(), _init_args(proj, home, stub_codex, "--granularity", "both"))
    assert r.exit_code == 0, r.output
    assert "not trusted in Codex" in r.output and "will NOT run" in r.output
    cfg = json.loads((proj / ".spool" / "config.json").read_text())
    assert cfg["granularity"] == "both"
    assert cfg["codex"] == {"hooks_json_created": False, "codex_home": str(home.resolve()),
                            "codex_bin": str(stub_codex)}
    assert stat.S_IMODE((proj / ".spool" / "config.json").stat().st_mode) == 0o600
    hooks = json.loads((proj / ".codex" / "hooks.json").read_text())
    assert hooks == cx.merge_hooks(other_doc(), CMD)
    assert cx.feature_flag(home) is True
    assert (proj / ".gitignore").read_text() == ".spool/\n"
    files = [proj / ".codex" / "hooks.json", proj / ".spool" / "config.json",
             home / "config.toml", proj / ".gitignore"]
    before = snapshot(*files)
    r2 = CliRunner().invoke(get_app(), _init_args(proj, home, stub_codex))
    assert r2.exit_code == 0, r2.output
    assert "Nothing to change" in r2.output
    assert snapshot(*files) == before


def test_cli_init_bad_granularity(tmp_path, proj, stub_codex):
    r = CliRunner().invoke(get_app(), _init_args(proj, tmp_path / "ch", stub_codex,
                                                 "--granularity", "daily"))
    assert r.exit_code == 2 and "--granularity 'daily'" in r.output  # a usage error
    assert not (proj / ".spool").exists()


def test_cli_init_secret_without_keyring_is_a_clear_error_never_plaintext(tmp_path, proj, stub_codex,
                                                                          monkeypatch):
    import keyring
    from keyring.backends import fail

    monkeypatch.setattr(keyring, "get_keyring", lambda: fail.Keyring())
    secret = "s3cret-value-123"
    r = CliRunner().invoke(get_app(), _init_args(proj, tmp_path / "ch", stub_codex,
                                                 "--agent-id", "agent-1",
                                                 "--agent-secret", secret))
    assert r.exit_code == 1
    assert "INFINIUM_AGENT_SECRET" in r.output and "keyring" in r.output
    assert secret not in r.output
    for p in [*proj.rglob("*"), *(tmp_path / "ch").rglob("*"), *Path(os.environ["SPOOL_HOME"]).rglob("*")]:
        if p.is_file():
            assert secret.encode() not in p.read_bytes(), p
    # Found before any write: nothing half set up.
    assert not (proj / ".spool").exists()


def test_cli_interactive_init_asks(tmp_path, proj, stub_codex):
    home = tmp_path / "ch"
    args = ["init", "--project", str(proj), "--codex-home", str(home), "--codex-bin",
            str(stub_codex), "--no-trust-project"]
    r = CliRunner().invoke(get_app(), args, input="\nn\n")  # no agent id; no .gitignore
    assert r.exit_code == 0, r.output
    assert "Infinium agent id" in r.output and "Add .spool/ to .gitignore?" in r.output
    assert not (proj / ".gitignore").exists()
    assert "agent_id" not in json.loads((proj / ".spool" / "config.json").read_text())


def _add_trace(engine, trace_id, project, state, now=1000.0):
    from sqlalchemy import text

    from spool import db

    with db.write(engine) as conn:
        conn.execute(text("INSERT INTO traces (trace_id, kind, project, name, created_at, body) "
                          "VALUES (:t, 'turn', :p, 'n', :now, '{}')"),
                     {"t": trace_id, "p": str(project), "now": now})
        conn.execute(text("INSERT INTO outbox (trace_id, sink, state, created_at, next_attempt_at) "
                          "VALUES (:t, 'infinium', :s, :now, :now)"),
                     {"t": trace_id, "s": state, "now": now})


def _trace_ids(engine):
    from sqlalchemy import text

    from spool import db

    with db.read(engine) as conn:
        return sorted(r[0] for r in conn.execute(text("SELECT trace_id FROM traces")))


def test_cli_uninstall_keeps_other_hooks_and_asks_about_undelivered(tmp_path, proj, stub_codex):
    from spool import db

    home = tmp_path / "ch"
    assert CliRunner().invoke(get_app(), _init_args(proj, home, stub_codex)).exit_code == 0
    engine = db.open_db()
    _add_trace(engine, "t-sent", proj, "sent")
    _add_trace(engine, "t-pending", proj, "pending")
    _add_trace(engine, "t-held", proj, "held")
    _add_trace(engine, "t-elsewhere", tmp_path / "other-project", "pending")
    r = CliRunner().invoke(get_app(), ["uninstall", "--project", str(proj), "--codex-home",
                                       str(home)], input="y\nn\n")
    assert r.exit_code == 0, r.output
    assert "Delete 2 undelivered traces" in r.output and "kept 2 undelivered" in r.output
    assert json.loads((proj / ".codex" / "hooks.json").read_text()) == other_doc()
    assert not (proj / ".spool").exists()
    assert _trace_ids(engine) == ["t-elsewhere", "t-held", "t-pending", "t-sent"]
    # again, now deleting: the undelivered traces of this project only
    assert CliRunner().invoke(get_app(), _init_args(proj, home, stub_codex)).exit_code == 0
    r = CliRunner().invoke(get_app(), ["uninstall", "-y", "--project", str(proj),
                                       "--codex-home", str(home)])
    assert r.exit_code == 0, r.output
    assert "deleted 2 undelivered traces" in r.output
    assert _trace_ids(engine) == ["t-elsewhere", "t-sent"]
    engine.dispose()


def test_cli_uninstall_deletes_the_hooks_file_spool_created(tmp_path, stub_codex):
    p = tmp_path / "fresh"
    p.mkdir()
    home = tmp_path / "ch"
    assert CliRunner().invoke(get_app(), _init_args(p, home, stub_codex)).exit_code == 0
    assert (p / ".codex" / "hooks.json").exists()
    r = CliRunner().invoke(get_app(), ["uninstall", "-y", "--project", str(p), "--codex-home",
                                       str(home)])
    assert r.exit_code == 0, r.output
    assert not (p / ".codex").exists() and not (p / ".spool").exists()


def test_cli_doctor_reports_each_failure_with_a_fix(tmp_path, stub_codex):
    p = tmp_path / "nothing-here"
    p.mkdir()
    r = CliRunner().invoke(get_app(), ["doctor", "--json", "--project", str(p), "--codex-home",
                                       str(tmp_path / "ch"), "--codex-bin", str(stub_codex)])
    assert r.exit_code == 1
    out = json.loads(r.stdout)
    by = {c["name"]: c for c in out["checks"]}
    assert out["ok"] is False
    assert by["codex"]["status"] == "ok" and "0.169.0" in by["codex"]["detail"]
    for name in ("project config", "project trusted", "hooks installed", "hooks trusted"):
        assert by[name]["status"] == "fail" and "spool init" in by[name]["fix"], by[name]
    assert by["spool home"]["status"] == "ok"
    assert by["worker"]["status"] == "warn" and "SPOOL_NO_AUTOSTART" in by["worker"]["detail"]


def test_cli_doctor_sees_a_running_worker_by_its_lock(tmp_path, stub_codex, spool_home):
    import fcntl

    spool_home.mkdir(parents=True, exist_ok=True)
    fd = os.open(spool_home / "worker.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, b"4242\n")
        r = CliRunner().invoke(get_app(), ["doctor", "--json", "--project", str(tmp_path),
                                           "--codex-bin", str(stub_codex)])
        worker = {c["name"]: c for c in json.loads(r.stdout)["checks"]}["worker"]
        assert worker == {"name": "worker", "status": "ok", "detail": "running (pid 4242)",
                          "fix": ""}
    finally:
        os.close(fd)


class MemoryKeyring:
    """An in-memory keyring backend (stands in for the OS keyring service)."""

    priority = 1

    def __init__(self):
        self.store = {}

    def get_password(self, service, user):
        return self.store.get((service, user))

    def set_password(self, service, user, secret):
        self.store[(service, user)] = secret

    def delete_password(self, service, user):
        from keyring.errors import PasswordDeleteError

        if (service, user) not in self.store:
            raise PasswordDeleteError("none")
        del self.store[(service, user)]


def test_cli_update_credentials_stores_and_releases_held(tmp_path, monkeypatch):
    import keyring
    from sqlalchemy import text

    from spool import config, credentials, db

    mem = MemoryKeyring()
    monkeypatch.setattr(keyring, "get_keyring", lambda: mem)
    monkeypatch.setattr(keyring, "set_password", mem.set_password)
    monkeypatch.setattr(keyring, "get_password", mem.get_password)
    monkeypatch.setattr(keyring, "delete_password", mem.delete_password)
    p = tmp_path / "p"
    p.mkdir()
    config.write_file(p, {"agent_id": "agent-9"})
    engine = db.open_db()
    _add_trace(engine, "t-held", p, "held")
    r = CliRunner().invoke(get_app(), ["update-credentials", "--project", str(p)],
                           input="a-long-secret-value\n")
    assert r.exit_code == 0, r.output
    assert "Released 1 held" in r.output and "a-long-secret-value" not in r.output
    creds = credentials.resolve(config.load(p), env={})
    assert creds is not None and creds.secret == "a-long-secret-value"
    with db.read(engine) as conn:
        assert conn.execute(text("SELECT state FROM outbox")).scalar_one() == "pending"
    # uninstall deletes the stored secret
    r = CliRunner().invoke(get_app(), ["uninstall", "-y", "--project", str(p), "--codex-home",
                                       str(tmp_path / "ch")])
    assert r.exit_code == 0, r.output
    assert mem.store == {}
    engine.dispose()


def test_cli_update_credentials_without_a_secret(tmp_path):
    p = tmp_path / "p"
    p.mkdir()
    r = CliRunner().invoke(get_app(), ["update-credentials", "--no-interactive", "--project",
                                       str(p), "--agent-id", "a"])
    assert r.exit_code == 1 and "no agent secret given" in r.output


# --- the installed script, as a subprocess --------------------------------------------------

def test_installed_spool_init_without_codex_is_one_line(tmp_path):
    r = subprocess.run([str(VENV_SPOOL), "init", "--no-interactive", "--project", str(tmp_path),
                        "--codex-bin", str(tmp_path / "missing")], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert r.stderr.startswith("Error: the Codex CLI was not found")


def test_installed_spool_doctor_json(tmp_path, stub_codex):
    r = subprocess.run([str(VENV_SPOOL), "doctor", "--json", "--project", str(tmp_path),
                        "--codex-home", str(tmp_path / "ch"), "--codex-bin", str(stub_codex)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    data = json.loads(r.stdout)
    assert {c["status"] for c in data["checks"]} <= {"ok", "warn", "fail"}
    assert all(c["fix"] for c in data["checks"] if c["status"] == "fail")
