"""The worker: an APScheduler 3.x scheduler running spool's jobs, one per spool.

Jobs, in flow order (``spool worker --once`` runs each exactly once, in this
order; the scheduler runs each on its own interval):

=============  ===================================================  ==========
job            what it does                                         interval
=============  ===================================================  ==========
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

``--idle-exit S``: the worker exits once nothing has been open, pending or
held for S seconds (open: a session not final, a turn not traced, a raw event
not parsed, an overflow file; pending: outbox rows pending, in flight or
failed; held: outbox rows held).  On the way out it releases the lock and then
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

Environment:

==========================  ====================================================
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

import errno
import fcntl
import logging
import logging.handlers
import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Mapping

from sqlalchemy import Engine, text

from . import db, paths
from .errors import SpoolError

log = logging.getLogger("spool.worker")

JOBS = ("ingest", "aggregate", "sweep", "deliver", "maintenance")
# Which job a job wakes when it did some work.
_NEXT = {"ingest": "aggregate", "aggregate": "deliver", "sweep": "deliver"}
ERROR_REPEAT_S = 60.0
MAINTENANCE_DELAY_S = 10.0  # first maintenance run after start
DELIVER_BATCH = 50  # rows per deliver pass; a full batch wakes deliver again at once
LOG_MAX_BYTES = 1_000_000
LOG_BACKUPS = 3
BUSY_PID_WAIT_S = 1.0  # a worker that lost the lock race waits this long to name the winner


# --- configuration ---------------------------------------------------------------


def _env_seconds(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    from .config import env_number

    return env_number(env, name, default, minimum=minimum, unit="seconds")


@dataclass(frozen=True)
class Intervals:
    """Seconds between runs of each job."""

    ingest: float = 1.0
    aggregate: float = 1.0
    sweep: float = 30.0
    deliver: float = 1.0
    maintenance: float = 600.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Intervals":
        env = os.environ if env is None else env
        return cls(**{f.name: _env_seconds(env, f"SPOOL_INTERVAL_{f.name.upper()}", f.default,
                                           0.05) for f in fields(cls)})


def stop_grace(env: Mapping[str, str] | None = None) -> float:
    return _env_seconds(os.environ if env is None else env, "SPOOL_STOP_GRACE", 3.0, 0.0)


# --- the lock --------------------------------------------------------------------


def lock_path(home: Path) -> Path:
    return home / paths.WORKER_LOCK


class WorkerLock:
    """The exclusive flock on SPOOL_HOME/worker.lock that makes a worker *the* worker."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd: int | None = fd

    @classmethod
    def acquire(cls, home: Path) -> "WorkerLock | None":
        """Take the lock without blocking; None if another process holds it."""
        paths.ensure_home(home)
        path = lock_path(home)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise
        return cls(path, fd)

    @classmethod
    def adopt(cls, home: Path, fd: int) -> "WorkerLock | None":
        """The lock the hook took and handed over as descriptor ``fd``.

        Checked, not trusted: ``fd`` must be open on this spool's lock file and
        hold the lock (flock on the same open file description succeeds; on a
        description that does not hold it, it fails while the holder lives).
        None when it is not (the caller then takes the lock itself).
        """
        path = lock_path(home)
        try:
            st_fd = os.fstat(fd)
            st_path = os.stat(path)
        except OSError:
            return None
        if (st_fd.st_dev, st_fd.st_ino) != (st_path.st_dev, st_path.st_ino):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return None
        os.set_inheritable(fd, False)
        return cls(path, fd)

    def write_pid(self, pid: int | None = None) -> None:
        assert self.fd is not None
        data = b"%d\n" % (os.getpid() if pid is None else pid)
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def release(self) -> None:
        """Clear the pid and drop the lock (closing the descriptor releases it)."""
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        os.close(fd)

    @property
    def held(self) -> bool:
        return self.fd is not None


def holder_pid(home: Path | None = None) -> int | None:
    """The pid written in the lock file, if that process is alive (else None).

    Reads only: never touches the lock itself, so it cannot make a racing hook
    believe a worker runs.  (The worker clears the pid when it exits; a worker
    killed with SIGKILL leaves its pid, which is ignored once the process is gone.)
    """
    try:
        raw = lock_path(home or paths.spool_home()).read_bytes()
    except OSError:
        return None
    try:
        pid = int(raw.strip() or b"0")
    except ValueError:
        return None
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def lock_is_held(home: Path | None = None) -> bool:
    """True if some process holds the worker lock (looked up without taking it)."""
    from .lockfile import holder

    return holder(lock_path(home or paths.spool_home()))[0]


# --- logging ------------------------------------------------------------------------


