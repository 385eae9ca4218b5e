"""The recorded session replayed into a project, and what aggregation must always hold."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from spool import config, db
from spool.aggregate import EVENT_TRACES

from support.recorded import fixture_rollout


# Which traces hold each raw event (derived from the aggregator's watermarks).
EVENTS = f"({EVENT_TRACES}) AS raw_events"
LIFECYCLE = ("SessionStart", "SessionEnd")
SID = "01a20038-88d1-76a3-89e0-645a8f69229c"  # the recorded session's id


def project_with_rollout(tmp_path: Path, granularity: str) -> tuple[Path, Path]:
    """A project configured with ``granularity`` and a copy of the recorded rollout."""
    project = tmp_path / "project"
    project.mkdir()
    config.write_file(project, {"granularity": granularity})
    rollout = tmp_path / "rollout.jsonl"
    shutil.copy(fixture_rollout(), rollout)
    return project, rollout


def rewrite_payload(payload: bytes, project: Path, rollout: Path) -> bytes:
    """A recorded payload moved into ``project``, its transcript at ``rollout``."""
    obj = json.loads(payload)
    obj["transcript_path"] = str(rollout)
    obj["cwd"] = str(project)
    return json.dumps(obj).encode()


def read_traces(engine, kind=None) -> list[dict]:
    """Every stored trace (body parsed), oldest first; only ``kind`` if given."""
    with db.read(engine) as conn:
        rows = conn.exec_driver_sql(
            "SELECT trace_id, kind, turn_id, revision, body FROM traces ORDER BY created_at, turn_id"
        ).fetchall()
    out = [dict(trace_id=r[0], kind=r[1], turn_id=r[2], revision=r[3], body=json.loads(r[4]))
           for r in rows]
    return [t for t in out if kind is None or t["kind"] == kind]


def check_invariants(engine, granularity: str) -> None:
    """After a full pass: nothing lost, doubled or invented (every event in its current traces)."""
    with db.read(engine) as conn:
        q = conn.exec_driver_sql
        assert q("SELECT count(*) FROM errors").scalar() == 0, q("SELECT message FROM errors").all()
        assert q("SELECT count(*) FROM raw_events WHERE status != 'ok'").scalar() == 0
        assert q("SELECT count(*) FROM sessions WHERE state != 'final'").scalar() == 0
        assert q("SELECT count(*) FROM turns WHERE state != 'traced'").scalar() == 0
        events = q("SELECT id, session_id, event, turn_trace_id, session_trace_id, late"
                   f" FROM {EVENTS}").fetchall()
        nonempty = {r[1] for r in events if r[2] not in LIFECYCLE}
        current_turn = {r[0] for r in q("SELECT trace_id FROM turns")}
        current_sess = {r[0] for r in q(
            "SELECT t.trace_id FROM traces t JOIN sessions s ON s.session_id = t.session_id"
            " WHERE t.kind = 'session' AND t.revision = s.summary_revision")}
        for rid, sid, ev, tt, stt, late in events:
            if granularity in ("turn", "both") and ev not in LIFECYCLE:
                # In a turn trace, or (both) late and carried by the session summary.
                assert tt in current_turn or (granularity == "both" and late and stt), (rid, ev)
            if granularity in ("session", "both") and sid in nonempty:
                assert stt in current_sess, (rid, ev)
            if granularity == "turn":
                assert stt is None
            if granularity == "session":
                assert tt is None
        # Nobody counted twice: each current trace's event_count is exactly the
        # number of rows that point at it (a row holds one id per kind).
        for tid, kind, n in q("SELECT trace_id, kind, event_count FROM traces"):
            col = "turn_trace_id" if kind == "turn" else "session_trace_id"
            marked = q(f"SELECT count(*) FROM {EVENTS} WHERE {col} = ?", (tid,)).scalar()
            if tid in current_turn or tid in current_sess:
                assert marked == n, (kind, tid, marked, n)
            else:  # superseded by a later revision that covers its events
                assert marked == 0
        if granularity == "turn":
            assert q("SELECT count(*) FROM traces WHERE kind = 'session'").scalar() == 0
        if granularity == "session":
            assert q("SELECT count(*) FROM traces WHERE kind = 'turn'").scalar() == 0
        # Empty sessions emit nothing; every trace has its outbox row.
        assert {r[0] for r in q("SELECT DISTINCT session_id FROM traces")} <= nonempty
        assert q("SELECT count(*) FROM traces t WHERE NOT EXISTS"
                 " (SELECT 1 FROM outbox o WHERE o.trace_id = t.trace_id)").scalar() == 0
        # Supersession chains are consistent.
        for tid, sup, rev in q("SELECT trace_id, supersedes, revision FROM traces"):
            if sup is not None:
                assert q("SELECT revision FROM traces WHERE trace_id = ?", (sup,)).scalar() == rev - 1
