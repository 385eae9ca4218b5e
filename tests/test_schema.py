"""The schema is owned by Alembic and defined once (spool/schema.py)."""
from __future__ import annotations

import sqlite3

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from spool import db, hook, paths, schema


def _diff(path) -> list:
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), schema.metadata)
    engine.dispose()
    return diff


def test_head_revision_is_pinned():
    script = ScriptDirectory.from_config(db._alembic_config(paths.db_path()))
    assert script.get_current_head() == schema.HEAD_REVISION


def test_migrated_blank_database_matches_metadata(tmp_path):
    path = tmp_path / "blank.db"
    db.upgrade(path)
    assert _diff(path) == []
    engine = db.make_engine(path)
    assert db.current_revision(engine) == schema.HEAD_REVISION
    engine.dispose()


def test_partial_indexes_exist_as_declared(tmp_path):
    path = tmp_path / "idx.db"
    db.upgrade(path)
    conn = sqlite3.connect(path)
    sql = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type='index' AND sql IS NOT NULL"))
    conn.close()
    assert "WHERE state IN ('pending', 'failed', 'in_flight')" in sql["ix_outbox_due"]
    assert "WHERE status = 'new'" in sql["ix_raw_events_new"]


def test_upgrade_is_idempotent(tmp_path):
    path = tmp_path / "twice.db"
    db.upgrade(path)
    before = sqlite3.connect(path).execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
    db.upgrade(path)
    after = sqlite3.connect(path).execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
    assert before == after


def test_downgrade_upgrade_round_trip(tmp_path):
    path = tmp_path / "round.db"
    db.upgrade(path)
    db.downgrade(path, "base")
    tables = {r[0] for r in sqlite3.connect(path).execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT IN ('alembic_version', 'sqlite_sequence')")}
    assert tables == set()
    db.upgrade(path)
    assert _diff(path) == []


def test_database_from_a_newer_spool_is_refused_untouched(tmp_path):
    path = tmp_path / "newer.db"
    db.upgrade(path)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(db.NewerSchemaError) as err:
        db.upgrade(path)
    assert "newer spool" in err.value.reason
    assert "Upgrade spool" in err.value.instruction
    assert path.read_bytes() == before


def test_hook_insert_matches_the_schema(tmp_path):
    """The hook's raw SQL names only real columns, and a row it writes reads back intact."""
    cols = {c.name for c in schema.raw_events.columns}
    assert set(schema.HOOK_INSERT_COLUMNS) <= cols
    assert "INSERT INTO raw_events (%s)" % ", ".join(schema.HOOK_INSERT_COLUMNS) in hook.INSERT_SQL
    assert {c.name for c in schema.pauses.columns} >= {"project"}
    home = tmp_path / "home"
    home.mkdir()
    db.upgrade(home / "spool.db")
    hook.insert(str(home), 1.5, "hook", "/p", b"{}", 2, 0)
    row = sqlite3.connect(home / "spool.db").execute(
        "SELECT received_at, source, cwd, payload, size, truncated, status FROM raw_events").fetchone()
    assert row == (1.5, "hook", "/p", b"{}", 2, 0, "new")


def test_open_db_sets_pragmas_and_private_modes(spool_home):
    engine = db.open_db()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == db.BUSY_TIMEOUT_MS
    engine.dispose()
    assert (spool_home.stat().st_mode & 0o777) == 0o700
    assert (paths.db_path().stat().st_mode & 0o777) == 0o600


def test_creation_is_atomic_and_races_are_harmless(tmp_path):
    """Several processes creating the same new database at once: one complete database,
    no temporary files left, every process succeeds."""
    import subprocess
    import sys

    path = tmp_path / "race" / "spool.db"
    path.parent.mkdir()
    code = "import sys; from pathlib import Path; from spool import db; db.upgrade(Path(sys.argv[1]))"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], stderr=subprocess.PIPE)
             for _ in range(4)]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errs
    assert _diff(path) == []
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.startswith("spool.db")) == []
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def _first_landing_db(path) -> None:
    """A database as the first landing (0001_initial) left it, with rows in it."""
    db.upgrade(path, "0001_initial")
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO traces (trace_id, kind, name, created_at, body)"
                 " VALUES ('t1', 'turn', 'n', 1.0, '{}')")
    conn.execute("INSERT INTO outbox (trace_id, sink, created_at, next_attempt_at)"
                 " VALUES ('t1', 'file', 1.0, 1.0)")
    conn.commit()
    conn.close()