def configure_logging(home: Path, level: int = logging.INFO) -> logging.Handler:
    """Send the ``spool`` loggers to SPOOL_HOME/worker.log (rotating, 0600)."""
    paths.ensure_home(home)
    path = home / paths.WORKER_LOG
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    paths.secure_file(path)
    root = logging.getLogger("spool")
    for h in list(root.handlers):
        if getattr(h, "_spool_worker_log", None) == str(path):
            return h
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8")
    handler._spool_worker_log = str(path)  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)
    aps = logging.getLogger("apscheduler")
    aps.addHandler(handler)
    # "skipped: maximum number of running instances reached" every second while
    # a long delivery runs is expected (max_instances=1), not news.
    aps.setLevel(logging.ERROR)
    return handler


# --- idleness -------------------------------------------------------------------------

_BUSY_SQL = text(
    "SELECT EXISTS(SELECT 1 FROM raw_events WHERE status = 'new')"
    " OR EXISTS(SELECT 1 FROM sessions WHERE state != 'final')"
    " OR EXISTS(SELECT 1 FROM turns WHERE state != 'traced')"
    " OR EXISTS(SELECT 1 FROM outbox WHERE state IN ('pending', 'in_flight', 'failed', 'held'))"
)


def is_idle(engine: Engine, home: Path | None = None) -> bool:
    """Nothing open, pending or held, and no overflow file waiting."""
    from .ingest import overflow_files

    if overflow_files(home):
        return False
    with db.read(engine) as conn:
        return not conn.execute(_BUSY_SQL).scalar()


# --- the jobs -----------------------------------------------------------------------


