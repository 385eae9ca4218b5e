"""A backlog traces the same whatever the index batches and write groups (one serial pass)."""
from __future__ import annotations

import json

import pytest

from spool import aggregate, db, hook, ingest
from spool.aggregate import index, write

from support.recorded import codex_like_session, fixture_payloads, fixture_rollout

T0 = 1_800_000_000.0


def _fill(home, project) -> float:
    """30 interleaved Codex-like sessions, the recorded fixture session (with its
    rollout), one session still open with a closed turn, one without SessionEnd,
    and one that ends early and resumes at the very end."""
    sessions = [codex_like_session(f"s{i:02d}", turns=1 + i % 4, cwd=str(project))
                for i in range(30)]
    sessions.append([json.loads(p) for _n, p in fixture_payloads()])
    for e in sessions[-1]:
        e["transcript_path"] = str(fixture_rollout())
        e["cwd"] = str(project)
    sessions.append(codex_like_session("open", turns=2, cwd=str(project))[:-2])  # no last Stop
    sessions.append(codex_like_session("unended", turns=1, cwd=str(project))[:-1])
    resumed = codex_like_session("resumed", turns=2, cwd=str(project))
    again = codex_like_session("resumed", turns=1, cwd=str(project))
    again[0]["source"] = "resume"
    again[1]["turn_id"] = again[-2]["turn_id"] = "resumed-again"
    for e in again[1:-1]:
        e["turn_id"] = "resumed-again"
    sessions.insert(0, resumed)
    order = []
    while any(sessions):
        for s in sessions:
            if s:
                order.append(s.pop(0))
    order.extend(again)
    t = T0
    for e in order:
        t += 0.25
        raw = json.dumps(e).encode()
        hook.insert(str(home), t, "hook", str(project), raw, len(raw), 0)
    return t


def _state(engine) -> dict:
    with db.read(engine) as conn:
        q = conn.exec_driver_sql
        return {
            "traces": sorted(q("SELECT trace_id, kind, session_id, turn_id, revision, supersedes,"
                               " name, started_at, ended_at, event_count, body FROM traces")),
            "outbox": sorted(q("SELECT trace_id, sink, state FROM outbox")),
            "turns": sorted(q("SELECT session_id, turn_id, seq, state, trace_id,"
                              " traced_through_id FROM turns")),
            "sessions": sorted(q("SELECT session_id, state, summary_revision,"
                                 " summarised_through_id, rollout_offset, codex_version"
                                 " FROM sessions")),
            "errors": [r[0] for r in q("SELECT message FROM errors")],
        }


def _run(tmp_path, name, monkeypatch, now_offset=60.0):
    home = tmp_path / name
    home.mkdir()
    monkeypatch.setenv("SPOOL_HOME", str(home))
    engine = db.open_db(home=home)
    last = _fill(home, tmp_path / "project")
    ingest.ingest_all(engine, home=home)
    env = {"SPOOL_GRANULARITY": "both", "SPOOL_SINKS": "file"}
    res = aggregate.aggregate(engine, last + now_offset, env=env)
    state = _state(engine)
    engine.dispose()
    return res, state, state.pop("errors")


def _small_batches(monkeypatch, index_batch: int, group_events: int) -> None:
    monkeypatch.setattr(index, "INDEX_BATCH", index_batch)
    monkeypatch.setattr(index, "INDEX_BATCH_MAX", index_batch)
    monkeypatch.setattr(index, "INDEX_BATCH_MIN", min(index_batch, 100))
    monkeypatch.setattr(write, "WRITE_GROUP_EVENTS", group_events)
    monkeypatch.setattr(write, "WRITE_GROUP_MAX", group_events)


@pytest.mark.slow  # 25-31 s per case under load
@pytest.mark.parametrize("index_batch,group_events", [(37, 1), (37, 5000), (1, 60)])
def test_small_batches_and_groups_trace_exactly_what_one_big_batch_traces(
        tmp_path, monkeypatch, index_batch, group_events):
    # index_batch 37: the resumed session's resume falls in a later batch than
    # its first SessionEnd; group 1: every session written alone.
    big, b_state, b_err = _run(tmp_path, "big", monkeypatch)
    _small_batches(monkeypatch, index_batch, group_events)
    small, s_state, s_err = _run(tmp_path, "small", monkeypatch)
    assert (small.turn_traces, small.session_traces, small.sessions_finalised) == (
        big.turn_traces, big.session_traces, big.sessions_finalised)
    assert big.session_traces == 32 and big.turn_traces > 60  # the spool was traced
    assert sorted(small.trace_ids) == sorted(big.trace_ids)
    assert s_state == b_state
    assert s_err == b_err == []
    # The fixture session's exit code came through its rollout.
    bodies = [json.loads(t[-1]) for t in s_state["traces"] if t[1] == "turn"]
    assert any(s.get("exit_code") == 0 and s.get("command")
               for b in bodies for s in b["steps"])
