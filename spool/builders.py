"""Builder processes: sessions read and built beside the writer, for big passes.

A pass with many events to trace (a spool catching up after a day offline, a
million-event benchmark) spends most of its time in Python: reading events and
building trace bodies.  On a machine with more than one core, ``BuilderPool``
starts processes that each read sessions on their own read-only connection and
build them (``spool.aggregate.read_session``), and sends back plain rows; the
pass keeps indexing and writing in its own process, one writer as always, and
re-checks every session before writing it, so a session built from a snapshot
that is stale by then is dropped exactly as it would be in one process.

A builder is a fresh interpreter (``python -m spool.builders``: the worker has
threads, so no ``fork``; and unlike multiprocessing's spawn it never re-runs
the caller's main module).  It inherits no descriptor but its two pipes (not
the worker's lock) and exits as soon as its task pipe closes, so nothing
outlives a pass or a killed worker.  Results come back in the order the work
was sent.
"""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import traceback
from collections import deque
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Iterator, Sequence

# Work sent per message, in events (about a millisecond or ten of building) and
# messages in flight per builder (one being built, one waiting).
CHUNK_EVENTS = 2000
CHUNK_SESSIONS_MAX = 100
DEPTH = 2
BUSY_TIMEOUT_MS = 5000
CACHE_KIB = 16 * 1024


class BuilderError(Exception):
    """A builder process died or could not be started."""


def _chunks(work: Sequence, sizes: Sequence[int]) -> list[list]:
    out: list[list] = []
    cur: list = []
    events = 0
    for w, n in zip(work, sizes):
        cur.append(w)
        events += n
        if events >= CHUNK_EVENTS or len(cur) >= CHUNK_SESSIONS_MAX:
            out.append(cur)
            cur, events = [], 0
    if cur:
        out.append(cur)
    return out


def _builder_main(tasks: Connection, results: Connection) -> None:  # pragma: no cover - child
    from .aggregate import read_session

    try:
        db_path = tasks.recv()
    except EOFError:
        return
    con = sqlite3.connect(db_path, isolation_level=None)
    con.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    con.execute("PRAGMA query_only = ON")
    con.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    try:
        while True:
            try:
                chunk = tasks.recv()
            except EOFError:  # the pass is over (or its process died)
                return
            out: list = []
            for w in chunk:
                try:
                    out.append(read_session(con, w))
                except Exception:  # reported by the pass like an in-process failure
                    out.append(traceback.format_exc())
            try:
                results.send(out)
            except OSError:  # the pass stopped reading: it is over
                return
    finally:
        con.close()


class BuilderPool:
    """``processes`` builder processes reading the database at ``db_path``."""

    def __init__(self, db_path: str, processes: int):
        self._procs: list[tuple[subprocess.Popen, Connection, Connection]] = []
        # The child imports this very package, wherever it was imported from.
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        try:
            for _ in range(processes):
                task_r, task_w = os.pipe()
                res_r, res_w = os.pipe()
                try:
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "spool.builders", str(task_r), str(res_w)],
                        pass_fds=(task_r, res_w), stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL, env=env, cwd="/")
                finally:  # only the child holds its ends: a dead side is seen as EOF
                    os.close(task_r)
                    os.close(res_w)
                tasks = Connection(task_w, readable=False)
                self._procs.append((proc, tasks, Connection(res_r, writable=False)))
                tasks.send(db_path)
        except Exception as exc:
            self.close()
            raise BuilderError(f"could not start a builder process: {exc}") from exc

    def map(self, work: Sequence, sizes: Sequence[int]) -> Iterator[tuple[object, object]]:
        """``(work item, result)`` in order; a result is what ``read_session``
        returned, or the traceback text of what it raised.  Raises BuilderError
        when a builder dies (the items not yet yielded are the caller's)."""
        chunks = _chunks(work, sizes)
        k = len(self._procs)
        in_flight: deque = deque()
        sent = 0
        try:
            while sent < len(chunks) or in_flight:
                while sent < len(chunks) and len(in_flight) < k * DEPTH:
                    self._procs[sent % k][1].send(chunks[sent])
                    in_flight.append(sent)
                    sent += 1
                i = in_flight.popleft()
                out = self._procs[i % k][2].recv()
                yield from zip(chunks[i], out)
        except (EOFError, OSError) as exc:
            raise BuilderError(f"a builder process stopped: {exc!r}") from exc

    def close(self) -> None:
        for _proc, tasks, results in self._procs:
            tasks.close()  # the builder sees EOF and returns
            results.close()
        for proc, _t, _r in self._procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover - stuck in a query
                proc.kill()
                proc.wait()
        self._procs = []

    def __enter__(self) -> "BuilderPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


if __name__ == "__main__":  # pragma: no cover - the builder process
    _builder_main(Connection(int(sys.argv[1]), writable=False),
                  Connection(int(sys.argv[2]), readable=False))