def new_owner() -> str:
    """A lease owner id unique to this worker run."""
    return f"worker-{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Worker:
    """The jobs, with what they share: engine, home, lease owner, stop event.

    Each ``job_*`` method runs one pass at ``now`` (default: the clock) and
    returns a truthy value when it did some work.  ``run_job`` is the safe
    wrapper the scheduler calls.
    """

    def __init__(self, engine: Engine, home: Path, *, env: Mapping[str, str] | None = None,
                 stop: threading.Event | None = None, owner: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.home = home
        self.env = env
        self.stop = stop or threading.Event()
        self.owner = owner or new_owner()
        self.clock = clock
        self.scheduler = None  # set by serve(): used to wake the next job
        self._dispatcher = None
        self._dispatcher_lock = threading.Lock()
        self._running = 0
        self._running_cond = threading.Condition()
        self._last_error: dict[str, tuple[str, float, int]] = {}

    # The jobs.  Imports are lazy: the modules are independent of the worker.

    def job_ingest(self, now: float | None = None):
        from .ingest import ingest_overflow, parse_new

        now = self.clock() if now is None else now
        result = ingest_overflow(self.engine, self.home, now)
        out = {"overflow_files": result.files, "overflow_events": result.events,
               "parsed": 0, "quarantined": result.quarantined}
        while not self.stop.is_set():
            ok, bad = parse_new(self.engine, now)
            out["parsed"] += ok
            out["quarantined"] += bad
            if ok + bad == 0:
                break
        return out

    def job_aggregate(self, now: float | None = None):
        from . import aggregate

        return aggregate.aggregate(self.engine, self.clock() if now is None else now,
                                   env=self.env)

    def job_sweep(self, now: float | None = None):
        from . import aggregate

        return aggregate.sweep(self.engine, self.clock() if now is None else now, env=self.env)

    def job_deliver(self, now: float | None = None):
        now = self.clock() if now is None else now
        dispatcher = self._get_dispatcher()
        if dispatcher is not None:
            return dispatcher.run_once(now, limit=DELIVER_BATCH, stop=self.stop)
        from . import deliver

        return deliver.deliver(self.engine, now, owner=self.owner, stop=self.stop)

    def job_maintenance(self, now: float | None = None):
        from . import maintenance

        from .ingest import overflow_dirs

        return maintenance.maintain(self.engine, self.clock() if now is None else now,
                                    env=self.env, log_dirs=overflow_dirs(self.home))

    def _get_dispatcher(self):
        """deliver.Dispatcher (pooled sinks for the worker's life) when it exists."""
        with self._dispatcher_lock:
            if self._dispatcher is None:
                from . import deliver

                cls = getattr(deliver, "Dispatcher", None)
                if cls is None:
                    return None
                self._dispatcher = cls(self.engine, owner=self.owner, env=self.env)
            return self._dispatcher

    def close(self) -> None:
        with self._dispatcher_lock:
            d, self._dispatcher = self._dispatcher, None
        if d is not None:
            try:
                d.close()
            except Exception:  # closing connections must not stop the exit
                log.exception("closing the dispatcher")

    # Running jobs safely.

    def run_job(self, name: str, now: float | None = None) -> tuple[bool, object]:
        """Run one job; (ok, result).  Never raises: failures are logged and recorded."""
        if self.stop.is_set() and self.scheduler is not None:
            return True, None  # stopping: start nothing new
        with self._running_cond:
            self._running += 1
        started = time.monotonic()
        try:
            result = getattr(self, f"job_{name}")(now)
        except Exception as exc:  # one job's failure never stops the others
            self._record_error(name, exc)
            return False, None
        finally:
            with self._running_cond:
                self._running -= 1
                self._running_cond.notify_all()
        took = time.monotonic() - started
        if did_work(result):
            log.info("%s: %s (%.0f ms)", name, _describe(result), took * 1000)
            self._wake(_NEXT.get(name))
            if name == "deliver" and getattr(result, "claimed", 0) >= DELIVER_BATCH:
                self._wake("deliver")  # a backlog: the next batch now, not in a second
        return True, result

    def _record_error(self, name: str, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        now = time.monotonic()
        last = self._last_error.get(name)
        if last and last[0] == message and now - last[1] < ERROR_REPEAT_S:
            self._last_error[name] = (last[0], last[1], last[2] + 1)
            log.debug("job %s failed again: %s", name, message)
            return
        repeated = last[2] if last and last[0] == message else 0
        self._last_error[name] = (message, now, 0)
        log.error("job %s failed: %s", name, message, exc_info=exc)
        try:
            from .ingest import log_error

            log_error(self.engine, f"job:{name}",
                      message + (f" (and {repeated} more times)" if repeated else ""))
        except Exception:
            log.exception("could not record the error of job %s", name)

    def _wake(self, name: str | None) -> None:
        sched = self.scheduler
        if name is None or sched is None or self.stop.is_set():
            return
        from datetime import datetime, timezone

        try:
            sched.modify_job(name, next_run_time=datetime.now(timezone.utc))
        except Exception:  # shutting down, or the job is gone: the interval will do
            pass

    def wait_jobs(self, timeout: float) -> bool:
        """Wait until no job runs (True) or ``timeout`` passed (False)."""
        deadline = time.monotonic() + timeout
        with self._running_cond:
            while self._running:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._running_cond.wait(left)
        return True

    @property
    def running_jobs(self) -> int:
        with self._running_cond:
            return self._running

    def release_leases(self, now: float | None = None) -> int:
        """Make rows still leased by this worker due again now (on stop)."""
        now = self.clock() if now is None else now
        try:
            from . import deliver

            release = getattr(deliver, "release_leases", None)
        except Exception:
            release = None
        if release is not None:
            return release(self.engine, self.owner, now)
        # As spool.deliver releases the rows a stopped pass did not send: due
        # now, 'failed' if it was tried before (keeps its attempt history).
        with db.write(self.engine) as conn:
            return conn.execute(text(
                "UPDATE outbox SET state = CASE WHEN attempts > 0 THEN 'failed' ELSE 'pending'"
                " END, lease_owner = NULL, lease_until = NULL, next_attempt_at = :now,"
                " updated_at = :now WHERE state = 'in_flight' AND lease_owner = :owner"),
                {"now": now, "owner": self.owner}).rowcount

    # The two ways to run.

    def run_once(self, now: float | None = None, jobs=JOBS) -> dict[str, bool]:
        """Every job once, in flow order.  {job: ok}."""
        return {name: self.run_job(name, now)[0] for name in jobs}

    def serve(self, *, intervals: Intervals | None = None, idle_exit: float | None = None,
              lock: WorkerLock | None = None, grace: float | None = None) -> int:
        """Run the scheduler until stopped (``self.stop``) or idle.  Returns 0."""
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.background import BackgroundScheduler
        from datetime import datetime, timedelta, timezone

        intervals = intervals or Intervals.from_env(self.env)
        grace = stop_grace(self.env) if grace is None else grace
        sched = BackgroundScheduler(
            timezone=timezone.utc,
            executors={"default": ThreadPoolExecutor(max_workers=len(JOBS) + 1)},
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None})
        start = datetime.now(timezone.utc)
        for name in JOBS:
            first = start
            if name == "maintenance":  # let the start-up burst of real work go first
                first = start + timedelta(seconds=min(MAINTENANCE_DELAY_S, intervals.maintenance))
            sched.add_job(self.run_job, "interval", args=[name], id=name, name=name,
                          seconds=getattr(intervals, name), next_run_time=first)
        self.scheduler = sched
        sched.start()
        log.info("worker %d running (owner %s, idle-exit %s)", os.getpid(), self.owner,
                 idle_exit)
        try:
            self._wait(idle_exit, lock)
        finally:
            self.stop.set()
            try:
                sched.shutdown(wait=False)
            except Exception:
                pass
            finished = self.wait_jobs(grace)
            try:
                released = self.release_leases()
                if released:
                    log.info("released %d leased rows", released)
            except Exception:
                log.exception("could not release leases")
            if finished:
                self.close()
            else:
                log.warning("%d job(s) still running after %.1f s; leaving them",
                            self.running_jobs, grace)
            if lock is not None:
                lock.release()
            log.info("worker %d stopped", os.getpid())
        return 0

    def _wait(self, idle_exit: float | None, lock: WorkerLock | None) -> None:
        """The main thread: wait on the stop event, checking idleness now and then."""
        if idle_exit is None:
            self.stop.wait()
            return
        poll = min(1.0, max(0.05, idle_exit / 4))
        idle_since: float | None = None
        while not self.stop.wait(poll):
            try:
                idle = self.running_jobs == 0 and is_idle(self.engine, self.home)
            except Exception as exc:
                log.warning("idle check failed: %s", exc)
                idle = False
            mono = time.monotonic()
            if not idle:
                idle_since = None
                continue
            if idle_since is None:
                idle_since = mono
            if mono - idle_since < idle_exit:
                continue
            # Idle long enough.  Let go of the lock first, then look once more:
            # a hook that saw the lock taken had already committed its event.
            if lock is not None:
                lock.release()
            try:
                still_idle = is_idle(self.engine, self.home)
            except Exception:
                still_idle = True
            if still_idle:
                log.info("idle for %.1f s: exiting", mono - idle_since)
                return
            if lock is not None:
                again = WorkerLock.acquire(self.home)
                if again is None:
                    log.info("new work arrived; another worker took over")
                    return
                again.write_pid()
                lock.fd, lock.path = again.fd, again.path
            log.info("new work arrived while exiting: carrying on")
            idle_since = None


def did_work(result: object) -> bool:
    """Whether a job's result says it did something (a count, a dataclass of counts, ...)."""
    if result is None:
        return False
    if hasattr(result, "claimed") and hasattr(result, "held"):  # deliver.DeliverResult
        return bool(result.claimed or result.held)
    if hasattr(result, "__dataclass_fields__"):
        return any(isinstance(v, (int, float)) and not isinstance(v, bool) and v
                   or isinstance(v, (list, tuple, dict, set)) and v
                   for v in (getattr(result, f) for f in result.__dataclass_fields__))
    if isinstance(result, dict):  # maintenance: the checkpoint runs every time, not "work"
        return any(bool(v) for k, v in result.items() if not str(k).startswith("checkpoint"))
    if isinstance(result, (tuple, list)):
        return any(did_work(v) if not isinstance(v, (int, float)) else bool(v) for v in result)
    return bool(result)


def _describe(result: object) -> str:
    if hasattr(result, "__dataclass_fields__"):
        items = ((f, getattr(result, f)) for f in result.__dataclass_fields__)
    elif isinstance(result, dict):
        items = result.items()
    else:
        return str(result)[:200]
    return ", ".join(f"{k}={v}" for k, v in items
                     if isinstance(v, (int, float)) and not isinstance(v, bool) and v) or "-"


# --- entry points -------------------------------------------------------------------


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGTERM/SIGINT set ``stop`` (main thread only)."""

    def handler(signum, _frame):
        log.info("signal %d: stopping", signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def run_worker(home: Path | None = None, *, idle_exit: float | None = None,
               lock_fd: int | None = None, env: Mapping[str, str] | None = None,
               stop: threading.Event | None = None,
               on_busy: Callable[[int | None], None] | None = None,
               on_start: Callable[[Path], None] | None = None,
               signals: bool = True) -> tuple[int, Worker | None]:
    """Take the lock (or adopt the hook's), open the database, serve.

    Returns (exit code, the worker or None when another worker holds the lock).
    ``on_busy(pid)`` is called when another worker runs, ``on_start(log path)``
    once this one runs.
    """
    home = paths.ensure_home(home or paths.spool_home())
    os.umask(0o077)
    configure_logging(home)
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
        log.error("cannot open the database: %s", exc)
        lock.release()
        raise
    worker = Worker(engine, home, env=env, stop=stop)
    if on_start:
        on_start(home / paths.WORKER_LOG)
    try:
        code = worker.serve(idle_exit=idle_exit, lock=lock)
    except SpoolError as exc:  # a bad setting: say so where `spool errors` looks too
        log.error("worker cannot run: %s", exc)
        try:
            from .ingest import log_error

            log_error(engine, "worker", str(exc))
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
    home = paths.ensure_home(home or paths.spool_home())
    os.umask(0o077)
    configure_logging(home)
    engine = db.open_db(home)
    worker = Worker(engine, home, env=env)
    try:
        return worker.run_once(now)
    finally:
        worker.close()
        engine.dispose()
