"""`spool import`: rollout files -> the same traces the hooks make, exactly once."""
from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spool import aggregate, backfill, config, db, ingest
from spool.cli import get_app
from spool.trace import trace_id

from support.hookproc import run_hook
from support.recorded import fixture_payloads, fixture_rollout


SID = "01a20038-88d1-76a3-89e0-645a8f69229c"
TURN1 = "01a20038-88e8-7592-844d-9a4c2114b9d0"
TURN2 = "01a20038-a3f6-7272-b707-136584472438"
OLD = time.time() - 86_400  # a rollout last written a day ago: settled
# What must be equal between a hooked and an imported turn trace (not arrival times, notes).
STEP_KEYS = ("number", "action", "description", "turn_id", "input_preview", "output_preview",
             "tool_name", "tool_use_id", "command", "exit_code", "exec_duration_ms", "status",
             "model", "usage", "error")
BODY_KEYS = ("trace_id", "kind", "name", "description", "session_id", "turn_id", "revision",
             "input_summary", "output_summary", "usage", "environment", "project",
             "event_count", "incomplete", "usage_source", "errors")


def _project_and_rollout(tmp_path: Path, granularity: str = "both") -> tuple[Path, Path]:
    """A project (config granularity) and the fixture rollout rewritten to live in it."""
    project = tmp_path / "project"
    project.mkdir()
    config.write_file(project, {"granularity": granularity})
    rollout = tmp_path / "codex" / "sessions" / "2026" / "11" / "21" / fixture_rollout().name
    rollout.parent.mkdir(parents=True)
    rollout.write_text(fixture_rollout().read_text().replace("/home/dev/project", str(project)))
    os.utime(rollout, (OLD, OLD))
    return project, rollout


def _hook_payload(raw: bytes, project: Path, rollout: Path) -> bytes:
    obj = json.loads(raw)
    obj["transcript_path"] = str(rollout.resolve())
    obj["cwd"] = str(project)
    return json.dumps(obj).encode()


def _replay_hooks(project: Path, rollout: Path, only_turns=None) -> None:
    for name, raw in fixture_payloads():
        obj = json.loads(raw)
        if only_turns is not None and obj.get("turn_id") not in only_turns:
            continue
        r = run_hook(_hook_payload(raw, project, rollout), cwd=project)
        assert r.returncode == 0 and r.stdout == b"", (name, r)


def _traces(engine, kind=None) -> list[dict]:
    with db.read(engine) as conn:
        rows = conn.exec_driver_sql("SELECT kind, body FROM traces ORDER BY trace_id").fetchall()
    return [json.loads(b) for k, b in rows if kind is None or k == kind]


def _counts(engine) -> tuple:
    with db.read(engine) as conn:
        return tuple(conn.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar()
                     for t in ("raw_events", "traces", "outbox"))


def _comparable(body: dict) -> dict:
    out = {k: body[k] for k in BODY_KEYS}
    out["steps"] = [{k: s.get(k) for k in STEP_KEYS} for s in body["steps"]]
    return out


def _pipeline(engine, now: float) -> None:
    ingest.ingest_all(engine)
    aggregate.aggregate(engine, now)


def test_imported_session_gives_the_same_turn_traces_as_the_hooks(tmp_path):
    project, rollout = _project_and_rollout(tmp_path)
    now = time.time() + 60
    hooked = db.open_db()
    _replay_hooks(project, rollout)
    _pipeline(hooked, now)
    imported = db.open_db(tmp_path / "other-home")
    res = backfill.run(imported, [rollout.parent.parent.parent.parent])
    assert (res.files, len(res.sessions), res.turns, res.events) == (1, 1, 2, 18)
    assert res.tokens["total_tokens"] == 11072  # the rollout's final total_token_usage
    _pipeline(imported, now)

    want = {b["turn_id"]: b for b in _traces(hooked, "turn")}
    got = {b["turn_id"]: b for b in _traces(imported, "turn")}
    assert set(got) == {TURN1, TURN2} == set(want)
    for tid in (TURN1, TURN2):
        assert got[tid]["trace_id"] == trace_id(SID, tid, "turn")
        assert _comparable(got[tid]) == _comparable(want[tid])
        tool = [s for s in got[tid]["steps"] if s["action"] == "tool_use"][0]
        assert tool["exit_code"] == 0 and tool["exec_duration_ms"] is not None
        assert "imported from the Codex rollout file (spool import)" in got[tid]["notes"]
        assert not any("spool import" in n for n in want[tid]["notes"])
    # Imported steps carry the rollout's own times.
    first = got[TURN1]["steps"][0]
    assert first["action"] == "user_prompt" and abs(first["started_at"] - 1795300035.165) < 1e-3
    summary = _traces(imported, "session")
    assert len(summary) == 1 and summary[0]["trace_id"] == trace_id(SID, None, "session", 1)
    assert summary[0]["usage"]["total"] == 11072 and summary[0]["usage"]["requests"] == 4


