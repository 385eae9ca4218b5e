"""The worker lock is looked up without being taken."""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys

from spool.lockfile import WorkerState, _probe, holder, worker_state


def test_holder_sees_a_lock_held_by_another_process(tmp_path):
    path = tmp_path / "worker.lock"
    path.write_text("")
    assert holder(path) == (False, None)
    assert worker_state(tmp_path) == WorkerState(running=False, pid=None)
    code = ("import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.pwrite(fd, str(os.getpid()).encode(), 0)\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        assert holder(path) == (True, proc.pid)
        # the one "is a worker running" answer every command gives reads this lock
        assert worker_state(tmp_path) == WorkerState(running=True, pid=proc.pid)
        assert _probe(path) is True
        # looking did not take the lock: an exclusive non-blocking attempt still fails
        fd = os.open(path, os.O_RDWR)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                raise AssertionError("the lock was free")
            except BlockingIOError:
                pass
        finally:
            os.close(fd)
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
    assert holder(path) == (False, None)


def test_missing_file_is_not_held(tmp_path):
    assert holder(tmp_path / "nope.lock") == (False, None)


def test_worker_state_without_a_spool_home_is_not_running(tmp_path):
    assert worker_state(tmp_path / "no-such-home") == WorkerState(False, None)
