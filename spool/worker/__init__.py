"""The worker: an APScheduler 3.x scheduler running spool's jobs, one per spool.

Jobs, in flow order (``spool worker --once`` runs each exactly once, in this
order; the scheduler runs each on its own interval):

=============  ===================================================  ==========
job            what it does                                         interval
=============  ===================================================  ==========
rollouts       optional, off by default (SPOOL_IMPORT_ROLLOUTS):    60 s
               settled rollouts of hook-less sessions -> raw_events
ingest         overflow files -> raw_events, parse new rows         1 s
aggregate      closed turns, ended sessions -> traces + outbox      1 s
sweep          sessions quiet for the TTL -> finalised              30 s
deliver        due outbox rows -> sinks (leases, retries)           1 s
maintenance    retention, quarantine retention, WAL checkpoint      600 s
=============  ===================================================  ==========

A job that did work wakes the next one at once (ingest -> aggregate ->
deliver), so a trace leaves about a second after its Stop arrives rather than
after three intervals.  Jobs never overlap themselves (``max_instances=1``,
``coalesce=True``); an exception in a job is logged, recorded in the
``errors`` table as ``job:<name>`` (what ``spool errors`` shows; the same
message at most once a minute) and never stops the scheduler.

One worker per spool: the worker holds an exclusive ``flock`` on
``SPOOL_HOME/worker.lock`` (the same lock the hook probes, see
``spool/hook.py`` ``start_worker``) and writes its pid into that file.  The
hook takes the lock itself and hands the locked descriptor over
(``--lock-fd N``), so racing hooks start exactly one worker.  A second
``spool worker`` reports the holder and exits 0.  ``--once`` takes no lock:
everything it does is safe beside a running worker (leases, ``BEGIN
IMMEDIATE``).

``--idle-exit S``: the worker exits once nothing has been due within S seconds
for S seconds (due: a raw event not parsed, an overflow file, a closed turn to
trace, a session whose finalisation - TTL, or grace after SessionEnd - falls in
the window, an outbox row pending or in flight, a failed row whose next attempt
falls in the window).  Held rows and later retries are not work: the next hook
or command starts a worker.  Whatever the idle setting, it exits at once when
the database file it opened is removed or replaced (checked every second by
device and inode: SPOOL_HOME deleted or recreated).  On the way out it releases the lock and then
looks once more: a hook that found the lock taken had already committed its
event, so new work seen then means the worker takes the lock back (or leaves
it to the worker a hook just started) - no event waits for the next hook.

Graceful stop: SIGTERM / SIGINT set a ``threading.Event`` the main thread
waits on; the scheduler stops, the deliver job's backoff waits on that same
event and returns, running jobs get ``SPOOL_STOP_GRACE`` seconds to finish,
then any row still leased by this worker is released (due again now) and the
process exits.  A request stuck in a sink cannot hold the exit: its row's ack
is conditional on the lease, so at worst the next worker sends it again under
the same idempotency key.

Logs go to ``SPOOL_HOME/worker.log`` (rotating, 0600).

Modules: ``jobs`` (the jobs and the scheduler running them), ``idle`` (is there
work, is the database still there), ``settings`` (intervals, stop grace, the
rollouts switch), ``rollouts`` (the optional import job), ``lock`` (the worker
lock), ``process`` (log file, signals); this one: the entry points.

Environment:

==========================  ====================================================
SPOOL_IMPORT_ROLLOUTS       true: run the rollouts job (false)
SPOOL_INTERVAL_ROLLOUTS     seconds between rollouts scans (60)
SPOOL_INTERVAL_INGEST       seconds between ingest runs (1)
SPOOL_INTERVAL_AGGREGATE    seconds between aggregate runs (1)
SPOOL_INTERVAL_SWEEP        seconds between stale-session sweeps (30)
SPOOL_INTERVAL_DELIVER      seconds between deliver runs (1)
SPOOL_INTERVAL_MAINTENANCE  seconds between maintenance runs (600)
SPOOL_STOP_GRACE            seconds running jobs get to finish on stop (3)
SPOOL_WORKER_IDLE_EXIT      --idle-exit the hooks pass to the worker they start
                            (120; read by spool/hook.py)
SPOOL_NO_AUTOSTART          1: hooks never start a worker (spool/hook.py)
SPOOL_RETENTION_DAYS        see spool/maintenance.py (30)
SPOOL_QUARANTINE_DAYS       see spool/maintenance.py (30)
==========================  ====================================================
"""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable, Mapping