def test_import_twice_adds_no_row(tmp_path, engine):
    _project, rollout = _project_and_rollout(tmp_path)
    first = backfill.run(engine, [rollout])
    _pipeline(engine, time.time() + 60)
    before = _counts(engine)
    assert before == (18, 3, 3)  # 16 turn events + start + end; 2 turns + summary; 1 sink
    second = backfill.run(engine, [rollout])
    _pipeline(engine, time.time() + 120)
    assert (first.turns, second.turns, second.already, second.events) == (2, 0, 2, 0)
    assert _counts(engine) == before


def test_hooks_then_import_makes_no_duplicate(tmp_path, engine):
    project, rollout = _project_and_rollout(tmp_path)
    _replay_hooks(project, rollout)
    _pipeline(engine, time.time() + 60)
    before = _counts(engine)
    assert before == (20, 3, 3)
    res = backfill.run(engine, [rollout])
    _pipeline(engine, time.time() + 120)
    assert (res.turns, res.events, res.hooked) == (0, 0, 2)
    assert _counts(engine) == before


def test_partly_hooked_session_gets_only_its_missing_turn(tmp_path, engine):
    project, rollout = _project_and_rollout(tmp_path, granularity="turn")
    _replay_hooks(project, rollout, only_turns={TURN1})  # the hooks saw only the first turn
    ingest.ingest_all(engine)
    res = backfill.run(engine, [rollout])
    assert (res.turns, res.hooked, res.events) == (1, 1, 8)  # no second SessionStart/End
    _pipeline(engine, time.time() + 60)
    bodies = {b["turn_id"]: b for b in _traces(engine, "turn")}
    assert set(bodies) == {TURN1, TURN2}
    assert all(b["revision"] == 0 for b in bodies.values())
    assert not any("spool import" in n for n in bodies[TURN1]["notes"])
    assert "imported from the Codex rollout file (spool import)" in bodies[TURN2]["notes"]
    assert bodies[TURN2]["usage"]["total"] == 7736
    with db.read(engine) as conn:
        srcs = dict(conn.exec_driver_sql(
            "SELECT source, count(*) FROM raw_events GROUP BY source").fetchall())
    assert srcs == {"hook": 8, "import": 8}


def test_a_rollout_still_being_written_keeps_its_open_turn_and_session(tmp_path, engine):
    _project, rollout = _project_and_rollout(tmp_path)
    lines = rollout.read_bytes().splitlines(keepends=True)
    cut = next(i for i, ln in enumerate(lines) if b'"ordinal":30,' in ln)
    # Turn 2 half written, its last line cut short (Codex still writing it).
    rollout.write_bytes(b"".join(lines[:cut]) + lines[cut][:50])
    res = backfill.run(engine, [rollout])
    assert (res.turns, res.waiting) == (1, 1)
    with db.read(engine) as conn:
        events = [r[0] for r in conn.exec_driver_sql(
            "SELECT dedup_key FROM raw_events ORDER BY id")]
    assert not any(k.startswith(f"import:{SID}::end") for k in events)
    assert not any(TURN2 in k for k in events)
    _pipeline(engine, time.time() + 60)
    with db.read(engine) as conn:
        assert conn.exec_driver_sql("SELECT state FROM sessions").scalar() == "open"
    # Codex finishes the file: the next import brings the rest, and ends the session.
    rollout.write_bytes(b"".join(lines))
    os.utime(rollout, (OLD, OLD))
    res = backfill.run(engine, [rollout])
    assert (res.turns, res.already, res.waiting) == (1, 1, 0)
    _pipeline(engine, time.time() + 120)
    assert {b["turn_id"] for b in _traces(engine, "turn")} == {TURN1, TURN2}
    assert len(_traces(engine, "session")) == 1


