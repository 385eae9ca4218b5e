"""WAL checkpoints for a writer that commits in batches (``spool import``), on a
thread and connection of their own.

SQLite's automatic checkpoint runs inside the COMMIT that takes the WAL past 1,000
pages: the committing thread copies those pages into the database and waits for
two fsyncs, with nothing else to do meanwhile.  Here the writer commits with
``PRAGMA wal_autocheckpoint = 0`` and calls ``request()`` after each batch; this
thread then runs ``PRAGMA wal_checkpoint(PASSIVE)`` (one statement: SQLite copies
and syncs without the GIL) while the writer builds its next batch.  Before its
next write transaction the writer calls ``wait()``, which returns once the
previous checkpoint is done, so the WAL is reset at each batch (unless a reader
still uses its pages, as for any writer) and holds one batch: a hook's commit does
not find an import's pages to checkpoint.

A checkpoint that fails (it is best effort, as SQLite's own) is skipped; if the
thread cannot open its connection (or ends any other way than by ``close()``),
``wait()`` returns False and the writer turns its automatic checkpoint back on.  ``close()`` waits for the last checkpoint.
"""
from __future__ import annotations

import sqlite3
import threading

from sqlalchemy import Engine


class Checkpointer:
    def __init__(self, engine: Engine):
        self._engine = engine
        self._cv = threading.Condition()
        self._requested = 0
        self._done = 0
        self._stopping = False
        self._failed = False
        self._thread: threading.Thread | None = None
        self.count = 0  # checkpoints run

    def request(self) -> None:
        """A batch was committed: checkpoint it."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name="spool-import-checkpoint",
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
            try:
                con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                self.count += 1
            except sqlite3.Error:
                pass  # best effort, as SQLite's own: the next one catches up
            with self._cv:
                self._done = upto
                self._cv.notify_all()
