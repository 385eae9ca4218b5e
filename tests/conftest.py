"""Shared test fixtures: every test gets its own real spool home and SQLite file.

Fixtures only; helpers (functions, constants, servers) live in tests/support/ and test
modules import them from there (never from conftest or from another test module).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from support.canary import canary_leaks
from support.workers import Workers


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


@pytest.fixture
def receiver_class():
    """The class of the test's ``rx`` receiver (a test module overrides this fixture for OTLP)."""
    from spool.demo.receiver import Receiver

    return Receiver


@pytest.fixture
def receiver_options() -> dict:
    """Options of the test's ``rx`` receiver (a test module overrides this fixture)."""
    return {}


@pytest.fixture
def rx(receiver_class, receiver_options):
    """A real receiver on 127.0.0.1 (Infinium-compatible by default), stopped after the test."""
    with receiver_class(**receiver_options) as r:
        yield r


@pytest.fixture
def workers(spool_home):
    """Starts `spool worker` processes; kills every worker of the test's spool home after."""
    tracker = Workers(spool_home)
    try:
        yield tracker
    finally:
        tracker.kill_all()


@pytest.fixture
def stub_codex(tmp_path) -> Path:
    """A `codex` that answers --version only (enough for `spool init` and doctor)."""
    p = tmp_path / "bin" / "codex"
    p.parent.mkdir()
    p.write_text("#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'codex-cli 0.169.0'; exit 0; fi\n"
                 "echo 'stand-in codex: no app-server here' >&2; exit 2\n")
    p.chmod(0o755)
    return p


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
        print("\nSECRET LEAK: the canary secret was found in:", file=sys.stderr)
        for p in leaks:
            print(f"  {p}", file=sys.stderr)
        session.exitstatus = 1


@pytest.fixture(scope="session")
def phoenix(tmp_path_factory):
    """A real Arize Phoenix on a free loopback port for the whole run (tests/support/phoenix.py),
    installed on first use by scripts/install_phoenix.py; stopped at the end."""
    from support.phoenix import Phoenix

    server = Phoenix(tmp_path_factory.mktemp("phoenix")).start()
    try:
        yield server
    finally:
        server.stop()
