"""What a first-time user tripped over, through the installed `spool` script."""
from __future__ import annotations

from pathlib import Path

import pytest

from support.cli import one_line_error, run_spool


# --- a malformed command line: one line naming the help, exit 2, never Click's box ---------------

@pytest.mark.parametrize("args, says", [
    (("show",), "Missing argument 'ID'. See `spool show --help`."),
    (("export",), "Missing argument 'SESSION_ID'. See `spool export --help`."),
    (("bogus",), "No such command 'bogus'. See `spool --help`."),
    (("export", "abc", "--format", "xml"), "'xml' is not one of 'atif', 'json', 'html'."),
    (("test", "--sink"), "Option '--sink' requires an argument. See `spool test --help`."),
    (("worker", "--idle-exit", "soon"), "'soon' is not a valid float range."),
    (("ui", "--port", "99999"), "99999 is not in the range"),
    (("history", "--no-such-flag"), "No such option: --no-such-flag"),
])
def test_click_usage_errors_are_one_line_exit_2(args, says, tmp_path):
    line = one_line_error(run_spool(*args, cwd=tmp_path), 2)
    assert line.startswith("Error: ") and says in line, line
    assert "╭" not in line and "Usage:" not in line


def test_bare_spool_still_prints_the_help(tmp_path):
    res = run_spool(cwd=tmp_path)
    assert res.returncode == 2 and "Commands" in res.stdout and "history" in res.stdout


