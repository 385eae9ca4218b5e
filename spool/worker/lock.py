"""The worker lock: an exclusive ``flock`` on SPOOL_HOME/worker.lock holding the pid.

One worker per spool holds it (the hook probes it, takes it and hands it over
with ``--lock-fd``: see spool/hook.py ``start_worker``); ``holder_pid`` and
``lock_is_held`` look without taking it.
"""
from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from .. import paths


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

    def take_back(self, home: Path) -> bool:
        """After ``release``: take the lock again (pid written); False if another
        process took it meanwhile."""
        again = WorkerLock.acquire(home)
        if again is None:
            return False
        again.write_pid()
        self.fd, self.path = again.fd, again.path
        return True

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
    from ..lockfile import holder

    return holder(lock_path(home or paths.spool_home()))[0]
