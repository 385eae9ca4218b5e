"""The worker's optional rollouts job: a real `spool worker` process and real rollout
files in a temporary CODEX_HOME.  Off by default it imports nothing; on, it imports a
hook-less session once, leaves a hooked session (even its turns the hooks missed) and a
rollout still being written alone."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from spool import backfill, config, db
from spool.errors import SpoolError
from spool.worker import import_rollouts, rollouts

from support.hookproc import run_hook
from support.recorded import fixture_payloads, fixture_rollout
from support.waiting import wait_until

SID = "01a20038-88d1-76a3-89e0-645a8f69229c"  # the recorded session: hooked (turn 1 only)
TURN1 = "01a20038-88e8-7592-844d-9a4c2114b9d0"
TURN2 = "01a20038-a3f6-7272-b707-136584472438"
FREE = "0aaaaaaa-88d1-76a3-89e0-645a8f69229c"  # the same session, run with no hook
BUSY = "0bbbbbbb-88d1-76a3-89e0-645a8f69229c"  # ... and one Codex is still writing
OLD = time.time() - 86_400  # last written a day ago: settled


def _rollout(codex: Path, project: Path, sid: str, *, settled: bool = True) -> Path:
    """The fixture rollout as session ``sid`` (its turn ids made unique to it) in ``codex``."""
    text = fixture_rollout().read_text().replace("/home/dev/project", str(project))
    if sid != SID:
        text = text.replace(SID, sid).replace(TURN1, sid[:8] + TURN1[8:]).replace(
            TURN2, sid[:8] + TURN2[8:])
    path = codex / "sessions" / "2026" / "11" / "21" / fixture_rollout().name.replace(SID, sid)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if settled:
        os.utime(path, (OLD, OLD))
    return path


def _hook_turn1(project: Path, rollout: Path) -> None:
    """The recorded session's hooks, for its first turn only (as if the second was lost)."""
    for name, raw in fixture_payloads():
        obj = json.loads(raw)
        if obj.get("turn_id") not in (None, TURN1):
            continue
        obj["transcript_path"], obj["cwd"] = str(rollout.resolve()), str(project)
        r = run_hook(json.dumps(obj).encode(), cwd=project)
        assert r.returncode == 0, (name, r)


def _setup(tmp_path: Path) -> tuple[Path, Path, dict]:
    project = tmp_path / "project"
    project.mkdir()
    config.write_file(project, {"granularity": "turn"})
    codex = tmp_path / "codex"
    paths = {sid: _rollout(codex, project, sid) for sid in (SID, FREE)}
    paths[BUSY] = _rollout(codex, project, BUSY, settled=False)
    return project, codex, paths


def _rows(engine, sql: str, *args) -> list[tuple]:
    with db.read(engine) as conn:
        return [tuple(r) for r in conn.exec_driver_sql(sql, args).fetchall()]


def _imported(engine) -> dict[str, int]:
    return dict(_rows(engine, "SELECT session_id, count(*) FROM raw_events"
                              " WHERE source = 'import' GROUP BY session_id"))


def _turn_traces(engine) -> list[tuple]:
    return _rows(engine, "SELECT session_id, turn_id FROM traces WHERE kind = 'turn'"
                         " ORDER BY session_id, turn_id")


def _scan_state(engine) -> dict | None:
    got = _rows(engine, "SELECT value FROM kv WHERE key = ?", rollouts.STATE_KEY)
    return json.loads(got[0][0]) if got else None


def test_off_by_default_the_worker_imports_no_rollout(tmp_path, engine, workers):
    project, codex, paths = _setup(tmp_path)
    workers.start(env=workers.env(CODEX_HOME=str(codex), SPOOL_INTERVAL_ROLLOUTS="0.1"))
    # Hooks fire after the worker started; their trace shows it has been at work.
    _hook_turn1(project, paths[SID])
    wait_until(lambda: _turn_traces(engine) == [(SID, TURN1)], what="the hooked turn traced")
    assert _imported(engine) == {}
    assert _scan_state(engine) is None  # the job never ran


def test_on_the_worker_imports_a_hookless_session_once(tmp_path, engine, workers):
    project, codex, paths = _setup(tmp_path)
    _hook_turn1(project, paths[SID])
    workers.start(env=workers.env(CODEX_HOME=str(codex), SPOOL_IMPORT_ROLLOUTS="true",
                                  SPOOL_INTERVAL_ROLLOUTS="0.2"))
    free_turns = [(FREE, FREE[:8] + TURN1[8:]), (FREE, FREE[:8] + TURN2[8:])]
    wait_until(lambda: [t for t in _turn_traces(engine) if t[0] == FREE] == free_turns,
               what="the hook-less session's two turns traced")
    assert _imported(engine) == {FREE: 18}  # 16 turn events + SessionStart + SessionEnd
    # The hooked session is left to its hooks (its second turn too); the one Codex is
    # still writing waits.
    wait_until(lambda: (_scan_state(engine) or {}).get("waiting") == [str(paths[BUSY])],
               what="the file still being written left waiting")
    assert [t for t in _turn_traces(engine) if t[0] == SID] == [(SID, TURN1)]

    # The file changes (ctime) again: the next scans read it again and add nothing.
    touched = time.time()
    os.utime(paths[FREE], (OLD, OLD))
    wait_until(lambda: (_scan_state(engine) or {}).get("at", 0) > touched + 0.5,
               what="a scan after the change")
    assert _imported(engine) == {FREE: 18}
    assert _rows(engine, "SELECT count(*) FROM traces WHERE session_id = ?", FREE) == [(2,)]
    assert _rows(engine, "SELECT count(*) FROM raw_events WHERE session_id = ?"
                         " AND source = 'import'", BUSY) == [(0,)]


def test_a_rollout_moved_to_archived_sessions_is_scanned(tmp_path, engine):
    """A move keeps the mtime (older than the last scan) but changes the ctime."""
    project = tmp_path / "project"
    project.mkdir()
    codex = tmp_path / "codex"
    (codex / "archived_sessions").mkdir(parents=True)
    roots = backfill.default_roots({"CODEX_HOME": str(codex)})
    first = rollouts.scan(engine, time.time(), roots=roots)
    assert (first.files, first.turns) == (0, 0)
    path = _rollout(codex, project, FREE)
    moved = codex / "archived_sessions" / path.name
    path.rename(moved)
    assert moved.stat().st_mtime < _scan_state(engine)["at"]
    second = rollouts.scan(engine, time.time() + 1, roots=roots)
    assert (second.files, second.turns, second.events) == (1, 2, 18)
    third = rollouts.scan(engine, time.time() + 2, roots=roots)
    assert (third.files, third.turns) == (0, 0)  # not changed since: not read again


def test_the_switch_reads_true_false_and_names_a_bad_value():

    assert import_rollouts({}) is False and import_rollouts({"SPOOL_IMPORT_ROLLOUTS": " "}) is False
    assert import_rollouts({"SPOOL_IMPORT_ROLLOUTS": "true"}) is True
    assert import_rollouts({"SPOOL_IMPORT_ROLLOUTS": "0"}) is False
    with pytest.raises(SpoolError, match="SPOOL_IMPORT_ROLLOUTS='maybe'"):
        import_rollouts({"SPOOL_IMPORT_ROLLOUTS": "maybe"})


def test_only_imported_events_count_as_work():
    """A scan that left files waiting, or skipped hooked turns, did nothing to log or to
    wake the aggregate job for."""
    from spool.worker import did_work

    assert not did_work(rollouts.ScanDone(files=1, hooked=2, waiting=3))
    assert did_work(rollouts.ScanDone(files=1, turns=1, events=8))