def test_version_and_exit_codes_pass_through(tmp_path):
    res = run_spool("--version", cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.strip()
    res = run_spool("show", "zzzz", cwd=tmp_path)
    assert res.returncode == 1 and "no trace or session" in res.stderr


# --- a prompt without a terminal: say how to answer it --------------------------------------

def test_init_with_no_terminal_to_answer_says_how(tmp_path, stub_codex):
    proj = tmp_path / "proj"
    proj.mkdir()
    res = run_spool("init", "--codex-home", str(tmp_path / "ch"), "--codex-bin", str(stub_codex),
                    cwd=proj, input="")
    line = one_line_error(res, 1)
    assert "stdin is not a terminal" in line and "--no-interactive" in line, line
    assert not (proj / ".spool").exists()


# --- init without a keyring and without a secret: the note names the way that works ---------

NO_KEYRING = {"PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
              "INFINIUM_AGENT_SECRET": None}


def test_init_without_keyring_or_secret_points_to_the_environment_not_update_credentials(
        tmp_path, stub_codex):
    proj = tmp_path / "proj"
    proj.mkdir()
    res = run_spool("init", "--agent-id", "agent-1", "--no-interactive", "--no-trust-project",
                    "--codex-home", str(tmp_path / "ch"), "--codex-bin", str(stub_codex),
                    cwd=proj, env=NO_KEYRING)
    assert res.returncode == 0, res.stderr
    note = [ln for ln in res.stdout.splitlines() if "No agent secret yet" in ln]
    assert len(note) == 1 and "INFINIUM_AGENT_SECRET" in note[0], res.stdout
    assert "update-credentials" not in note[0] and "keyring" in note[0]
    # and update-credentials indeed cannot store it here
    line = one_line_error(run_spool("update-credentials", "--agent-id", "agent-1",
                                    "--agent-secret", "x" * 16, "--no-interactive", cwd=proj,
                                    env=NO_KEYRING), 1)
    assert "keyring" in line


# --- cleanup --help names every key --json prints ------------------------------------------

def test_cleanup_help_lists_exactly_the_json_keys(tmp_path):
    import json
    import re

    res = run_spool("cleanup", "--older-than", "30", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    keys = set(json.loads(res.stdout))
    helptext = " ".join(run_spool("cleanup", "--help", cwd=tmp_path, env={"COLUMNS": "200"})
                        .stdout.split())
    listed = re.search(r"JSON keys: ([a-z_, ]+) \(rows deleted\)", helptext)
    assert listed, helptext
    assert {k.strip() for k in listed.group(1).split(",")} == keys
    assert "0: all of it" in helptext


# --- spool --help: one line per command on a wide terminal ----------------------------------

def test_help_lists_each_command_on_one_line_when_wide(tmp_path):
    import typer.main

    from spool.cli import get_app

    commands = typer.main.get_command(get_app()).commands
    out = run_spool("--help", cwd=tmp_path, env={"COLUMNS": "200"}).stdout
    panel = out.split("Commands", 1)[1].splitlines()[1:]
    rows = [ln.strip("│ ") for ln in panel if ln.startswith("│")]
    assert len(rows) == len(commands), "\n".join(rows)
    assert {r.split()[0] for r in rows} == set(commands)


# --- spool status: a key/value table without an empty header row ---------------------------

def test_status_has_no_empty_header_row(tmp_path):
    res = run_spool("status", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].strip() == "spool status" and lines[1].split()[0] == "project", lines[:3]
    assert not [ln for ln in lines if ln.strip() and not set(ln.strip()) - set("━╇┃│ ")]


def test_no_keyring_says_where_to_set_the_secret(tmp_path, stub_codex):
    proj = tmp_path / "proj"
    proj.mkdir()
    res = run_spool("init", "--agent-id", "agent-1", "--codex-home", str(tmp_path / "ch"),
                    "--codex-bin", str(stub_codex), cwd=proj, env=NO_KEYRING, input="\n")
    line = one_line_error(res, 1)
    assert "INFINIUM_AGENT_SECRET in the environment you run Codex in" in line, line


# --- a huge --limit means "all", not an OverflowError traceback ------------------------------

@pytest.mark.parametrize("command", ["history", "sessions", "errors"])
def test_a_limit_beyond_64_bits_lists_everything(command, tmp_path):
    res = run_spool(command, "-n", "9" * 25, cwd=tmp_path)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert res.stdout.split(".")[0] in ("No traces yet", "No sessions yet", "No errors"), res.stdout


# --- usage at the ends of the calendar: everything, not a traceback --------------------------

@pytest.mark.parametrize("args", [("--since", "0001-01-01"), ("--until", "9999-12-31"),
                                  ("--since", "0001-01-01", "--until", "9999-12-31", "--json")])
def test_usage_accepts_the_first_and_last_dates(args, tmp_path, engine):
    from support.usage_data import report_db

    report_db(engine)
    res = run_spool("usage", *args, cwd=tmp_path)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    assert "total" in res.stdout


# --- spool test --sink atif leaves no test trajectory behind ----------------------------------

def test_spool_test_atif_sink_leaves_no_test_trajectory(tmp_path, spool_home):
    res = run_spool("test", "--sink", "atif", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "and removed it" in res.stdout, res.stdout
    atif_dir = spool_home / "atif"
    assert atif_dir.is_dir() and list(atif_dir.iterdir()) == []


@pytest.mark.parametrize("since", ["0001-01-01", "9999-12-31"])
def test_history_since_the_first_or_last_date_is_a_date(since, tmp_path):
    res = run_spool("history", "--since", since, cwd=tmp_path)
    assert res.returncode == 0 and res.stderr == "", res.stderr


# --- spool start on a host that is not this machine's: the fix names --host -------------------

@pytest.mark.parametrize("host", ["192.0.2.1"])  # TEST-NET-1: not this machine, no DNS lookup
def test_start_on_an_unknown_host_says_to_change_the_host(host, tmp_path):
    line = one_line_error(run_spool("start", "--host", host, "--port", "0", cwd=tmp_path), 1)
    assert f"cannot listen on {host}:0" in line and "--host 127.0.0.1" in line, line
    assert "--port" not in line


# --- an empty spool points at `spool doctor` ------------------------------------------------

@pytest.mark.parametrize("command, noun", [("history", "traces"), ("sessions", "sessions")])
def test_nothing_recorded_yet_points_to_doctor(command, noun, tmp_path):
    res = run_spool(command, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"No {noun} yet.") and "`spool doctor`" in res.stdout


# --- spool test when nothing could be sent says so (not "no answer") -------------------------

def test_spool_test_without_a_secret_says_not_sent(tmp_path):
    import json

    (tmp_path / ".spool").mkdir()
    (tmp_path / ".spool" / "config.json").write_text(json.dumps(
        {"agent_id": "agent-1", "base_url": "http://127.0.0.1:9/api"}))
    res = run_spool("test", cwd=tmp_path, env=NO_KEYRING)
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stdout.startswith("FAILED: infinium http://127.0.0.1:9/api/agents/agent-1/trace: "
                                 "not sent ("), res.stdout
    res = run_spool("test", "--json", cwd=tmp_path, env=NO_KEYRING)
    out = json.loads(res.stdout)
    out = out[0] if isinstance(out, list) else out
    assert out["attempted"] is False and out["ok"] is False


# --- a second interactive init asks nothing it was told before --------------------------------

def test_init_again_does_not_ask_for_the_agent_id_again(tmp_path, stub_codex):
    import subprocess

    proj = tmp_path / "proj"
    subprocess.run(["git", "init", "-q", str(proj)], check=True)
    args = ("init", "--codex-home", str(tmp_path / "ch"), "--codex-bin", str(stub_codex),
            "--no-trust-project")
    first = run_spool(*args, cwd=proj, input="\ny\n")  # no agent id (files); .gitignore yes
    assert first.returncode == 0 and "Infinium agent id" in first.stdout, first.stderr
    again = run_spool(*args, cwd=proj, input="")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Infinium agent id" not in again.stdout and "Nothing to change" in again.stdout
    assert "spool init --agent-id" in again.stdout  # the note still says how to add one


# --- a bad SPOOL_GRANULARITY: fix the variable (it wins over what init writes) ----------------

def test_bad_granularity_in_the_environment_says_to_fix_the_variable(tmp_path):
    line = one_line_error(run_spool("status", cwd=tmp_path, env={"SPOOL_GRANULARITY": "weekly"}),
                          1)
    assert "SPOOL_GRANULARITY 'weekly' is not one of turn, session, both." in line
    assert "unset it" in line and "spool init" not in line, line


# --- the demo's "Next:" names a spool the user can run ---------------------------------------

def test_demo_names_the_venv_script_when_spool_is_not_on_path(tmp_path, monkeypatch):
    import sys

    from spool.demo import spool_command

    script = Path(sys.executable).parent / "spool"
    monkeypatch.setenv("PATH", str(tmp_path))  # as after scripts/demo.sh: .venv not on PATH
    monkeypatch.chdir(tmp_path)
    assert spool_command() == str(script)
    monkeypatch.chdir(script.parent.parent.parent)  # the checkout: still absolute
    assert spool_command() == str(script)
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin:/bin")  # activated virtualenv
    assert spool_command() == "spool"
