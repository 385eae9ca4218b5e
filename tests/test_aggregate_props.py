"""Property tests: random event sequences never make the aggregator lose, double or invent."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spool import db, ingest
from spool.aggregate import aggregate, sweep

from support.rows import insert_raw
from support.sessions import check_invariants


T0 = 1_800_000_000.0


@pytest.fixture(scope="module")
def template_db(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("template-home")
    db.open_db(home=home).dispose()
    return home / "spool.db"


def _turn_events(rng: st.DataObject, sid: str, tid: str, n_tools: int) -> list[dict]:
    evs = [{"hook_event_name": "UserPromptSubmit", "prompt": f"prompt {tid}"}]
    for k in range(n_tools + 1):
        evs.append({"hook_event_name": "PreModelRequest", "model": "gpt-fake"})
        evs.append({"hook_event_name": "PostModelRequest", "status": "completed",
                    "token_usage": {"input_tokens": 100 + k, "cached_input_tokens": 10,
                                    "output_tokens": 5, "reasoning_output_tokens": 1,
                                    "total_tokens": 105 + k}})
        if k < n_tools:
            cid = f"call-{tid}-{k}"
            evs.append({"hook_event_name": "PreToolUse", "tool_name": "Bash",
                        "tool_input": {"command": f"echo {k}"}, "tool_use_id": cid})
            evs.append({"hook_event_name": "PostToolUse", "tool_name": "Bash",
                        "tool_input": {"command": f"echo {k}"}, "tool_response": f"{k}\n",
                        "tool_use_id": cid})
    if rng.draw(st.booleans(), label="odd events"):
        evs.insert(1, rng.draw(st.sampled_from([
            {"hook_event_name": "PreCompact", "trigger": "auto"},
            {"hook_event_name": "SubagentStart", "agent_id": "a1", "agent_type": "worker"},
            {"hook_event_name": "Interrupt"},
            {"hook_event_name": "SomethingNew", "x": 1}]), label="odd"))
    evs.append({"hook_event_name": "Stop", "last_assistant_message": f"done {tid}"})
    # Perturbations the issue names.
    if rng.draw(st.integers(0, 5), label="drop prompt") == 0:
        evs = evs[1:]  # Stop without prompt
    if n_tools and rng.draw(st.integers(0, 4), label="drop pre") == 0:
        evs = [e for e in evs if e["hook_event_name"] != "PreToolUse"]  # Post without Pre
    for e in evs:
        e["turn_id"] = tid
    return evs


@st.composite
def scenarios(draw):
    data = draw(st.data())
    sessions = []
    for s in range(draw(st.integers(1, 3), label="sessions")):
        sid = f"sess-{s}"
        legacy = draw(st.integers(0, 4), label="legacy") == 0  # older Codex: no turn ids
        evs: list[dict] = [{"hook_event_name": "SessionStart", "source": "startup"}]
        n_turns = draw(st.integers(0, 3), label="turns")
        turn_ids = []
        for t in range(n_turns):
            tid = f"{sid}-t{t}"
            turn_ids.append(tid)
            evs.extend(_turn_events(data, sid, tid, draw(st.integers(0, 2), label="tools")))
            if t == 1 and draw(st.booleans(), label="resume"):
                evs.append({"hook_event_name": "SessionEnd", "reason": "other"})
                evs.append({"hook_event_name": "SessionStart", "source": "resume"})
        if turn_ids and draw(st.booleans(), label="late"):
            tid = draw(st.sampled_from(turn_ids), label="late turn")
            evs.append({"hook_event_name": "PostToolUse", "tool_name": "Bash", "turn_id": tid,
                        "tool_input": {"command": "late"}, "tool_response": "x",
                        "tool_use_id": f"late-{tid}"})
        if draw(st.booleans(), label="ends"):
            evs.append({"hook_event_name": "SessionEnd", "reason": "exit"})
        for e in evs:
            e["session_id"] = sid
            e["cwd"] = "/nonexistent/project"
            if legacy or (e.get("turn_id") and draw(st.integers(0, 15), label="drop tid") == 0):
                e.pop("turn_id", None)
        # Duplicates: re-send a few events (hooks can fire twice).
        for _ in range(draw(st.integers(0, 2), label="dups")):
            if evs:
                i = draw(st.integers(0, len(evs) - 1), label="dup index")
                evs.insert(i + 1, dict(evs[i]))
        sessions.append(evs)
    # Interleave the sessions (each session keeps its own order).
    queues = [list(s) for s in sessions]
    order = []
    while any(queues):
        live = [i for i, q in enumerate(queues) if q]
        i = draw(st.sampled_from(live), label="next session")
        order.append(queues[i].pop(0))
    # Aggregation passes at random points, at random clock offsets.
    cuts = sorted(set(draw(st.lists(st.integers(0, max(0, len(order))), max_size=4),
                           label="passes")))
    gaps = draw(st.lists(st.sampled_from([0.0, 5.0, 11.0, 30.0, 700.0]),
                         min_size=len(cuts), max_size=len(cuts)), label="gaps")
    granularity = draw(st.sampled_from(["turn", "session", "both"]), label="granularity")
    return order, list(zip(cuts, gaps)), granularity


def _snapshot(engine):
    with db.read(engine) as conn:
        return (conn.exec_driver_sql("SELECT trace_id, body FROM traces ORDER BY trace_id").fetchall(),
                conn.exec_driver_sql("SELECT trace_id, sink FROM outbox ORDER BY id").fetchall())


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(scenarios())
def test_random_sequences_lose_nothing(template_db, tmp_path, scenario):
    order, passes, granularity = scenario
    home = Path(tempfile.mkdtemp(dir=tmp_path))
    shutil.copy(template_db, home / "spool.db")
    engine = db.make_engine(home / "spool.db")
    env = {"SPOOL_GRANULARITY": granularity}
    try:
        t = T0
        done = 0
        for cut, gap in passes:
            t = insert_raw(engine, order[done:cut], t)
            done = max(done, cut)
            ingest.ingest_all(engine, home=home)
            t += gap
            res = aggregate(engine, t, env=env)
            assert res.errors == 0
            sweep(engine, t, env=env)
        t = insert_raw(engine, order[done:], t)
        ingest.ingest_all(engine, home=home)
        assert aggregate(engine, t + 11, env=env).errors == 0
        sweep(engine, t + 700, env=env)
        check_invariants(engine, granularity)
        before = _snapshot(engine)
        again = aggregate(engine, t + 2000, env=env)
        assert again.traces == 0 and sweep(engine, t + 3000, env=env) == 0
        assert _snapshot(engine) == before
    finally:
        engine.dispose()
