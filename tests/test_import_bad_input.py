"""`spool import` on damaged or unusual rollouts: skipped or read, counted, never a crash."""
from __future__ import annotations

import gzip
import json
import os
import random
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from spool import aggregate, backfill, db, ingest
from spool.cli import get_app

from support.hookproc import run_hook
from support.recorded import fixture_payloads, fixture_rollout

SID = "01a20038-88d1-76a3-89e0-645a8f69229c"
TURN1 = "01a20038-88e8-7592-844d-9a4c2114b9d0"
OLD = time.time() - 86_400  # last written a day ago: settled


def _write(path: Path, data: bytes, mtime: float = OLD) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


def _line(payload: dict, kind: str = "event_msg") -> bytes:
    return json.dumps({"timestamp": "2026-11-21T22:27:15.000Z", "type": kind,
                       "payload": payload}).encode() + b"\n"


def _events(engine) -> list[tuple[str, str]]:
    with db.read(engine) as conn:
        return [tuple(r) for r in conn.exec_driver_sql(
            "SELECT event, payload FROM raw_events ORDER BY id")]


def test_lines_of_an_unexpected_shape_are_passed_over_not_a_crash(tmp_path, engine):
    lines = fixture_rollout().read_bytes().splitlines(keepends=True)
    at = next(i for i, ln in enumerate(lines) if b'"UserMessage"' in ln) + 1
    odd = [  # valid JSON, fields of types Codex never writes there
        _line({"type": "item_completed", "turn_id": TURN1,
               "item": {"type": "UserMessage", "id": "u1", "content": 5}}),
        _line({"type": "item_completed", "turn_id": TURN1,
               "item": {"type": ["CommandExecution"], "id": "c1"}}),
        _line({"type": "item_completed", "turn_id": TURN1,
               "item": {"type": "CollabAgentToolCall", "id": "c2", "tool": "spawn_agent",
                        "receiver_thread_ids": 7, "receiver_agents": ["x"]}}),
        _line({"type": "item_completed", "turn_id": TURN1,
               "item": {"type": "CollabAgentToolCall", "id": "c3", "tool": "spawn_agent",
                        "receiver_thread_ids": {"a": 1}, "receiver_agents": {"a": 1}}}),
    ]
    path = _write(tmp_path / "rollout-odd.jsonl", b"".join(lines[:at] + odd + lines[at:]))
    res = backfill.run(engine, [path])
    assert (res.files, res.turns, res.skipped_files) == (1, 2, [])
    assert res.tokens["total_tokens"] == 11072
    prompts = [json.loads(p)["prompt"] for e, p in _events(engine) if e == "UserPromptSubmit"]
    assert len(prompts) == 2 and all(prompts)  # the real prompts, and only them


def test_a_byte_order_mark_before_the_first_line_is_read_past(tmp_path, engine):
    path = _write(tmp_path / "rollout-bom.jsonl", b"\xef\xbb\xbf" + fixture_rollout().read_bytes())
    res = backfill.run(engine, [path])
    assert (res.files, res.turns, res.skipped_files) == (1, 2, [])


def test_crlf_line_endings_and_blank_lines_are_read(tmp_path, engine):
    data = b"\r\n" + fixture_rollout().read_bytes().replace(b"\n", b"\n\r\n  \n")
    data = data.replace(b"\n", b"\r\n")
    res = backfill.run(engine, [_write(tmp_path / "rollout-crlf.jsonl", data)])
    assert (res.files, res.turns, res.bad_lines, dict(res.unknown_lines)) == (1, 2, 0, {})


def _cli(*args: str):
    return CliRunner().invoke(get_app(), ["import", *args])


def test_since_takes_an_age_or_a_date_and_a_bad_one_gets_one_line(tmp_path, engine):
    three_hours_ago = _write(tmp_path / "r" / "rollout-a.jsonl", fixture_rollout().read_bytes(),
                             mtime=time.time() - 3 * 3600)
    for since, files in (("2h", 0), ("4h", 1), ("1d", 1)):
        r = _cli("--dry-run", "--json", "--since", since, str(three_hours_ago.parent))
        assert r.exit_code == 0 and json.loads(r.stdout)["files"] == files, (since, r.output)
    local = time.strftime("%Y-%m-%dT%H:%M", time.localtime(time.time() - 2 * 3600))
    r = _cli("--dry-run", "--json", "--since", local, str(three_hours_ago))
    assert r.exit_code == 0 and json.loads(r.stdout)["files"] == 0  # a local time
    for bad in ("yesterday", "2026-13-01", ""):
        r = _cli("--since", bad, str(three_hours_ago))
        assert r.exit_code == 2, r.output
        assert r.output.strip().splitlines() == [
            f"Error: --since {bad!r} is neither an age nor a date."
            " Pass e.g. --since 2h, --since 7d or --since 2026-11-29."]