def test_a_first_landing_database_is_upgraded_in_place(tmp_path):
    path = tmp_path / "old.db"
    _first_landing_db(path)
    assert "ix_outbox_trace" in {r[0] for r in sqlite3.connect(path).execute(
        "SELECT name FROM sqlite_master WHERE type = 'index'")}
    db.upgrade(path)
    assert _diff(path) == []
    conn = sqlite3.connect(path)
    assert "ix_outbox_trace" not in {r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert conn.execute("SELECT trace_id, sink, state FROM outbox").fetchall() == [
        ("t1", "file", "pending")]
    plan = " ".join(r[3] for r in conn.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM outbox WHERE trace_id = 't1'"))
    # lookups by trace still search an index: the unique (trace_id, sink) one
    assert plan.startswith("SEARCH outbox USING") and "INDEX" in plan and "(trace_id=?)" in plan
    conn.close()
    db.downgrade(path, "0001_initial")
    assert "ix_outbox_trace" in {r[0] for r in sqlite3.connect(path).execute(
        "SELECT name FROM sqlite_master WHERE type = 'index'")}


@pytest.mark.slow  # real processes racing one migration: 60 s under load
def test_processes_upgrading_one_database_at_once_take_turns(tmp_path):
    """A worker, a hook-started worker and a CLI command may all open an old
    database right after spool was upgraded: each must succeed."""
    import subprocess
    import sys

    code = "import sys; from pathlib import Path; from spool import db; db.upgrade(Path(sys.argv[1]))"
    for round_ in range(3):
        path = tmp_path / f"old{round_}.db"
        _first_landing_db(path)
        procs = [subprocess.Popen([sys.executable, "-c", code, str(path)],
                                  stderr=subprocess.PIPE) for _ in range(4)]
        errs = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 4, errs
        assert _diff(path) == []


def test_a_round_one_database_gets_the_facts_of_its_events_not_indexed_yet(tmp_path):
    """Round 1 parsed only the ids; the upgrade fills the facts ingest now stores
    (the same values ingest.classify gives) for the rows the index has not read."""
    import json

    from spool import ingest

    path = tmp_path / "round1.db"
    db.upgrade(path, "0002_drop_ix_outbox_trace")
    base = {"session_id": "s", "cwd": "/p", "model": "m", "transcript_path": "/r.jsonl",
            "permission_mode": "default"}
    payloads = [
        (json.dumps({**base, "hook_event_name": "SessionStart", "source": "startup"}), 0),  # indexed
        (json.dumps({**base, "hook_event_name": "SessionStart", "source": "resume"}), 0),
        (json.dumps({**base, "hook_event_name": "UserPromptSubmit", "source": "x", "cwd": "",
                     "model": 5, "permission_mode": None}), 0),
        (json.dumps({"session_id": "s", "hook_event_name": "Stop", "cwd": "/q"}), 0),
        ('{"session_id": "s", "hook_event_name": "Stop", "cwd": "/nan", "x": NaN}', 0),
        (json.dumps({"hook_event_name": "Stop", **base})[:70], 1),  # truncated by the hook
    ]
    conn = sqlite3.connect(path)
    for text, truncated in payloads:
        conn.execute("INSERT INTO raw_events (received_at, source, payload, size, truncated,"
                     " status, session_id, event) VALUES (1.0, 'hook', ?, ?, ?, 'ok', 's', 'x')",
                     (text.encode(), len(text), truncated))
    conn.execute("INSERT INTO cursors (name, value) VALUES ('aggregate', 1)")
    conn.commit()
    conn.close()
    db.upgrade(path)
    assert _diff(path) == []
    columns = [c for c, _k in ingest.FACT_COLUMNS]
    conn = sqlite3.connect(path)
    got = conn.execute(f"SELECT {', '.join(columns)} FROM raw_events ORDER BY id").fetchall()
    conn.close()
    expected = [(None,) * len(columns)]  # at or below the cursor: never read again
    for text, truncated in payloads[1:]:
        fields, _reason = ingest.classify(text.encode(), bool(truncated))
        expected.append(tuple(fields.get(c) for c in columns))
    assert got == expected
    assert expected[1] == ("/p", "/r.jsonl", "m", "default", "resume")
    assert expected[2] == (None, "/r.jsonl", None, None, None)
    assert expected[3] == ("/q", None, None, None, None)
    assert expected[4] == expected[5] == (None,) * len(columns)
