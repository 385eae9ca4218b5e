"""The worker's jobs and the scheduler running them (see spool/worker/__init__.py)."""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Mapping

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine, text

from .. import aggregate, db, deliver, ingest, maintenance, outbox, paths, problems
from ..deliver import DeliverResult
from . import rollouts
from .idle import NEW_EVENTS, db_identity, nothing_due
from .lock import WorkerLock
from .settings import Intervals, import_rollouts, stop_grace

log = logging.getLogger("spool.worker")

# "rollouts" is optional (settings.import_rollouts): scheduled only when switched on.
JOBS = ("rollouts", "ingest", "aggregate", "sweep", "deliver", "maintenance")
# Which job a job wakes when it did some work.
_NEXT = {"rollouts": "aggregate", "ingest": "aggregate", "aggregate": "deliver",
         "sweep": "deliver"}
ERROR_REPEAT_S = 60.0
MAINTENANCE_DELAY_S = 10.0  # first maintenance run after start
DELIVER_BATCH = 50  # rows per pass (a batching sink: up to one full request, spool.batches);
#                    a full pass wakes deliver again at once


@dataclass
class IngestDone:
    """What the ingest job did (``waiting``: there were events or files to ingest)."""

    overflow_files: int = 0
    overflow_events: int = 0
    quarantined: int = 0
    waiting: bool = False


def new_owner() -> str:
    """A lease owner id unique to this worker run."""
    return f"worker-{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _open_quiet(path: Path) -> int | None:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


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
        # The database file this worker opened, held open: while a descriptor is held its
        # inode cannot be freed and handed to a new database made at the same path (which
        # would then look like the same file).  None: it was gone already.
        self._db_fd = _open_quiet(paths.db_path(home))
        self.db_id = None
        if self._db_fd is not None:  # the file held, not whatever the path names by now
            st = os.fstat(self._db_fd)
            self.db_id = (st.st_dev, st.st_ino)

    # The jobs.

    def job_rollouts(self, now: float | None = None) -> rollouts.ScanDone | None:
        if not import_rollouts(self.env):
            return None
        now = self.clock() if now is None else now
        # Hook events not parsed yet name no session: parse them first, so that a session
        # the hooks reported is known as theirs.
        ingest.ingest_all(self.engine, self.home, now)
        return rollouts.scan(self.engine, now, env=self.env, stop=self.stop)

    def job_ingest(self, now: float | None = None) -> IngestDone:
        # ingest_all reports no parse count: whether there was something to parse
        # (events or overflow files) is what wakes the aggregate job at once.
        waiting = bool(ingest.overflow_files(self.home))
        if not waiting:
            with db.read(self.engine) as conn:
                waiting = bool(conn.execute(text(f"SELECT {NEW_EVENTS}")).scalar())
        result = ingest.ingest_all(self.engine, self.home, self.clock() if now is None else now)
        return IngestDone(overflow_files=result.files, overflow_events=result.events,
                          quarantined=result.quarantined, waiting=waiting)

    def job_aggregate(self, now: float | None = None):
        return aggregate.aggregate(self.engine, self.clock() if now is None else now,
                                   env=self.env)

    def job_sweep(self, now: float | None = None):
        return aggregate.sweep(self.engine, self.clock() if now is None else now, env=self.env)

    def job_deliver(self, now: float | None = None) -> DeliverResult:
        return self._get_dispatcher().run_once(self.clock() if now is None else now,
                                               limit=DELIVER_BATCH, full_batches=True,
                                               rounds=deliver.ROUNDS, stop=self.stop)

    def job_maintenance(self, now: float | None = None):
        return maintenance.maintain(self.engine, self.clock() if now is None else now,
                                    env=self.env, log_dirs=ingest.overflow_dirs(self.home))

    def _get_dispatcher(self) -> deliver.Dispatcher:
        """The dispatcher (pooled sinks, cached credentials) for the worker's life."""
        with self._dispatcher_lock:
            if self._dispatcher is None:
                self._dispatcher = deliver.Dispatcher(self.engine, owner=self.owner,
                                                      env=self.env)
            return self._dispatcher

    def close(self) -> None:
        fd, self._db_fd = self._db_fd, None
        if fd is not None:
            os.close(fd)
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
            if isinstance(result, DeliverResult) and result.claimed >= DELIVER_BATCH:
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
            problems.log_error(self.engine, f"job:{name}",
                               message + (f" (and {repeated} more times)" if repeated else ""))
        except Exception:
            log.exception("could not record the error of job %s", name)

    def _wake(self, name: str | None) -> None:
        sched = self.scheduler
        if name is None or sched is None or self.stop.is_set():
            return
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
        return outbox.release_leases(self.engine, self.owner,
                                     self.clock() if now is None else now)

    # The two ways to run.

    def run_once(self, now: float | None = None, jobs=JOBS) -> dict[str, bool]:
        """Every job once, in flow order.  {job: ok}."""
        return {name: self.run_job(name, now)[0] for name in jobs}

    def serve(self, *, intervals: Intervals | None = None, idle_exit: float | None = None,
              lock: WorkerLock | None = None, grace: float | None = None) -> int:
        """Run the scheduler until stopped (``self.stop``) or idle.  Returns 0."""
        intervals = intervals or Intervals.from_env(self.env)
        grace = stop_grace(self.env) if grace is None else grace
        sched = BackgroundScheduler(
            timezone=timezone.utc,
            executors={"default": ThreadPoolExecutor(max_workers=len(JOBS) + 1)},
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None})
        start = datetime.now(timezone.utc)
        for name in JOBS:
            if name == "rollouts" and not import_rollouts(self.env):
                continue  # off (the default)
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

    def _home_gone(self) -> bool:
        """The database file this worker opened was removed or replaced (SPOOL_HOME
        deleted, moved, recreated), or was gone when it started: it must not go on with
        an unlinked file."""
        return self.db_id is None or db_identity(self.home) != self.db_id

    def _idle(self, window: float) -> bool:
        return self.running_jobs == 0 and nothing_due(self.engine, self.home, self.clock(),
                                                      window, self.env)

    def _wait(self, idle_exit: float | None, lock: WorkerLock | None) -> None:
        """The main thread: wait on the stop event, checking now and then that the
        database is still there and whether anything is due within the idle window."""
        poll = 1.0 if idle_exit is None else min(1.0, max(0.05, idle_exit / 4))
        idle_since: float | None = None
        while not self.stop.wait(poll):
            if self._home_gone():
                log.warning("the database %s was removed or replaced: exiting",
                            paths.db_path(self.home))
                return
            if idle_exit is None:
                continue
            try:
                idle = self._idle(idle_exit)
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
                still_idle = self._idle(idle_exit)
            except Exception:
                still_idle = True
            if still_idle:
                log.info("idle for %.1f s (nothing due within %g s): exiting",
                         mono - idle_since, idle_exit)
                return
            if lock is not None and not lock.take_back(self.home):
                log.info("new work arrived; another worker took over")
                return
            log.info("new work arrived while exiting: carrying on")
            idle_since = None


def did_work(result: object) -> bool:
    """Whether a job's result says it did something (a count, a dataclass of counts, ...)."""
    if result is None:
        return False
    if isinstance(result, DeliverResult):
        return bool(result.claimed or result.held)
    if isinstance(result, IngestDone):
        return bool(result.waiting or result.overflow_files or result.quarantined)
    if isinstance(result, rollouts.ScanDone):  # files left waiting are not work done
        return bool(result.events)
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
