"""WAL checkpoints for a writer that commits in batches (the aggregate pass, ``spool
import``), on a thread and connection of their own.

SQLite's automatic checkpoint runs inside the COMMIT that takes the WAL past 1,000
pages: the committing thread copies those pages into the database and waits for
two fsyncs, with nothing else to do meanwhile.  Here the writer calls ``request()``
after its commits and this thread runs ``PRAGMA wal_checkpoint(PASSIVE)`` (one
statement: SQLite copies and syncs without the GIL) while the writer goes on; a
PASSIVE checkpoint never waits for, nor blocks, writers.  Requests made meanwhile
fold into the next checkpoint, and ``every_s`` spaces them out (the aggregate
pass: a quarter second of writes stays in the WAL).  The thread starts on the
first request, so a writer with nothing to write starts none.

``wait()`` returns once the requested checkpoints are done: the import waits
before each batch (with its own automatic checkpoint off), so the WAL is reset at
each batch (unless a reader still uses its pages) and holds one batch.  A
checkpoint that fails (best effort, as SQLite's own) is skipped; if the thread
cannot open its connection (or ends any other way than by ``close()``), ``wait()``
returns False and the writer checkpoints by itself again.  ``close()`` runs what
was requested and stops the thread.
"""
from __future__ import annotations

import sqlite3
import threading
import time

from sqlalchemy import Engine


class Checkpointer:
    def __init__(self, engine: Engine, every_s: float = 0.0):
        self._engine = engine
        self._every_s = every_s
        self._cv = threading.Condition()
        self._requested = 0
        self._done = 0
        self._stopping = False
        self._failed = False
        self._thread: threading.Thread | None = None
        self.count = 0  # checkpoints run
        self.max_ms = 0.0  # the longest one

    def request(self) -> None:
        """Commits were made: checkpoint them."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name="spool-checkpoint",
                                            daemon=True)
            self._thread.start()
        with self._cv:
            self._requested += 1
            self._cv.notify_all()

    def wait(self) -> bool:
        """Until the requested checkpoints are done; False if this thread cannot run them."""
        with self._cv:
            while self._done < self._requested and not self._failed:
                self._cv.wait()
            return not self._failed

    def close(self) -> None:
        if self._thread is not None:
            with self._cv:
                self._stopping = True
                self._cv.notify_all()
            self._thread.join()

    def _main(self) -> None:
        raw = None
        try:
            raw = self._engine.raw_connection()
            self._loop(raw.driver_connection)
        except BaseException:  # noqa: BLE001 - the writer checkpoints itself instead
            with self._cv:
                self._failed = True  # wait() must not block on a thread that is gone
                self._cv.notify_all()
        finally:
            if raw is not None:
                raw.close()

    def _loop(self, con) -> None:
        while True:
            with self._cv:
                while self._done == self._requested and not self._stopping:
                    self._cv.wait()
                if self._done == self._requested:
                    return  # stopping, nothing left to do
                upto = self._requested  # the requests meanwhile fold into this one
            started = time.perf_counter()
            try:
                con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                self.count += 1
            except sqlite3.Error:
                pass  # best effort, as SQLite's own: the next one catches up
            self.max_ms = max(self.max_ms, (time.perf_counter() - started) * 1000)
            with self._cv:
                self._done = upto
                self._cv.notify_all()
                if self._every_s and not self._stopping:  # at most one per every_s
                    self._cv.wait_for(lambda: self._stopping, self._every_s)
