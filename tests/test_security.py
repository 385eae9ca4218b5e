"""Security (issue 8 item 6): the secret never leaks, files stay private, and a config found
in a parent directory cannot redirect the secret to another host without consent.

The secret is conftest.CANARY_SECRET; besides the explicit greps here, conftest's
``pytest_sessionfinish`` greps every file the whole suite left under pytest's basetemp.
(The HTTP ingest token and size cap of ``spool start`` are tested in tests/test_server.py.)
"""
from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import keyring
import pytest

from spool import config, credentials, db
from spool.errors import SpoolError
from spool.demo.receiver import Receiver

from support.canary import CANARY_SECRET, canary_leaks
from support.delivery import AGENT, MemoryKeyring, add_trace, outbox
from support.hookproc import hook_cmd
from support.recorded import fixture_payloads, with_cwd
from support.waiting import wait_until
from support.workers import worker_pids

ROOT = Path(__file__).resolve().parent.parent
CANARY = CANARY_SECRET.encode()


def _umask0():
    os.umask(0)


def run(args: list[str], *, env: dict, cwd: Path, stdin: bytes = b"",
        timeout: float = 60) -> subprocess.CompletedProcess:
    """A real process started with umask 000 (the most permissive a user can have)."""
    return subprocess.run(args, input=stdin, capture_output=True, cwd=cwd, env=env,
                          timeout=timeout, preexec_fn=_umask0)


