"""Is a worker running (is its lock held, and by whom) - without touching the lock.

``worker_state(home)`` is spool's one answer to "is a worker running"; every
command asks it.  (spool/hook.py, stdlib only and on the hot path, takes the
lock itself to start a worker: that is acquiring, not asking.)

Probing with a non-blocking ``flock`` takes the lock for an instant, and a hook
that looks at that very instant would decide a worker runs and start none.  On
Linux ``/proc/locks`` lists every ``flock`` with the inode it covers, so we can
look without taking anything; elsewhere we fall back to the probe.
Standard library only.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple


class WorkerState(NamedTuple):
    running: bool
    pid: int | None  # what the worker wrote into the lock file (or /proc/locks says)


def _proc_locks_holder(path: Path) -> tuple[bool, int | None] | None:
    try:
        st = os.stat(path)
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF" (blocked waiters carry "->")
        parts = line.split()
        if "->" in parts:
            continue
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5].lower() == dev:
            try:
                return True, int(parts[4])
            except ValueError:
                return True, None
    return False, None


def _probe(path: Path) -> bool:
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def _pid_in_file(path: Path) -> int | None:
    try:
        return int(path.read_text("ascii", "replace").split()[0])
    except (OSError, ValueError, IndexError):
        return None


def holder(path: Path) -> tuple[bool, int | None]:
    """(held, pid) for the flock on ``path``; pid from /proc/locks or the file."""
    if not path.exists():
        return False, None
    found = _proc_locks_holder(path)
    if found is None:
        held = _probe(path)
        return held, (_pid_in_file(path) if held else None)
    held, pid = found
    if not held:
        return False, None
    return True, _pid_in_file(path) or pid


def worker_state(home: Path) -> WorkerState:
    """Is a worker running for the spool in ``home``?  Running only if someone
    actually holds SPOOL_HOME/worker.lock (looked up in /proc/locks without
    taking it, so a hook starting a worker at that very moment is never misled)."""
    from .paths import WORKER_LOCK

    return WorkerState(*holder(Path(home) / WORKER_LOCK))
