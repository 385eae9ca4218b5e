"""`spool import` checkpoints its WAL batch by batch (spool.wal_checkpointer), off
its own thread: the database file holds what was imported, the WAL never more
than about one batch."""
from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from spool import backfill
from spool.wal_checkpointer import Checkpointer

from support.recorded import fixture_rollout

SID = "01a20038-88d1-76a3-89e0-645a8f69229c"
OLD = time.time() - 86_400
FILES = 30


def _sessions(tmp_path: Path, n: int) -> Path:
    """``n`` copies of the fixture rollout, each its own session."""
    root = tmp_path / "codex" / "sessions"
    root.mkdir(parents=True)
    text = fixture_rollout().read_text()
    for i in range(n):
        sid = f"{SID[:-4]}{i:04d}"
        p = root / fixture_rollout().name.replace(SID, sid)
        p.write_text(text.replace(SID, sid))
        os.utime(p, (OLD, OLD))
    return root


def _wal_state(home: Path, watcher: sqlite3.Connection) -> tuple[int, int, int]:
    """(pages of the database, pages in its file, frames in the WAL), before any
    checkpoint by the caller."""
    pages = watcher.execute("PRAGMA page_count").fetchone()[0]
    size = watcher.execute("PRAGMA page_size").fetchone()[0]
    in_file = os.path.getsize(home / "spool.db") // size
    frames = (os.path.getsize(home / "spool.db-wal") - 32) // (size + 24)
    return pages, in_file, frames


def test_each_batch_is_checkpointed_while_importing(tmp_path, engine, spool_home, monkeypatch):
    monkeypatch.setattr(backfill, "FLUSH_EVENTS", 1)  # a batch (a commit) per file
    root = _sessions(tmp_path, FILES)
    # A second connection keeps the WAL file in place after the import's connections
    # close (the last one to close would checkpoint and delete it).
    watcher = sqlite3.connect(spool_home / "spool.db")
    try:
        watcher.execute("SELECT count(*) FROM raw_events").fetchone()
        res = backfill.run(engine, [root])
        assert res.files == FILES and res.turns == 2 * FILES
        pages, in_file, frames = _wal_state(spool_home, watcher)
        # Everything imported is in the database file (checkpointed, not waiting in the
        # WAL) ...
        assert in_file == pages
        # ... and the WAL was reset at each batch: it never grew past a few batches'
        # pages (without checkpoints it would hold every page of all 30 commits).
        assert 0 < frames <= pages // 4, (frames, pages)
        assert watcher.execute("SELECT count(*) FROM raw_events").fetchone()[0] == res.events
    finally:
        watcher.close()


def test_a_dry_run_starts_no_checkpointer(tmp_path, engine):
    root = _sessions(tmp_path, 2)
    store = backfill._Store(engine, True, time.time())
    try:
        assert store.checkpoints is None
    finally:
        store.close()
    assert backfill.run(engine, [root], dry_run=True).turns == 4


def test_the_checkpointer_folds_requests_and_waits(engine):
    ckpt = Checkpointer(engine)
    assert ckpt.wait()  # nothing requested: returns at once
    for _ in range(5):
        ckpt.request()
    assert ckpt.wait()
    assert 1 <= ckpt.count <= 5
    ckpt.close()
    assert not ckpt._thread.is_alive()


def test_a_spaced_checkpointer_runs_what_was_requested_when_closed(engine):
    """The aggregate pass spaces its checkpoints (every_s): a request made within the
    interval waits for it, and close() cuts the wait short and still runs it."""
    ckpt = Checkpointer(engine, every_s=60.0)
    ckpt.request()
    assert ckpt.wait() and ckpt.count == 1
    ckpt.request()  # within the 60 s: waits for the interval...
    started = time.monotonic()
    ckpt.close()  # ...which close() ends, running the checkpoint first
    assert ckpt.count == 2 and time.monotonic() - started < 30
    assert not ckpt._thread.is_alive()


def test_without_its_connection_the_import_checkpoints_itself(tmp_path, spool_home, engine):
    """The checkpointer's thread cannot open its connection: wait() says so, and the
    import turns SQLite's automatic checkpoint back on for its own connection (from
    its next batch: the thread starts with the first request)."""
    from spool import db

    root = _sessions(tmp_path, 2)
    store = backfill._Store(engine, False, time.time())
    try:
        assert store.con.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        store.checkpoints = Checkpointer(db.make_engine(tmp_path / "no such dir" / "x.db"))
        res = backfill.Summary()
        for path in sorted(root.glob("*.jsonl")):
            backfill.import_file(path, store, res, now=time.time(),
                                 settle=backfill.SETTLE_SECONDS)
            store.flush()
        assert store.checkpoints is None
        assert store.con.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
    finally:
        store.close()
    with sqlite3.connect(spool_home / "spool.db") as con:
        assert con.execute("SELECT count(*) FROM raw_events").fetchone()[0] == res.events > 0
