"""Exporting one session: its traces read from SQLite, its rollout read from disk.

The I/O edge of ``spool export`` and the ``atif`` sink: resolve a session id
(or a unique prefix), read the latest revision of each of its traces (turns
and session summary), read the rollout file Codex wrote (conversation and
final token totals) and each subagent's (its conversation), and hand them to the pure renderer (spool.atif), or
return spool's own trace model (``--format json``).

The SQL here only reads ``sessions`` and ``traces``.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from sqlalchemy import Connection, text

from . import atif, config, queries, rollout, transcript
from .errors import SpoolError
from .redact import redact
from .trace import Limits

JSON_SCHEMA = "spool.session-export/1"


def resolve_session(conn: Connection, given: str) -> str:
    """The one session id equal to, or starting with, ``given`` (SpoolError otherwise)."""
    given = given.strip()
    if not given:
        raise SpoolError("the session id is empty.", "Run `spool sessions` to see session ids.")
    found = queries.resolve_session_id(conn, given)
    if isinstance(found, str):
        return found
    if not found:
        raise SpoolError(f"no session with id {given!r}.", "Run `spool sessions` to see session ids.")
    raise SpoolError(f"{given!r} matches several sessions ({', '.join(found)}).",
                     "Give more characters of the id.")


def session_row(conn: Connection, session_id: str) -> dict | None:
    row = conn.execute(text(
        "SELECT session_id, project, cwd, transcript_path, state FROM sessions"
        " WHERE session_id = :s"), {"s": session_id}).first()
    return dict(row._mapping) if row is not None else None


def latest_traces(conn: Connection, session_id: str) -> list[dict]:
    """The session's traces, the latest revision of each turn and of the summary,
    oldest first; ``body`` parsed, with ``trace_id`` in it."""
    latest: dict[tuple[str, str | None], dict] = {}
    for r in conn.execute(text(
            "SELECT trace_id, kind, turn_id, revision, created_at, body FROM traces"
            " WHERE session_id = :s AND kind IN ('turn', 'session')"
            " ORDER BY created_at, revision"), {"s": session_id}):
        key = (r.kind, r.turn_id if r.kind == "turn" else None)
        seen = latest.get(key)
        if seen is not None and (seen["revision"], seen["created_at"]) > (r.revision, r.created_at):
            continue
        try:
            body = json.loads(r.body)
        except ValueError:
            continue
        if isinstance(body, dict):
            body.setdefault("trace_id", r.trace_id)
            latest[key] = {"revision": r.revision, "created_at": r.created_at, "body": body}
    return [v["body"] for v in sorted(latest.values(), key=lambda v: v["created_at"])]


def _still_open(row: Mapping[str, Any]) -> bool:
    """Not finalised yet: Codex may still add turns (open, or ended within the grace)."""
    return row.get("state") != "final"


def _child_rollouts(bodies) -> list[str]:
    """The rollout files of the session's subagents (their turn traces' ``agent`` link)."""
    out: list[str] = []
    for b in bodies:
        agent = b.get("agent")
        path = agent.get("rollout_path") if isinstance(agent, Mapping) else None
        if isinstance(path, str) and path and path not in out:
            out.append(path)
    return out


def gather(engine, given: str, *, full: bool = False,
           env: Mapping[str, str] | None = None) -> atif.Session:
    """What the renderer needs for the session ``given`` names (id or unique prefix)."""
    from . import db

    with db.read(engine) as conn:
        sid = resolve_session(conn, given)
        row = session_row(conn, sid) or {}
        bodies = latest_traces(conn, sid)
    if not bodies:
        raise SpoolError(f"session {sid} has no traces yet (no turn has ended).",
                         "Run `spool worker --once` after the turn ends, then export again.")
    cfg = config.load(row.get("project") or row.get("cwd"), env=env)
    path = row.get("transcript_path")
    conv = transcript.read(path)
    total = rollout.read_incremental(path).facts().total_usage if conv is not None else None
    for child_path in _child_rollouts(bodies):  # subagents' conversations: their own files
        child = transcript.read(child_path)
        if child is not None:
            conv = child if conv is None else conv.merge(child)
    return atif.Session(session_id=sid, bodies=bodies, transcript=conv, rollout_total=total,
                        still_open=_still_open(row), full=full,
                        limits=Limits(cfg.max_input_preview, cfg.max_output_preview))


def atif_document(engine, given: str, *, full: bool = False,
                  env: Mapping[str, str] | None = None) -> dict:
    return atif.render(gather(engine, given, full=full, env=env))


def json_document(engine, given: str) -> dict:
    """spool's own trace model of the session (redacted), for scripting."""
    from . import db

    with db.read(engine) as conn:
        sid = resolve_session(conn, given)
        row = session_row(conn, sid) or {}
        bodies = latest_traces(conn, sid)
    return redact({"schema": JSON_SCHEMA, "session_id": sid, "state": row.get("state"),
                   "traces": bodies})


def html_document(engine, given: str) -> str:
    """The `spool ui` session view as one self-contained HTML file (redacted as it renders)."""
    from . import db
    from .ui import pages

    with db.read(engine) as conn:
        sid = resolve_session(conn, given)
        info = queries.session_info(conn, sid) or {"session_id": sid}
        bodies = latest_traces(conn, sid)
    return pages.export_document(info, bodies)


def dumps(doc: Mapping) -> bytes:
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()
