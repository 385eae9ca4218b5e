"""Real `spool worker` processes in tests: find, start and always kill them (the
``workers`` fixture in conftest.py wraps ``Workers``)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent  # the repository


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def worker_pids(home: Path) -> set[int]:
    """Live `spool worker` processes (not --once) whose SPOOL_HOME is ``home``."""
    want = b"SPOOL_HOME=" + os.fsencode(str(home))
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        argv = _read(f"/proc/{entry}/cmdline").split(b"\0")
        if b"spool" not in argv or b"worker" not in argv or b"--once" in argv:
            continue
        if want not in _read(f"/proc/{entry}/environ").split(b"\0"):
            continue
        stat = _read(f"/proc/{entry}/stat")
        if b") Z" in stat:  # a zombie is not a worker
            continue
        found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    stat = _read(f"/proc/{pid}/stat")
    return bool(stat) and b") Z" not in stat


class Workers:
    """Starts worker processes and kills every worker of the spool home at the end."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.procs: list[subprocess.Popen] = []

    def env(self, **extra: str) -> dict:
        env = dict(os.environ)
        env.update(extra)
        return env

    def start(self, *args: str, env: dict | None = None) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "spool", "worker", *args],
                                cwd=ROOT, env=env or self.env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        self.procs.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.communicate(timeout=10)
            except Exception:
                pass
        for pid in worker_pids(self.home):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