def spool(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    """The CLI, as a real process (umask 000); stdout/stderr decoded."""
    r = run([sys.executable, "-m", "spool", *args], env=env, cwd=cwd)
    r.stdout, r.stderr = r.stdout.decode(), r.stderr.decode()
    return r


def hook(payload: bytes, *, env: dict, cwd: Path) -> None:
    proc = run(hook_cmd(), env=env, cwd=cwd, stdin=payload)
    assert proc.returncode == 0 and proc.stdout == b"", proc.stderr


def assert_private(*roots: Path) -> int:
    """Every file under ``roots`` is 0600 and every directory 0700; returns how many."""
    n = 0
    for root in roots:
        assert stat.S_IMODE(root.stat().st_mode) == 0o700, root
        for dirpath, dirs, files in os.walk(root):
            for d in dirs:
                mode = stat.S_IMODE((Path(dirpath) / d).stat().st_mode)
                assert mode == 0o700, (Path(dirpath) / d, oct(mode))
            for f in files:
                p = Path(dirpath) / f
                mode = stat.S_IMODE(p.lstat().st_mode)
                assert mode == 0o600, (p, oct(mode))
                n += 1
    return n


def query(home: Path, sql: str) -> list:
    conn = sqlite3.connect(home / "spool.db", timeout=10)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


# --- the full flow ---------------------------------------------------------------------


@pytest.mark.slow
def test_secret_never_leaks_and_files_stay_private_under_umask_000(spool_home, workers,
                                                                   tmp_path):
    project = tmp_path / "proj"
    project.mkdir()
    with Receiver(secret=CANARY_SECRET) as rx:
        # A server that echoes the secret in an error, then rejects the credentials.
        rx.script((500, {}, {"error": f"bad key {CANARY_SECRET}"}), 401)
        env = dict(os.environ, INFINIUM_AGENT_SECRET=CANARY_SECRET, INFINIUM_AGENT_ID=AGENT,
                   SPOOL_SESSION_END_GRACE="0.5", SPOOL_WORKER_IDLE_EXIT="2",
                   SPOOL_RETRY_BASE="0.2", SPOOL_RETRY_CAP="0.5", SPOOL_HOOK_BUSY_TIMEOUT="0.1")
        env.pop("SPOOL_NO_AUTOSTART")  # hooks start the worker, as under Codex
        # The user points the project at the receiver (approving it for the env secret).
        r = spool("update-credentials", "--no-interactive", "--base-url", rx.url,
                  env=env, cwd=project)
        assert r.returncode == 0, r.stderr
        assert config.read_file(project)["base_url"] == rx.url
        payloads = [with_cwd(p, str(project)) for _n, p in fixture_payloads()]
        seen_argv: list[bytes] = []
        for i, payload in enumerate(payloads):
            if i == 4:
                # the database locked by a long writer: this event goes to overflow and
                # hook-errors.log gets a line
                locker = sqlite3.connect(spool_home / "spool.db", timeout=10,
                                         isolation_level=None)
                locker.execute("BEGIN IMMEDIATE")
                try:
                    hook(payload, env=env, cwd=project)
                    overflow = list(spool_home.glob("overflow-*.jsonl"))
                    assert overflow and not canary_leaks(spool_home)
                finally:
                    locker.execute("ROLLBACK")
                    locker.close()
            else:
                hook(payload, env=env, cwd=project)
            for pid in worker_pids(spool_home):
                seen_argv.append(Path(f"/proc/{pid}/cmdline").read_bytes())
        assert (spool_home / "hook-errors.log").read_bytes().count(b"overflow") >= 1
        # 500 (secret echoed) -> retried; 401 -> held; the worker keeps running (held rows)
        wait_until(lambda: query(spool_home, "SELECT count(*) FROM outbox WHERE state='held'"
                                 )[0][0] == 2, 60, what="the rows held after the 401")
        assert [r.status for r in rx.requests][:2] == [500, 401]
        for pid in worker_pids(spool_home):
            seen_argv.append(Path(f"/proc/{pid}/cmdline").read_bytes())
        assert seen_argv and all(b"worker" in a for a in seen_argv)
        assert not [a for a in seen_argv if CANARY in a]
        # While the worker runs (WAL and -shm present): nothing leaked, everything private.
        assert not canary_leaks(spool_home) and not canary_leaks(project)
        assert (spool_home / "spool.db-wal").exists()
        assert_private(spool_home, project / ".spool")
        errs = spool("errors", "--json", env=env, cwd=project)
        stat_ = spool("status", "--json", env=env, cwd=project)
        assert errs.returncode == 0 and stat_.returncode == 0, (errs.stderr, stat_.stderr)
        err_rows = json.loads(errs.stdout)
        messages = " ".join(str(e.get("message")) for e in err_rows)
        assert "HTTP 401" in messages and "***" in messages  # the echoed secret, scrubbed
        assert json.loads(stat_.stdout)["outbox"]["held"] == 2
        # The user updates the credentials: the held rows go out.
        r = spool("update-credentials", "--no-interactive", env=env, cwd=project)
        assert r.returncode == 0 and "Released 2 held" in r.stdout, r.stdout + r.stderr
        traces = {t for (t,) in query(spool_home, "SELECT trace_id FROM traces")}
        assert len(traces) == 2
        wait_until(lambda: rx.accepted_keys() == traces, 60, what="delivery after the update")
        wait_until(lambda: not worker_pids(spool_home), 60, what="the idle worker to exit")
        for out in (r, errs, stat_):
            assert CANARY_SECRET not in out.stdout + out.stderr
    # The DB file (and WAL), overflow files, worker.log, hook-errors.log, config, runtime dir
    assert (spool_home / "worker.log").stat().st_size > 0
    assert not canary_leaks(tmp_path), canary_leaks(tmp_path)
    raw = b"".join(p.read_bytes() for p in spool_home.glob("spool.db*"))
    assert CANARY not in raw and b"bad key ***" in raw  # the server's echo kept, scrubbed
    assert query(spool_home, "SELECT DISTINCT state FROM outbox") == [("sent",)]
    assert assert_private(spool_home, project / ".spool") >= 4


@pytest.mark.slow  # real CLI + worker processes: 27 s under load
def test_cli_and_worker_create_private_files_under_umask_000(spool_home, tmp_path):
    project = tmp_path / "p"
    project.mkdir()
    env = dict(os.environ, SPOOL_SINKS="file")
    payloads = [with_cwd(p, str(project)) for _n, p in fixture_payloads()]
    hook(payloads[0], env=env, cwd=project)  # no database yet: an overflow file
    assert list(spool_home.glob("overflow-*.jsonl"))
    assert_private(spool_home)
    for payload in payloads[1:]:
        hook(payload, env=env, cwd=project)
    r = spool("worker", "--once", env=env, cwd=project)
    assert r.returncode == 0, r.stderr
    r = spool("pause", env=env, cwd=project)
    assert r.returncode == 0, r.stderr
    assert query(spool_home, "SELECT count(*) FROM raw_events")[0][0] == len(payloads)
    # the file sink's trace files, the database and its side files
    assert any(spool_home.rglob("*.json")) or any(spool_home.rglob("*.jsonl"))
    assert assert_private(spool_home) >= 3


# --- consent: a config found in a parent directory --------------------------------------


def _cfg(base_url, project=None, source="defaults"):
    return config.Config(agent_id=AGENT, base_url=base_url, project=project, source=source)


def test_env_secret_goes_only_to_default_env_or_approved_urls(spool_home, tmp_path):
    env = {"INFINIUM_AGENT_SECRET": CANARY_SECRET}
    parent = tmp_path / "parent"
    child = parent / "repo" / "sub"
    child.mkdir(parents=True)
    config.write_file(parent, {"agent_id": AGENT, "base_url": "https://evil.example/api"})
    cfg = config.load(child, env=env)
    assert cfg.project == parent.resolve()
    with pytest.raises(credentials.UnapprovedBaseURL) as exc:
        credentials.resolve(cfg, env=env)
    msg = str(exc.value)
    assert "https://evil.example/api" in msg and str(config.config_path(parent.resolve())) in msg
    assert "spool update-credentials --base-url https://evil.example/api" in msg
    assert CANARY_SECRET not in msg
    # the default URL, or a URL the user set in INFINIUM_BASE_URL themselves: allowed
    assert credentials.resolve(_cfg(config.DEFAULT_BASE_URL), env=env).secret == CANARY_SECRET
    env_url = dict(env, INFINIUM_BASE_URL="https://evil.example/api/")
    assert credentials.resolve(config.load(child, env=env_url), env=env_url).source == "env"
    # an approval for another URL or another project does not count
    credentials.approve_base_url(None, parent, "https://other.example")
    credentials.approve_base_url(None, tmp_path, "https://evil.example/api")
    with pytest.raises(credentials.UnapprovedBaseURL):
        credentials.resolve(cfg, env=env)
    credentials.approve_base_url(None, parent, "https://evil.example/api/")
    c = credentials.resolve(cfg, env=env)
    assert (c.secret, c.base_url, c.source) == (CANARY_SECRET, "https://evil.example/api", "env")
    # ... and it is recorded in the spool database, never the secret
    assert query(spool_home, "SELECT value FROM kv WHERE key = "
                 f"'consent:base_url:{parent.resolve()}'") == [("https://evil.example/api",)]


def test_keyring_secret_bound_to_the_url_is_used_when_the_env_one_is_not_approved(
        spool_home, tmp_path):
    old = keyring.get_keyring()
    keyring.set_keyring(MemoryKeyring())
    try:
        env = {"INFINIUM_AGENT_SECRET": CANARY_SECRET}
        credentials.store(AGENT, "https://mine.example", "keyring-secret-for-mine")
        cfg = _cfg("https://mine.example", project=tmp_path, source="x")
        c = credentials.resolve(cfg, env=env)
        assert (c.secret, c.source) == ("keyring-secret-for-mine", "keyring")
        with pytest.raises(SpoolError):
            credentials.resolve(_cfg("https://evil.example", project=tmp_path), env=env)
    finally:
        keyring.set_keyring(old)


@pytest.mark.slow
def test_parent_directory_config_cannot_redirect_the_secret(spool_home, tmp_path):
    """Real hooks in a repo under a directory whose .spool/config.json names another host:
    that host gets nothing until the user approves it with update-credentials."""
    parent = tmp_path / "parent"
    repo = parent / "repo"
    repo.mkdir(parents=True)
    with Receiver() as evil:
        config.write_file(parent, {"agent_id": AGENT, "base_url": evil.url})
        env = dict(os.environ, INFINIUM_AGENT_SECRET=CANARY_SECRET,
                   SPOOL_SESSION_END_GRACE="0")
        for _n, payload in fixture_payloads():
            hook(with_cwd(payload, str(repo)), env=env, cwd=repo)
        r = spool("worker", "--once", env=env, cwd=repo)
        assert r.returncode == 0, r.stderr
        rows = query(spool_home, "SELECT state, held_reason FROM outbox")
        assert len(rows) == 2 and {s for s, _ in rows} == {"held"}
        reason = rows[0][1]
        assert f"base URL {evil.url} from {config.config_path(parent.resolve())}" in reason
        assert "is not approved for the secret in INFINIUM_AGENT_SECRET" in reason
        assert evil.requests == []
        # `spool errors` shows why, `spool status` counts them held
        errs = json.loads(spool("errors", "--json", env=env, cwd=repo).stdout)
        assert any("not approved" in (e.get("message") or "") for e in errs)
        assert query(spool_home, "SELECT count(*) FROM delivery_attempts "
                     "WHERE error_class = 'UnapprovedBaseURL'")[0][0] >= 1
        # Consent: the user approves that URL (from the repo; the config is found above it).
        r = spool("update-credentials", "--no-interactive", "--base-url", evil.url,
                  env=env, cwd=repo)
        assert r.returncode == 0 and "Released 2 held" in r.stdout, r.stdout + r.stderr
        r = spool("worker", "--once", env=env, cwd=repo)
        assert r.returncode == 0, r.stderr
        traces = {t for (t,) in query(spool_home, "SELECT trace_id FROM traces")}
        assert evil.accepted_keys() == traces
        assert {r.headers["x-agent-key"] for r in evil.requests} == {CANARY_SECRET}


def test_in_process_sink_holds_rows_for_an_unapproved_url(spool_home, tmp_path, monkeypatch):
    """The same through the dispatcher: the project's own config (not approved) names a
    second receiver; it gets zero requests; INFINIUM_BASE_URL set by the user is honoured."""
    from spool.deliver import deliver

    monkeypatch.setenv("INFINIUM_AGENT_SECRET", CANARY_SECRET)
    engine = db.open_db()
    try:
        with Receiver() as evil, Receiver(secret=CANARY_SECRET) as good:
            project = tmp_path / "proj"
            project.mkdir()
            config.write_file(project, {"agent_id": AGENT, "base_url": evil.url})
            add_trace(engine, "t1", project=project)
            r = deliver(engine, 1000.0)
            assert (r.claimed, r.held) == (1, 1)
            row = outbox(engine, "t1")
            assert row["state"] == "held" and row["attempts"] == 0
            assert "not approved" in row["held_reason"] and evil.requests == []
            monkeypatch.setenv("INFINIUM_BASE_URL", good.url)  # the user's own choice
            from spool.outbox import release_held

            assert release_held(engine, 1001.0) == 1
            assert deliver(engine, 1002.0).sent == 1
            assert good.accepted_keys() == {"t1"} and evil.requests == []
    finally:
        engine.dispose()


def test_canary_grep_finds_a_planted_secret(tmp_path):
    """The session-finish grep works (and sees nested and binary files)."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "clean.txt").write_bytes(b"nothing here")
    planted = tmp_path / "a" / "b" / "db.bin"
    planted.write_bytes(b"\x00\x01" + CANARY + b"\xff")
    try:
        assert canary_leaks(tmp_path) == [planted]
    finally:
        planted.unlink()  # never leave it for the session-wide grep
    assert canary_leaks(tmp_path) == []
