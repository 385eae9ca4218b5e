"""Delivery test helpers: traces with outbox rows, a sink project's config, an in-memory keyring."""
from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import text

from spool import config, credentials, db

from support.canary import CANARY_SECRET

AGENT = "0b6f1c2e-9a49-4a51-9d1f-5f3a2b6c7d8e"
SECRET = CANARY_SECRET  # grepped for after the whole suite (conftest.pytest_sessionfinish)


def make_project(root: Path, base_url: str, *, agent_id: str = AGENT, **extra) -> Path:
    project = root / "proj"
    project.mkdir(parents=True, exist_ok=True)
    config.write_file(project, {"agent_id": agent_id, "base_url": base_url, **extra})
    # what `spool init --base-url` records: the env secret may go to this URL
    credentials.approve_base_url(None, project, base_url)
    return project


def otlp_project(root: Path, endpoint: str, monkeypatch, timeout_ms: int) -> Path:
    """A project delivering to ``endpoint`` over OTLP only (granularity both), with the
    OTLP environment set to that endpoint and timeout and nothing else."""
    project = root / "proj"
    project.mkdir()
    config.write_file(project, {"granularity": "both", "sinks": ["otlp"]})
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", str(timeout_ms))
    for v in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_HEADERS",
              "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_COMPRESSION"):
        monkeypatch.delenv(v, raising=False)
    return project


def body_for(trace_id: str, **extra) -> dict:
    return {"name": f"trace {trace_id}", "description": "a test trace", "kind": "turn",
            "input_summary": "echo hi", "output_summary": "hi", "duration_ms": 1234,
            "current_datetime": "2026-11-21T22:21:02Z", **extra}


def add_trace(engine, trace_id: str, *, sink: str = "infinium", project: Path | str | None = None,
              body: dict | None = None, now: float = 1000.0) -> None:
    with db.write(engine) as conn:
        conn.execute(text(
            "INSERT INTO traces (trace_id, kind, project, name, created_at, body) "
            "VALUES (:t, 'turn', :p, :n, :now, :b)"),
            {"t": trace_id, "p": str(project) if project else None, "n": f"trace {trace_id}",
             "now": now, "b": json.dumps(body if body is not None else body_for(trace_id))})
        conn.execute(text(
            "INSERT INTO outbox (trace_id, sink, created_at, next_attempt_at) "
            "VALUES (:t, :s, :now, :now)"), {"t": trace_id, "s": sink, "now": now})


def add_many(engine, ids, *, sink="infinium", project=None, now=1000.0) -> None:
    with db.write(engine) as conn:
        conn.execute(text(
            "INSERT INTO traces (trace_id, kind, project, name, created_at, body) "
            "VALUES (:t, 'turn', :p, :n, :now, :b)"),
            [{"t": t, "p": str(project) if project else None, "n": f"trace {t}", "now": now,
              "b": json.dumps(body_for(t))} for t in ids])
        conn.execute(text(
            "INSERT INTO outbox (trace_id, sink, created_at, next_attempt_at) "
            "VALUES (:t, :s, :now, :now)"), [{"t": t, "s": sink, "now": now} for t in ids])


def outbox(engine, trace_id: str, sink: str = "infinium") -> dict:
    with db.read(engine) as conn:
        return dict(conn.execute(text("SELECT * FROM outbox WHERE trace_id=:t AND sink=:s"),
                                 {"t": trace_id, "s": sink}).one()._mapping)


def attempts(engine, trace_id: str) -> list[dict]:
    with db.read(engine) as conn:
        return [dict(r._mapping) for r in conn.execute(text(
            "SELECT * FROM delivery_attempts WHERE trace_id=:t ORDER BY id"), {"t": trace_id})]


def states(engine) -> dict[str, int]:
    with db.read(engine) as conn:
        return dict(conn.execute(text("SELECT state, COUNT(*) FROM outbox GROUP BY state")).all())


class MemoryKeyring:
    """An in-memory keyring backend (keyring.set_keyring) for tests."""

    def __new__(cls):
        from keyring.backend import KeyringBackend

        class _Mem(KeyringBackend):
            priority = 1

            def __init__(self):
                super().__init__()
                self.store: dict[tuple[str, str], str] = {}

            def get_password(self, service, username):
                return self.store.get((service, username))

            def set_password(self, service, username, password):
                self.store[(service, username)] = password

            def delete_password(self, service, username):
                from keyring.errors import PasswordDeleteError

                if (service, username) not in self.store:
                    raise PasswordDeleteError("not found")
                del self.store[(service, username)]

        return _Mem()