def test_a_recent_rollout_is_not_ended_until_it_settles(tmp_path, engine):
    _project, rollout = _project_and_rollout(tmp_path)
    os.utime(rollout)  # just written: may still grow
    res = backfill.run(engine, [rollout], settle=600)
    assert res.turns == 2
    with db.read(engine) as conn:
        assert conn.exec_driver_sql(
            "SELECT count(*) FROM raw_events WHERE dedup_key LIKE '%::end:%'").scalar() == 0
    res = backfill.run(engine, [rollout], now=time.time() + 601, settle=600)
    assert (res.turns, res.events) == (0, 1)  # now the SessionEnd


def test_bad_input_is_skipped_reported_and_logged(tmp_path, engine):
    _project, rollout = _project_and_rollout(tmp_path)
    d = rollout.parent
    (d / "rollout-notes.jsonl").write_text('{"hello": "world"}\n')
    (d / "rollout-binary.jsonl").write_bytes(b"\x00\xff\xfe garbage\n")
    unreadable = d / "rollout-locked.jsonl"
    unreadable.write_text("{}\n")
    unreadable.chmod(0)
    (d / "rollout-bad.jsonl.gz").write_bytes(b"not gzip at all")
    # A real rollout with an unknown line type and a broken line in the middle.
    odd = d / "rollout-odd.jsonl"
    lines = rollout.read_text().splitlines(keepends=True)
    lines.insert(5, '{"timestamp":"2026-11-21T22:27:14.900Z","type":"brand_new_kind","payload":{}}\n')
    lines.insert(6, '{"timestamp":"2026-11-21T22:27:14.900Z","type":"event_msg","payload":{"type":"task_complete",\n')
    odd.write_text("".join(lines).replace(SID, "01a20038-0000-7000-8000-000000000000"))
    os.utime(odd, (OLD, OLD))
    try:
        res = backfill.run(engine, [d])
    finally:
        unreadable.chmod(0o600)
    reasons = {Path(p).name: r for p, r in res.skipped_files}
    assert set(reasons) >= {"rollout-notes.jsonl", "rollout-binary.jsonl",
                            "rollout-bad.jsonl.gz"}
    assert "not a Codex rollout" in reasons["rollout-notes.jsonl"]
    if os.geteuid() != 0:
        assert "unreadable" in reasons["rollout-locked.jsonl"]
    assert res.turns == 4 and res.unknown_lines == {"brand_new_kind": 1} and res.bad_lines == 1
    with db.read(engine) as conn:
        msgs = [r[0] for r in conn.exec_driver_sql(
            "SELECT message FROM errors WHERE source = 'import'")]
    assert any("rollout-notes.jsonl" in m and "not a Codex rollout" in m for m in msgs)
    assert any("rollout-odd.jsonl" in m and "brand_new_kind x1" in m for m in msgs)


def test_gzip_rollout_is_read(tmp_path, engine):
    _project, rollout = _project_and_rollout(tmp_path)
    gz = tmp_path / (rollout.name + ".gz")
    gz.write_bytes(gzip.compress(rollout.read_bytes()))
    os.utime(gz, (OLD, OLD))
    res = backfill.run(engine, [gz])
    assert (res.turns, res.tokens["total_tokens"]) == (2, 11072)