from .. import db, paths, problems
from ..errors import SpoolError
from .idle import db_identity, is_idle, nothing_due
from .jobs import DELIVER_BATCH, JOBS, IngestDone, Worker, did_work, new_owner
from .settings import Intervals, import_rollouts, stop_grace
from .lock import WorkerLock, holder_pid, lock_is_held, lock_path
from .process import configure_logging, install_signal_handlers

log = logging.getLogger("spool.worker")

BUSY_PID_WAIT_S = 1.0  # a worker that lost the lock race waits this long to name the winner

__all__ = ["DELIVER_BATCH", "JOBS", "Intervals", "IngestDone", "Worker", "WorkerLock",
           "configure_logging", "did_work", "holder_pid", "install_signal_handlers",
           "db_identity", "import_rollouts", "is_idle", "lock_is_held", "lock_path", "new_owner", "nothing_due",
           "run_once", "run_worker",
           "stop_grace"]


def _prepare(home: Path | None) -> Path:
    """The spool home made (0700), the umask, the log file; a home the worker cannot
    write is one SpoolError line, not an OSError traceback."""
    home = home or paths.spool_home()
    try:
        paths.ensure_home(home)
        os.umask(0o077)
        configure_logging(home)
    except OSError as exc:
        raise SpoolError(f"the worker cannot use the spool home {home} "
                         f"({exc.strerror or exc}).",
                         "Set SPOOL_HOME to a directory you can write (or fix the permissions "
                         "of this one).") from None
    return home


def run_worker(home: Path | None = None, *, idle_exit: float | None = None,
               lock_fd: int | None = None, env: Mapping[str, str] | None = None,
               stop: threading.Event | None = None,
               on_busy: Callable[[int | None], None] | None = None,
               on_start: Callable[[Path], None] | None = None,
               signals: bool = True) -> tuple[int, Worker | None]:
    """Take the lock (or adopt the hook's), open the database, serve.

    Returns (exit code, the worker or None when another worker holds the lock or the
    database was removed while it started).
    ``on_busy(pid)`` is called when another worker runs, ``on_start(log path)``
    once this one runs.
    """
    home = _prepare(home)
    lock = WorkerLock.adopt(home, lock_fd) if lock_fd is not None else None
    if lock is None:
        if lock_fd is not None:
            log.warning("--lock-fd %d is not this spool's worker lock; taking it myself", lock_fd)
        lock = WorkerLock.acquire(home)
    if lock is None:
        # The holder writes its pid right after taking the lock: a worker racing
        # it to the lock can look before that, so give it a moment to appear.
        deadline = time.monotonic() + BUSY_PID_WAIT_S
        while (pid := holder_pid(home)) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        log.info("another worker holds the lock (pid %s)", pid or "unknown")
        if on_busy:
            on_busy(pid)
        return 0, None
    lock.write_pid()
    stop = stop or threading.Event()
    if signals and threading.current_thread() is threading.main_thread():
        install_signal_handlers(stop)
    try:
        engine = db.open_db(home)
    except Exception as exc:
        lock.release()
        if not paths.db_path(home).exists():  # removed (rm -rf SPOOL_HOME) as it started
            log.warning("the database %s was removed while starting: exiting",
                        paths.db_path(home))
            return 0, None
        log.error("cannot open the database: %s", exc)
        raise
    worker = Worker(engine, home, env=env, stop=stop)
    if on_start:
        on_start(home / paths.WORKER_LOG)
    try:
        code = worker.serve(idle_exit=idle_exit, lock=lock)
    except SpoolError as exc:  # a bad setting: say so where `spool errors` looks too
        log.error("worker cannot run: %s", exc)
        try:
            problems.log_error(engine, "worker", str(exc))
        except Exception:
            pass
        raise
    finally:
        lock.release()
        if worker.running_jobs == 0:
            engine.dispose()
    return code, worker


def run_once(home: Path | None = None, *, now: float | None = None,
             env: Mapping[str, str] | None = None) -> dict[str, bool]:
    """``spool worker --once``: every job once, in flow order, no lock."""
    home = _prepare(home)
    engine = db.open_db(home)
    worker = Worker(engine, home, env=env)
    try:
        return worker.run_once(now)
    finally:
        worker.close()
        engine.dispose()