def test_a_dry_run_shows_the_problems_itself_and_records_none(tmp_path, engine):
    d = tmp_path / "sessions"
    _write(d / "rollout-good.jsonl", fixture_rollout().read_bytes())
    notes = _write(d / "notes.jsonl", b'{"hello": "world"}\n')
    r = _cli("--dry-run", str(d))
    assert r.exit_code == 0, r.output
    assert "would import 2 turn(s) of 1 session(s)" in r.stdout
    assert f"{notes}: skipped, not a Codex rollout" in r.stderr
    assert "spool errors" not in r.output
    with db.read(engine) as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM errors").scalar() == 0
        assert conn.exec_driver_sql("SELECT count(*) FROM raw_events").scalar() == 0
    r = _cli(str(d))  # the real import records them
    assert r.exit_code == 0 and "1 file(s) skipped" in r.stderr and "see `spool errors`" in r.stderr
    with db.read(engine) as conn:
        msgs = [m for (m,) in conn.exec_driver_sql("SELECT message FROM errors")]
    assert len(msgs) == 1 and msgs[0].startswith(f"{notes}: skipped, not a Codex rollout")


def test_a_settled_rollout_cut_mid_line_is_imported_up_to_the_cut_and_ended(tmp_path, engine):
    lines = fixture_rollout().read_bytes().splitlines(keepends=True)
    cut = next(i for i, ln in enumerate(lines) if b'"ordinal":30,' in ln)
    # Codex stopped (killed, disk full) in the middle of turn 2's line, a day ago.
    path = _write(tmp_path / "rollout-cut.jsonl", b"".join(lines[:cut]) + lines[cut][:50])
    res = backfill.run(engine, [path])
    assert (res.turns, res.waiting, res.bad_lines) == (2, 0, 1)
    with db.read(engine) as conn:
        keys = [k for (k,) in conn.exec_driver_sql("SELECT dedup_key FROM raw_events")]
        msgs = [m for (m,) in conn.exec_driver_sql("SELECT message FROM errors")]
    assert any(k.startswith(f"import:{SID}::end:") for k in keys)  # the session is ended
    assert msgs == [f"{path}: skipped 1 unreadable line(s) (the last one cut short,"
                    " not written to since)"]
    ingest.ingest_all(engine)
    aggregate.aggregate(engine, time.time() + 60)
    with db.read(engine) as conn:
        assert conn.exec_driver_sql("SELECT state FROM sessions").scalar() == "final"
        assert conn.exec_driver_sql("SELECT count(*) FROM traces WHERE kind = 'turn'"
                                    ).scalar() == 2


