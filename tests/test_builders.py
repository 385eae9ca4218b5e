"""Big passes build sessions in builder processes: the same traces as one process."""
from __future__ import annotations

import json
import os

import pytest

from conftest import codex_like_session, fixture_payloads, fixture_rollout
from spool import aggregate, builders, db, hook, ingest

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


def _run(tmp_path, name, processes, monkeypatch, now_offset=60.0):
    home = tmp_path / name
    home.mkdir()
    monkeypatch.setenv("SPOOL_HOME", str(home))
    engine = db.open_db(home=home)
    last = _fill(home, tmp_path / "project")
    ingest.ingest_all(engine, home=home)
    env = {"SPOOL_GRANULARITY": "both", "SPOOL_SINKS": "file",
           "SPOOL_AGGREGATE_PROCESSES": str(processes)}
    res = aggregate.aggregate(engine, last + now_offset, env=env)
    state = _state(engine)
    engine.dispose()
    return res, state, state.pop("errors")


class RemoteOnly(builders.BuilderPool):
    """Every session built by a builder process (on a spool this small the pass
    would otherwise build most of them itself while the builders start)."""

    def drain(self, local=None):
        return super().drain(None)


@pytest.fixture
def small_threshold(monkeypatch):
    monkeypatch.setattr(aggregate, "PARALLEL_MIN_EVENTS", 1)
    monkeypatch.setattr(builders, "CHUNK_EVENTS", 25)  # many chunks in flight
    monkeypatch.setattr(builders, "BuilderPool", RemoteOnly)


@pytest.mark.parametrize("processes,index_batch", [(1, 2000), (2, 2000), (1, 37)])
def test_builder_processes_build_exactly_what_one_process_builds(
        tmp_path, monkeypatch, small_threshold, processes, index_batch):
    # index_batch 37: sessions are handed to the builders while the index still
    # runs, the resumed one must not be (its resume is in a later batch).
    monkeypatch.setattr(aggregate, "INDEX_BATCH", index_batch)
    monkeypatch.setattr(aggregate, "INDEX_BATCH_MAX", index_batch)
    monkeypatch.setattr(aggregate, "INDEX_BATCH_MIN", min(index_batch, 100))
    serial, s_state, s_err = _run(tmp_path, "serial", 0, monkeypatch)
    par, p_state, p_err = _run(tmp_path, "parallel", processes, monkeypatch)
    assert serial.builder_processes == 0 and par.builder_processes == processes
    assert serial.built_by_builders == 0
    assert par.built_by_builders == 32 + 2  # every session (the open one: its closed turn)
    assert (par.turn_traces, par.session_traces, par.sessions_finalised) == (
        serial.turn_traces, serial.session_traces, serial.sessions_finalised)
    assert serial.session_traces == 32 and serial.turn_traces > 60  # the spool was traced
    assert sorted(par.trace_ids) == sorted(serial.trace_ids)
    assert p_state == s_state
    assert p_err == s_err == []
    # The fixture session's exit code came through the rollout read in a builder.
    bodies = [json.loads(t[-1]) for t in p_state["traces"] if t[1] == "turn"]
    assert any(s.get("exit_code") == 0 and s.get("command")
               for b in bodies for s in b["steps"])


def test_the_pass_builds_beside_its_builders_and_the_result_is_the_same(
        tmp_path, monkeypatch, small_threshold):
    monkeypatch.setattr(builders, "BuilderPool", builders.BuilderPool)  # local builds on
    serial, s_state, _ = _run(tmp_path, "serial", 0, monkeypatch)
    par, p_state, p_err = _run(tmp_path, "shared", 1, monkeypatch)
    assert par.builder_processes == 1
    assert p_state == s_state and p_err == []
    assert sorted(par.trace_ids) == sorted(serial.trace_ids)


def test_a_builder_that_dies_mid_pass_leaves_the_rest_to_the_pass(
        tmp_path, monkeypatch, small_threshold):
    serial, s_state, _ = _run(tmp_path, "serial", 0, monkeypatch)

    class DyingPool(RemoteOnly):
        def _collect(self, i):
            yield from super()._collect(i)
            for proc, _t, _r in self._procs:  # after the first chunk: all builders die
                proc.kill()
                proc.wait()

    monkeypatch.setattr(builders, "BuilderPool", DyingPool)
    par, p_state, p_err = _run(tmp_path, "dying", 1, monkeypatch)
    assert p_state == s_state
    assert sorted(par.trace_ids) == sorted(serial.trace_ids)
    assert len(p_err) == 1 and "builder processes" in p_err[0] and "building in" in p_err[0]
    assert 0 < par.built_by_builders < 34  # the first chunk came from a builder, the rest not


def test_builders_exit_when_the_pool_closes_and_inherit_only_their_pipes(tmp_path, monkeypatch):
    from conftest import CANARY_SECRET

    monkeypatch.setenv("INFINIUM_AGENT_SECRET", CANARY_SECRET)
    path = tmp_path / "x.db"
    lock = os.open(tmp_path / "lock", os.O_CREAT | os.O_RDWR, 0o600)
    os.set_inheritable(lock, True)  # like the worker's lock, which it inherited itself
    try:
        with builders.BuilderPool(str(path), 2) as pool:
            procs = [p for p, _t, _r in pool._procs]
            # One round trip each, so both are settled in their loop.  A database
            # without spool's tables: the failure comes back as text, not a crash.
            work = [aggregate._Work("s1", None, "ended", 5), aggregate._Work("s2", None, None, 5)]
            monkeypatch.setattr(builders, "CHUNK_EVENTS", 1)  # a chunk for each
            pool.submit(work, [5, 5])
            got = list(pool.drain())
            assert sorted(w.session_id for w, _r in got) == ["s1", "s2"]
            assert all(isinstance(r, str) and "no such table" in r for _w, r in got)
            assert pool.built == 2
            with open(f"/proc/{procs[0].pid}/environ", "rb") as f:
                environ = f.read()
            assert b"INFINIUM_AGENT_SECRET" not in environ and CANARY_SECRET.encode() not in environ
            fds = sorted(int(f) for f in os.listdir(f"/proc/{procs[0].pid}/fd"))
            targets = [os.readlink(f"/proc/{procs[0].pid}/fd/{f}") for f in fds]
        assert [p.returncode for p in procs] == [0, 0]
        assert not any(str(tmp_path / "lock") in t for t in targets)
        others = dict(zip(fds, targets))
        for std in (0, 1, 2):  # stdin/stdout /dev/null, stderr the caller's
            others.pop(std, None)
        pipes = [t for t in others.values() if t.startswith("pipe:")]
        files = [t for t in others.values() if not t.startswith("pipe:")]
        assert len(pipes) == 2  # its task and result pipes
        assert all(t.startswith(str(path)) for t in files), files  # the database, nothing else
    finally:
        os.close(lock)
