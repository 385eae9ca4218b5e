"""Aggregation while another process keeps writing events, and a second aggregator runs."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from spool import db, ingest
from spool.aggregate import aggregate, sweep

from support.sessions import check_invariants
from support.waiting import wait_until


ROOT = Path(__file__).resolve().parent.parent

WRITER = textwrap.dedent("""
    import json, sys, time
    from spool import hook
    home, rounds = sys.argv[1], int(sys.argv[2])
    sys.path.insert(0, sys.argv[3])  # the tests directory
    from support.recorded import codex_like_session
    def put(obj):
        raw = json.dumps(obj).encode()
        hook.insert(home, time.time(), "hook", obj["cwd"], raw, len(raw), 0)
    for r in range(rounds):
        sids = [f"r{r}-s{k}" for k in range(3)]
        script = {}
        for sid in sids:
            evs = codex_like_session(sid, 2)
            script[sid] = evs
        # Three sessions interleaved.
        while any(script.values()):
            for sid in sids:
                if script[sid]:
                    put(script[sid].pop(0))
""")

AGGREGATOR = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from spool import db, ingest
    from spool.aggregate import aggregate
    home, done, started = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    engine = db.make_engine(home / "spool.db")
    env = dict(os.environ, SPOOL_GRANULARITY="both", SPOOL_SESSION_END_GRACE="0")
    passes = 0
    while not done.exists():
        ingest.ingest_all(engine, home=home)
        r = aggregate(engine, time.time(), env=env)
        assert r.errors == 0, r
        passes += 1
        started.touch()
    print(passes)
""")


@pytest.mark.slow
def test_concurrent_writer_and_two_aggregators(spool_home, tmp_path):
    engine = db.open_db()
    env = {"SPOOL_GRANULARITY": "both", "SPOOL_SESSION_END_GRACE": "0"}
    penv = dict(os.environ, PYTHONPATH=str(ROOT))
    done, started = tmp_path / "done", tmp_path / "started"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(spool_home), "12",
                               str(Path(__file__).resolve().parent)], env=penv)
    other = subprocess.Popen([sys.executable, "-c", AGGREGATOR, str(spool_home), str(done),
                              str(started)],
                             env=penv, stdout=subprocess.PIPE, text=True)
    passes = 0
    deadline = time.monotonic() + 120
    try:
        while writer.poll() is None:
            assert time.monotonic() < deadline, "writer did not finish"
            ingest.ingest_all(engine)
            r = aggregate(engine, time.time(), env=env)
            assert r.errors == 0
            passes += 1
        assert writer.returncode == 0
    finally:
        # The second aggregator must have raced at least one pass (a slow start must
        # not leave it with none) before it is told to stop.
        wait_until(lambda: started.exists() or other.poll() is not None, 60,
                   what="the second aggregator's first pass")
        done.touch()
        out, _ = other.communicate(timeout=60)
        writer.wait(timeout=10)
    assert other.returncode == 0
    assert passes >= 1 and int(out.strip()) >= 1
    ingest.ingest_all(engine)
    now = time.time()
    aggregate(engine, now + 1, env=env)
    sweep(engine, now + 10_000, env=env)
    with db.read(engine) as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM raw_events").scalar() == 12 * 3 * 14
        assert conn.exec_driver_sql(
            "SELECT count(*) FROM traces WHERE kind='turn'").scalar() == 12 * 3 * 2
        # Sessions end cleanly here: one summary each (nothing resumed).
        assert conn.exec_driver_sql(
            "SELECT count(*) FROM traces WHERE kind='session'").scalar() == 12 * 3
    check_invariants(engine, "both")


def test_no_garbage_collection_pause_inside_a_write_transaction(tmp_path):
    """A full collection over a big pass takes 40-55 ms; inside a write transaction it would
    hold the lock (and a waiting hook) that long, so write transactions pause the collector
    and give it back afterwards, also when the transaction fails.  Read snapshots do not."""
    import gc
    import sqlite3

    from spool.aggregate.connection import tx

    con = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    assert gc.isenabled()
    with tx(con):
        con.execute("CREATE TABLE t (x)")
        assert not gc.isenabled()
    assert gc.isenabled()
    with tx(con, immediate=False):
        assert gc.isenabled()
    with pytest.raises(sqlite3.OperationalError):
        with tx(con):
            con.execute("INSERT INTO nowhere VALUES (1)")
    assert gc.isenabled() and con.execute("SELECT count(*) FROM t").fetchone() == (0,)
    con.close()