def test_a_compressed_rollout_cut_short_keeps_what_was_read_and_says_so(tmp_path, engine):
    lines = fixture_rollout().read_bytes().splitlines(keepends=True)
    end1 = next(i for i, ln in enumerate(lines) if b'"task_complete"' in ln) + 1
    rng = random.Random(0)  # ~300 KB of lines that do not compress away, after turn 1
    filler = [_line({"blob": "%x" % rng.getrandbits(4000)}, kind="world_state")
              for _ in range(300)]
    whole = gzip.compress(b"".join(lines[:end1] + filler + lines[end1:]))
    path = _write(tmp_path / "rollout-cut.jsonl.gz", whole[:len(whole) // 2])
    res = backfill.run(engine, [path])
    assert (res.files, res.skipped_files, res.turns, res.bad_lines) == (1, [], 1, 1)
    with db.read(engine) as conn:
        keys = [k for (k,) in conn.exec_driver_sql("SELECT dedup_key FROM raw_events")]
        msgs = [m for (m,) in conn.exec_driver_sql("SELECT message FROM errors")]
    assert sum(TURN1 in k for k in keys) == 8 and any("::end:" in k for k in keys)
    assert msgs == [f"{path}: skipped 1 unreadable line(s) (the rest of the file:"
                    " Compressed file ended before the end-of-stream marker was reached)"]
    ingest.ingest_all(engine)  # the aggregator reads the same cut file for exit codes
    aggregate.aggregate(engine, time.time() + 60)
    with db.read(engine) as conn:
        bodies = [json.loads(b) for (b,) in conn.exec_driver_sql(
            "SELECT body FROM traces WHERE kind = 'turn'")]
    assert [b["turn_id"] for b in bodies] == [TURN1]
    assert [s["exit_code"] for s in bodies[0]["steps"] if s["action"] == "tool_use"] == [0]


def test_a_damaged_compressed_file_is_skipped_with_its_reason(tmp_path, engine):
    header = gzip.compress(fixture_rollout().read_bytes())[:10]
    path = _write(tmp_path / "rollout-damaged.jsonl.gz", header + b"\xff" * 64)
    res = backfill.run(engine, [path])
    assert (res.files, res.turns) == (0, 0)
    assert res.skipped_files == [(str(path), "unreadable: Error -3 while decompressing data:"
                                  " invalid block type")]


def test_in_a_directory_a_broken_symlink_is_reported_and_a_directory_named_jsonl_walked(
        tmp_path, engine):
    d = tmp_path / "sessions"
    _write(d / "x.jsonl" / "rollout-inside.jsonl", fixture_rollout().read_bytes())
    (d / "rollout-gone.jsonl").symlink_to(tmp_path / "nowhere.jsonl")
    (d / "rollout-link.jsonl").symlink_to(d / "x.jsonl" / "rollout-inside.jsonl")
    res = backfill.run(engine, [d])
    assert (res.files, res.turns, res.already) == (2, 2, 2)  # the link: the same session
    assert res.skipped_files == [(str(d / "rollout-gone.jsonl"),
                                  "unreadable: No such file or directory")]


def test_progress_counts_each_file_once_and_a_gz_in_its_own_bytes(tmp_path, engine):
    data = fixture_rollout().read_bytes()
    rng = random.Random(1)  # over 1 MiB unpacked: progress is told during the read too
    big = data + b"".join(_line({"blob": "%x" % rng.getrandbits(4000)}, kind="world_state")
                          for _ in range(1200))
    files = [_write(tmp_path / "a" / "rollout-plain.jsonl", data),
             _write(tmp_path / "a" / "rollout-packed.jsonl.gz", gzip.compress(big)),
             _write(tmp_path / "a" / "notes.jsonl", b"[]\n")]
    seen: list[tuple[int, int]] = []
    backfill.run(engine, [tmp_path / "a"], dry_run=True, progress=lambda n, k: seen.append((n, k)))
    assert sum(n for n, _ in seen) == sum(f.stat().st_size for f in files)
    assert sum(k for _, k in seen) == 3 and len(seen) > 3


def test_a_dry_run_counts_as_the_import_with_hook_events_not_parsed_yet(tmp_path, engine):
    rollout = _write(tmp_path / "rollout.jsonl", fixture_rollout().read_bytes())
    for _name, raw in fixture_payloads():  # the hooks saw the session; no worker ran since
        obj = json.loads(raw)
        obj["transcript_path"] = str(rollout)
        assert run_hook(json.dumps(obj).encode(), cwd=tmp_path).returncode == 0
    dry = json.loads(_cli("--dry-run", "--json", str(rollout)).stdout)
    real = json.loads(_cli("--json", str(rollout)).stdout)
    assert (dry["turns"], dry["captured_by_hooks"]) == (0, 2)
    assert {k: v for k, v in dry.items() if k != "dry_run"} == \
        {k: v for k, v in real.items() if k != "dry_run"}


@pytest.mark.parametrize("name,pack", [
    ("rollout.jsonl.gz", gzip.compress),
    ("rollout-bom.jsonl", lambda data: b"\xef\xbb\xbf" + data),
])
def test_traces_of_a_compressed_or_bom_rollout_have_its_exit_codes_and_git(
        tmp_path, engine, name, pack):
    path = _write(tmp_path / name, pack(fixture_rollout().read_bytes()))
    assert backfill.run(engine, [path]).turns == 2
    ingest.ingest_all(engine)
    aggregate.aggregate(engine, time.time() + 60)
    with db.read(engine) as conn:
        bodies = [json.loads(b) for (b,) in conn.exec_driver_sql(
            "SELECT body FROM traces WHERE kind = 'turn'")]
    assert len(bodies) == 2
    for body in bodies:
        env = body["environment"]
        assert (env["codex_version"], env["git_branch"]) == ("0.169.0", "master")
        tools = [s for s in body["steps"] if s["action"] == "tool_use"]
        assert [s["exit_code"] for s in tools] == [0]
        assert tools[0]["exec_duration_ms"] is not None


def test_with_no_codex_sessions_json_still_prints_one_json_object(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEX_HOME", str(tmp_path / "none"))
    r = _cli("--json")
    assert r.exit_code == 0
    s = json.loads(r.stdout)
    assert (s["files"], s["turns"], s["dry_run"]) == (0, 0, False)
    assert "No Codex sessions found" in r.stderr


def test_a_recent_complete_rollout_is_counted_as_still_being_written(tmp_path, engine):
    path = _write(tmp_path / "rollout.jsonl", fixture_rollout().read_bytes(), mtime=time.time())
    r = _cli(str(path))
    assert r.exit_code == 0, r.output
    assert "imported 2 turn(s) of 1 session(s)" in r.stdout
    assert "1 file(s) still being written (their open turn and session end are left" \
        in r.stdout
    with db.read(engine) as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM raw_events"
                                    " WHERE event = 'SessionEnd'").scalar() == 0