def test_cli_dry_run_json_and_since(tmp_path, engine, monkeypatch):
    _project, rollout = _project_and_rollout(tmp_path)
    monkeypatch.setenv("CODEX_HOME", str(tmp_path / "codex"))
    runner = CliRunner()
    app = get_app()
    r = runner.invoke(app, ["import", "--dry-run", "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert (s["dry_run"], s["files"], s["sessions"], s["turns"]) == (True, 1, 1, 2)
    assert s["tokens"]["total_tokens"] == 11072
    assert _counts(engine) == (0, 0, 0)
    r = runner.invoke(app, ["import", "--since", "2099-01-01", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["files"] == 0
    r = runner.invoke(app, ["import"])
    assert r.exit_code == 0, r.output
    assert "imported 2 turn(s) of 1 session(s)" in r.stdout
    assert _counts(engine)[0] == 18
    (tmp_path / "codex" / "sessions" / "notes.jsonl").write_text("[1, 2]\n")
    r = runner.invoke(app, ["import"])
    assert r.exit_code == 0 and "1 file(s) skipped" in r.output
    r = runner.invoke(app, ["errors", "--json"])
    errs = [e for e in json.loads(r.stdout) if e["kind"] == "import"]
    assert len(errs) == 1 and "notes.jsonl" in errs[0]["message"]
    assert "not a Codex rollout" in errs[0]["message"]
    r = runner.invoke(app, ["import", "--since", "yesterday"])
    assert r.exit_code == 2 and "is neither an age nor a date" in r.output
    r = runner.invoke(app, ["import", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "no such file" in r.output


SUBAGENT_DIR = Path(__file__).parent / "fixtures" / "codex-0.169.0" / "subagent"


def test_subagent_session_imported_like_the_hooks_saw_it(tmp_path):
    """Parent and child rollouts -> the parent session's turns, with the child's turn (its
    own model requests and command) under the parent session id, as the hooks report it."""
    project = tmp_path / "project"
    project.mkdir()
    config.write_file(project, {"granularity": "both"})
    sessions = tmp_path / "codex" / "sessions"
    sessions.mkdir(parents=True)
    copies = {}
    for src in sorted((SUBAGENT_DIR / "rollouts").glob("*.jsonl")):
        dst = sessions / src.name
        dst.write_text(src.read_text().replace("/home/dev/project", str(project)))
        os.utime(dst, (OLD, OLD))
        copies[src.name] = str(dst.resolve())
    now = time.time() + 60
    hooked = db.open_db()
    for p in sorted((SUBAGENT_DIR / "payloads").glob("*.json")):
        obj = json.loads(p.read_bytes())
        obj["cwd"] = str(project)
        for k in ("transcript_path", "agent_transcript_path"):
            if obj.get(k):
                obj[k] = copies[Path(obj[k]).name]
        r = run_hook(json.dumps(obj).encode(), cwd=project)
        assert r.returncode == 0, r
    _pipeline(hooked, now)
    imported = db.open_db(tmp_path / "other-home")
    res = backfill.run(imported, [sessions])
    assert (res.files, len(res.sessions), res.turns) == (2, 1, 2)
    _pipeline(imported, now)

    want = {b["turn_id"]: b for b in _traces(hooked, "turn")}
    got = {b["turn_id"]: b for b in _traces(imported, "turn")}
    assert set(got) == set(want) and len(got) == 2
    for tid in got:
        g, w = _comparable(got[tid]), _comparable(want[tid])
        for body in (g, w):  # the multi-agent tools' outputs are re-rendered, not verbatim
            for s in body["steps"]:
                if s["tool_name"] and s["tool_name"] != "Bash":
                    s["output_preview"] = None
        for a, b in zip(g["steps"], w["steps"]):
            assert a == b, tid
        assert g == w, tid
    parent = [b for b in got.values() if b["input_summary"].startswith("Have a helper")][0]
    assert [s["tool_name"] for s in parent["steps"] if s["action"] == "tool_use"] == \
        ["spawn_agent", "multi_agent_v1wait_agent", "Bash"]
    total = sum(b["usage"]["total"] for b in got.values())
    assert total == sum(b["usage"]["total"] for b in want.values()) and total > 0


def test_a_paused_project_is_not_imported(tmp_path, engine):
    from spool import queries

    project, rollout = _project_and_rollout(tmp_path)
    with db.write(engine) as conn:
        queries.pause(conn, str(project), time.time())
    res = backfill.run(engine, [rollout])
    assert (res.turns, res.events, res.paused) == (0, 0, 4)
    assert _counts(engine) == (0, 0, 0)


def test_a_pause_while_importing_keeps_the_rest_out(tmp_path, engine):
    """The hook's pause rule is read again in each write transaction: a project paused
    after its events were read (here: at the file's progress report, before the batch is
    written) records nothing."""
    from spool import queries

    project, rollout = _project_and_rollout(tmp_path)
    other = tmp_path / "elsewhere"

    def pause_now(_bytes: int, _files: int) -> None:
        with db.write(engine) as conn:
            queries.pause(conn, str(project), time.time())
            queries.pause(conn, str(other), time.time())  # not a prefix of the project

    res = backfill.run(engine, [rollout], progress=pause_now)
    assert (res.turns, res.paused) == (2, 0)  # taken before the pause
    assert _counts(engine) == (0, 0, 0)


def test_no_codex_home_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEX_HOME", str(tmp_path / "none"))
    r = CliRunner().invoke(get_app(), ["import"])
    assert r.exit_code == 0 and "No Codex sessions found" in r.output


def _convert(lines: list[bytes], settled: bool = True) -> list:
    from spool.importer import Converter

    conv = Converter("/x/rollout.jsonl")
    blocks = []
    for ln in lines:
        blocks += conv.feed(ln)
    return blocks + conv.finish(settled=settled)


def test_without_token_usage_records_the_token_count_lines_give_each_request(tmp_path):
    lines = fixture_rollout().read_bytes().splitlines(keepends=True)
    with_records = _convert(lines)
    older = _convert([ln for ln in lines if b'"type":"token_usage_record"' not in ln])
    usage = lambda blocks: [b.usage for b in blocks if b.turn_id]  # noqa: E731
    posts = lambda blocks: [e.payload["token_usage"] for b in blocks for e in b.events  # noqa: E731
                            if e.payload["hook_event_name"] == "PostModelRequest"]
    assert usage(older) == usage(with_records) and len(posts(older)) == 4
    assert posts(older) == posts(with_records)


def test_an_aborted_turn_ends_with_an_interrupt_and_no_stop():
    lines = fixture_rollout().read_bytes().splitlines(keepends=True)
    i = next(n for n, ln in enumerate(lines) if b'"type":"task_complete"' in ln)
    aborted = (b'{"timestamp":"2026-11-21T22:27:16.239Z","type":"event_msg","payload":'
               b'{"type":"turn_aborted","turn_id":"%s","reason":"interrupted"}}\n' % TURN1.encode())
    blocks = _convert(lines[:i] + [aborted] + lines[i + 1:])
    first = [b for b in blocks if b.turn_id == TURN1][0]
    names = [e.payload["hook_event_name"] for e in first.events]
    assert names[-1] == "Interrupt" and "Stop" not in names
    assert [b.turn_id for b in blocks if b.turn_id] == [TURN1, TURN2]


def _deliver_and_retire(engine, spool_home, now: float) -> None:
    """The session through the real worker (file sink), then retention a month on."""
    from spool import maintenance
    from spool.worker import Worker

    worker = Worker(engine, spool_home, env={"SPOOL_SESSION_END_GRACE": "0"})
    try:
        results = worker.run_once(now, jobs=("ingest", "aggregate", "deliver"))
    finally:
        worker.close()
    assert all(results.values()), results
    assert _counts(engine)[2] > 0
    counts = maintenance.retention(engine, now + 31 * 86400, 30 * 86400)
    assert counts["sessions"] == 1 and _counts(engine) == (0, 0, 0)


def test_a_session_retention_deleted_is_not_imported_and_delivered_again(tmp_path, engine,
                                                                         spool_home):
    _project, rollout = _project_and_rollout(tmp_path)
    now = time.time() + 60
    assert backfill.run(engine, [rollout]).turns == 2
    _deliver_and_retire(engine, spool_home, now)
    with db.read(engine) as conn:
        (retired,), = conn.exec_driver_sql(
            "SELECT last_event_at FROM retired_sessions WHERE session_id = ?", (SID,))
    assert retired > 1795300035  # the rollout's last event
    # The rollout is still on disk: importing it again (a month later) brings nothing back.
    again = backfill.run(engine, [rollout])
    _pipeline(engine, now + 32 * 86400)
    assert (again.turns, again.events, again.already) == (0, 0, 2)
    assert _counts(engine) == (0, 0, 0)


def test_a_session_resumed_after_retention_gets_only_its_new_turn(tmp_path, engine, spool_home):
    project, rollout = _project_and_rollout(tmp_path, granularity="turn")
    full = rollout.read_bytes().splitlines(keepends=True)
    first_done = next(i for i, line in enumerate(full)
                      if b'"task_complete"' in line and TURN1.encode() in line)
    rollout.write_bytes(b"".join(full[:first_done + 1]))  # the session had one turn then
    os.utime(rollout, (OLD, OLD))
    assert backfill.run(engine, [rollout]).turns == 1
    _deliver_and_retire(engine, spool_home, time.time() + 60)
    rollout.write_bytes(b"".join(full))  # resumed: its second turn, later
    os.utime(rollout, (OLD, OLD))
    res = backfill.run(engine, [rollout])
    _pipeline(engine, time.time() + 32 * 86400)
    assert (res.turns, res.already) == (1, 1)
    assert [b["turn_id"] for b in _traces(engine, "turn")] == [TURN2]
