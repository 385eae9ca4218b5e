"""The sweep job with an injected clock: stale sessions summarised, live ones untouched."""
from __future__ import annotations

import json

import pytest


from spool import db
from spool.hook import insert
from spool.worker import Worker

from support.recorded import fixture_payloads

T0 = 1_800_000_000.0
TTL = 600.0


def _first_turn(sid: str) -> list[bytes]:
    """SessionStart .. Stop of the fixture's first turn (no SessionEnd), as ``sid``."""
    out = []
    for name, payload in fixture_payloads()[:9]:
        obj = json.loads(payload)
        obj["session_id"] = sid
        obj.pop("transcript_path", None)
        out.append(json.dumps(obj).encode())
    return out


def _q(engine, sql, *args):
    with db.read(engine) as conn:
        return [tuple(r) for r in conn.exec_driver_sql(sql, args)]


@pytest.mark.parametrize("granularity", ["session", "both"])
def test_sweep_summarises_only_sessions_quiet_for_the_ttl(spool_home, granularity):
    engine = db.open_db(spool_home)
    env = {"SPOOL_GRANULARITY": granularity, "CONNECTOR_SESSION_TTL": str(TTL)}
    for sid, start in (("stale", T0), ("live", T0 + 500)):
        for i, p in enumerate(_first_turn(sid)):
            insert(str(spool_home), start + i, "hook", "/tmp", p, len(p), 0)
    worker = Worker(engine, spool_home, env=env)

    def sessions():
        return dict(_q(engine, "SELECT session_id, state FROM sessions"))

    def summaries():
        return {r[0] for r in _q(engine, "SELECT session_id FROM traces WHERE kind = 'session'")}

    # Before the TTL has passed for either: nothing is summarised.
    assert all(worker.run_once(T0 + 8 + TTL - 1).values())
    assert summaries() == set() and set(sessions().values()) == {"open"}
    # "stale" has been quiet for the TTL, "live" for only 100 s.
    assert all(worker.run_once(T0 + 8 + TTL + 1).values())
    assert summaries() == {"stale"}
    assert sessions() == {"stale": "final", "live": "open"}
    (events,), = _q(engine, "SELECT event_count FROM traces WHERE kind = 'session'")
    assert events == 9
    turn_traces = {r[0] for r in _q(engine, "SELECT session_id FROM traces WHERE kind = 'turn'")}
    assert turn_traces == ({"stale", "live"} if granularity == "both" else set())
    # The stale session's summary was delivered in the same pass (file sink).
    assert _q(engine, "SELECT o.state FROM outbox o JOIN traces t USING (trace_id)"
                      " WHERE t.kind = 'session'") == [("sent",)]
    # Later, "live" goes quiet too.
    assert all(worker.run_once(T0 + 500 + 8 + TTL + 1).values())
    assert summaries() == {"stale", "live"}
    worker.close()
    engine.dispose()
