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
the worker's lock) nor the agent secret (it delivers nothing), and exits as
soon as its task pipe closes, so nothing outlives a pass or a killed worker.
Results come back as they are finished, each with its work item.
"""
from __future__ import annotations

import os
import queue
import sqlite3
import subprocess
import sys
import threading
import traceback
from collections import deque
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Callable, Iterator, Sequence

# Work sent per message, in events (some 30 ms of building), and messages in
# flight per builder (enough that it never waits for the pass between two).
CHUNK_EVENTS = 2000
CHUNK_SESSIONS_MAX = 100
DEPTH = 4
BUSY_TIMEOUT_MS = 5000
NICE = 5
MMAP_BYTES = 1 << 30
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

    # Below the pass in priority: when cores are short, the pass (which holds
    # the write lock the hooks wait for) runs first.
    try:
        os.nice(NICE)
    except OSError:
        pass

    # A thread takes the tasks off the pipe as they come: the pass never blocks
    # sending work while this process blocks sending it results.
    inbox: queue.SimpleQueue = queue.SimpleQueue()

    def receive() -> None:
        while True:
            try:
                inbox.put(tasks.recv())
            except (EOFError, OSError):  # the pass is over (or its process died)
                inbox.put(None)
                return

    threading.Thread(target=receive, daemon=True).start()
    db_path = inbox.get()
    if db_path is None:
        return
    con = sqlite3.connect(db_path, isolation_level=None)
    con.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    con.execute("PRAGMA query_only = ON")
    con.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    # Pages read straight from the mapped file, not copied in by read() calls
    # (measured: ~8 % less CPU for a big pass).  A failing disk would kill this
    # process with SIGBUS rather than raise; the pass then builds the rest itself.
    con.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
    # And one sends the results, so building goes on while the pass is busy
    # elsewhere (at most DEPTH chunks are in flight: memory stays bounded).
    outbox: queue.SimpleQueue = queue.SimpleQueue()

    def send() -> None:
        while (out := outbox.get()) is not None:
            try:
                results.send(out)
            except OSError:  # the pass stopped reading: it is over
                os._exit(0)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        while (chunk := inbox.get()) is not None:
            out: list = []
            for w in chunk:
                try:
                    out.append(read_session(con, w))
                except Exception:  # reported by the pass like an in-process failure
                    out.append(traceback.format_exc())
            outbox.put(out)
    finally:
        outbox.put(None)
        sender.join()
        con.close()


class BuilderPool:
    """``processes`` builder processes reading the database at ``db_path``."""

    def __init__(self, db_path: str, processes: int):
        self._procs: list[tuple[subprocess.Popen, Connection, Connection]] = []
        self._todo: deque = deque()  # chunks not sent yet
        self._sent: list[deque] = []  # per builder: chunks in flight, oldest first
        self.built = 0  # sessions the builders built (not counting local ones)
        from .credentials import ENV_SECRET

        # The child imports this very package, wherever it was imported from.
        env = {k: v for k, v in os.environ.items() if k != ENV_SECRET}
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
                self._sent.append(deque())
                tasks.send(db_path)
        except Exception as exc:
            self.close()
            raise BuilderError(f"could not start a builder process: {exc}") from exc

    # --- work ---------------------------------------------------------------------

    def submit(self, items: Sequence, sizes: Sequence[int]) -> None:
        """Queue work items (``sizes``: their events, to cut chunks)."""
        self._todo.extend(_chunks(items, sizes))

    def unfinished(self) -> list:
        """Items submitted whose results were not returned yet (after a BuilderError:
        the caller builds them itself)."""
        return [w for q in self._sent for chunk in q for w in chunk] + [
            w for chunk in self._todo for w in chunk]

    def _feed(self) -> None:
        for i, (_proc, tasks, _r) in enumerate(self._procs):
            while self._todo and len(self._sent[i]) < DEPTH:
                tasks.send(self._todo[0])
                self._sent[i].append(self._todo.popleft())

    def _collect(self, i: int) -> Iterator[tuple[object, object]]:
        out = self._procs[i][2].recv()
        chunk = self._sent[i].popleft()
        self.built += len(chunk)
        yield from zip(chunk, out)

    def ready(self) -> Iterator[tuple[object, object]]:
        """``(item, result)`` for what the builders have finished, without waiting.
        A result is what ``read_session`` returned, or the traceback text of what
        it raised.  Raises BuilderError when a builder died."""
        try:
            self._feed()
            for i, (_p, _t, results) in enumerate(self._procs):
                while self._sent[i] and results.poll():
                    yield from self._collect(i)
                    self._feed()
        except (EOFError, OSError) as exc:
            raise BuilderError(f"a builder process stopped: {exc!r}") from exc

    def drain(self, local: Callable[[object], object] | None = None
              ) -> Iterator[tuple[object, object]]:
        """Every submitted item's ``(item, result)``, in the order they finish.
        When no result is ready and work is left unsent, ``local`` builds the
        next chunk in this process instead of waiting (this process has a core
        too; the builders keep building meanwhile).  Raises BuilderError when a
        builder died."""
        try:
            while True:
                self._feed()
                busy = [i for i in range(len(self._procs)) if self._sent[i]]
                if not busy:
                    return
                ready = [i for i in busy if self._procs[i][2].poll()]
                if ready:
                    for i in ready:
                        yield from self._collect(i)
                elif self._todo and local is not None:
                    for w in self._todo.popleft():
                        yield w, local(w)
                else:
                    wait([self._procs[i][2] for i in busy])
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
