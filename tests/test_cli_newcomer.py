"""What a first-time user hit (issue 13), through the installed `spool` script."""
from __future__ import annotations

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
    assert "Known sinks: file, infinium" in res.stdout


def test_spool_test_refuses_an_unknown_configured_or_named_sink(tmp_path):
    line = one_line_error(run_spool("test", cwd=tmp_path, env={"SPOOL_SINKS": "otlpx"}), 1)
    assert "'otlpx'" in line and "infinium" in line
    line = one_line_error(run_spool("test", "--sink", "nope", cwd=tmp_path), 2)
    assert "'nope'" in line and "file" in line


def test_spool_test_tests_every_configured_sink_and_shows_the_url(tmp_path, spool_home):
    from spool.receiver import Receiver

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
