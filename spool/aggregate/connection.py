"""The aggregator's SQLite connection: pragmas, transactions, errors (its WAL checkpoints:
spool.wal_checkpointer).

A pass works on the engine's DB-API connection directly (plain ``sqlite3``:
it runs many small statements, and ``executemany`` batches), in short
transactions: ``BEGIN IMMEDIATE`` only for writes, so the hooks waiting on
the write lock are never held up for long.
"""
from __future__ import annotations

import gc
import sqlite3
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import Engine

from .. import problems

# Page cache of the aggregator's connection (KiB).
CACHE_KIB = 64 * 1024
# At most one PASSIVE checkpoint this often (each one syncs the database file).
CHECKPOINT_EVERY_S = 0.25


@contextmanager
def connect(engine: Engine) -> Iterator[sqlite3.Connection]:
    """The engine's DB-API connection (pragmas applied, isolation_level None)."""
    raw = engine.raw_connection()
    con = raw.driver_connection
    saved = None
    try:
        saved = (con.execute("PRAGMA cache_size").fetchone()[0],
                 con.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
        # A pass rewrites many pages in one transaction: with SQLite's default
        # 2 MiB cache they would spill into the WAL (and be written again)
        # before the commit.
        con.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        # The pass checkpoints after its write transactions itself
        # (spool.wal_checkpointer, every CHECKPOINT_EVERY_S): not inside the COMMIT, and the WAL stays small, so a
        # hook's commit never has a checkpoint to run.
        con.execute("PRAGMA wal_autocheckpoint = 0")
        yield con
    finally:
        try:
            if saved is not None:
                if not con.in_transaction:  # what the throttled Checkpointer left over
                    con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                con.execute(f"PRAGMA cache_size = {int(saved[0])}")
                con.execute(f"PRAGMA wal_autocheckpoint = {int(saved[1])}")
        except sqlite3.Error:
            pass
        raw.close()


@contextmanager
def tx(con: sqlite3.Connection, immediate: bool = True) -> Iterator[sqlite3.Connection]:
    """A transaction: ``BEGIN IMMEDIATE`` (takes the write lock) or a deferred
    one (a read snapshot).

    A write transaction runs with Python's cyclic garbage collector paused: a full
    collection over a big pass's objects takes 40-55 ms (measured on a 1M backlog),
    and inside the transaction it would hold the write lock, and any hook waiting
    for it, that long.  It runs after the COMMIT instead."""
    paused = immediate and gc.isenabled()
    if paused:
        gc.disable()
    try:
        con.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
    finally:
        if paused:
            gc.enable()


def log_error(con: sqlite3.Connection, now: float, message: str) -> None:
    """One ``errors`` row (source ``aggregate``), in its own transaction."""
    try:
        with tx(con):
            problems.record_dbapi(con, "aggregate", message[:4000], now)
    except sqlite3.Error:
        pass


def chunks(seq: list, n: int = 500):
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def in_query(con: sqlite3.Connection, sql: str, keys: list, params: tuple = ()) -> list:
    """``sql`` with ``{}`` replaced by a placeholder list, run over ``keys`` in
    chunks (after the fixed ``params``); all the rows."""
    out: list = []
    for chunk in chunks(keys):
        out.extend(con.execute(sql.format(",".join("?" * len(chunk))),
                               (*params, *chunk)).fetchall())
    return out
