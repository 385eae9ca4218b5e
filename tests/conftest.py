"""Shared test fixtures: every test gets its own real spool home and SQLite file."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
SESSION_DIR = FIXTURES / "codex-0.169.0" / "two-turn-echo"
HOOK_PATH = Path(__file__).resolve().parent.parent / "spool" / "hook.py"

# The agent secret of every test that needs one.  After the whole session,
# pytest_sessionfinish greps every file under pytest's basetemp (every test's spool
# home, projects, logs, overflow files) for it and fails the run if it is found.
CANARY_SECRET = "sk-spool-canary-7f3a9c1e5b2d4f60a8e1"


@pytest.fixture(autouse=True)
def spool_home(tmp_path, monkeypatch) -> Path:
    """Point SPOOL_HOME (and the overflow fallback dir) at a throwaway directory."""
    home = tmp_path / "spool-home"
    monkeypatch.setenv("SPOOL_HOME", str(home))
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("SPOOL_NO_AUTOSTART", "1")
    for var in ("INFINIUM_AGENT_ID", "INFINIUM_AGENT_SECRET", "INFINIUM_BASE_URL",
                "CONNECTOR_FLUSH_ON_STOP", "CONNECTOR_FLUSH_ON_SESSION_END",
                "CONNECTOR_SESSION_TTL", "SPOOL_GRANULARITY", "SPOOL_SINKS"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def engine(spool_home):
    """The test's spool database, migrated (disposed of after the test)."""
    from spool import db

    e = db.open_db(spool_home)
    yield e
    e.dispose()


def fixture_payloads() -> list[tuple[str, bytes]]:
    """(event name, raw bytes) of the recorded Codex 0.169.0 session, in order."""
    out = []
    for p in sorted((SESSION_DIR / "payloads").glob("*.json")):
        out.append((p.stem.split("-", 1)[1], p.read_bytes().strip()))
    return out


def codex_like_session(sid: str, turns: int = 2, cwd: str = "/nonexistent") -> list[dict]:
    """A Codex-like session as hook payloads: start, ``turns`` full turns (prompt, one model
    request with usage, one tool call, Stop), end."""
    evs = [{"hook_event_name": "SessionStart", "source": "startup"}]
    for t in range(turns):
        tid = f"{sid}-t{t}"
        turn = [{"hook_event_name": "UserPromptSubmit", "prompt": "hi " + tid},
                {"hook_event_name": "PreModelRequest"},
                {"hook_event_name": "PostModelRequest", "status": "completed",
                 "token_usage": {"input_tokens": 10, "cached_input_tokens": 1,
                                 "output_tokens": 2, "reasoning_output_tokens": 0,
                                 "total_tokens": 12}},
                {"hook_event_name": "PreToolUse", "tool_name": "Bash",
                 "tool_input": {"command": "true"}, "tool_use_id": tid + "-c"},
                {"hook_event_name": "PostToolUse", "tool_name": "Bash",
                 "tool_input": {"command": "true"}, "tool_response": "",
                 "tool_use_id": tid + "-c"},
                {"hook_event_name": "Stop", "last_assistant_message": "ok"}]
        for e in turn:
            e["turn_id"] = tid
        evs.extend(turn)
    evs.append({"hook_event_name": "SessionEnd", "reason": "exit"})
    for e in evs:
        e["session_id"] = sid
        e["cwd"] = cwd
    return evs


def fixture_rollout() -> Path:
    return next((SESSION_DIR / "rollouts").glob("*.jsonl"))


def hook_cmd() -> list[str]:
    """The hook exactly as `spool init` writes it into hooks.json."""
    return [sys.executable, "-I", "-S", str(HOOK_PATH)]


def run_hook(payload: bytes, *, cwd: Path | str | None = None, env: dict | None = None,
             timeout: float = 30) -> subprocess.CompletedProcess:
    """Run the real hook process with ``payload`` on stdin."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run(hook_cmd(), input=payload, capture_output=True, cwd=cwd,
                          env=full_env, timeout=timeout)


def with_cwd(payload: bytes, cwd: str) -> bytes:
    obj = json.loads(payload)
    obj["cwd"] = cwd
    return json.dumps(obj).encode()


def canary_leaks(root: Path, canary: bytes = CANARY_SECRET.encode()) -> list[Path]:
    """Files under ``root`` whose bytes contain ``canary`` (symlinks not followed)."""
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            try:
                if p.is_symlink() or not p.is_file():
                    continue
                with open(p, "rb") as fh:
                    if canary in fh.read():
                        found.append(p)
            except OSError:
                continue
    return found


def pytest_sessionfinish(session, exitstatus):
    """The secret never touches disk: grep the whole suite's temporary files for it."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None:
        return
    try:
        base = factory.getbasetemp()
    except Exception:  # noqa: BLE001 - no temp dir was ever made
        return
    leaks = canary_leaks(Path(base))
    if leaks:
        import sys as _sys

        print("\nSECRET LEAK: the canary secret was found in:", file=_sys.stderr)
        for p in leaks:
            print(f"  {p}", file=_sys.stderr)
        session.exitstatus = 1


@pytest.fixture(scope="session")
def phoenix(tmp_path_factory):
    """A real Arize Phoenix on a free loopback port for the whole run (tests/phoenix_server.py),
    installed on first use by scripts/install_phoenix.py; stopped at the end."""
    from phoenix_server import Phoenix

    server = Phoenix(tmp_path_factory.mktemp("phoenix")).start()
    try:
        yield server
    finally:
        server.stop()
