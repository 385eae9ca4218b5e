"""The worker process's edges: its log file and its signals."""
from __future__ import annotations

import logging
import logging.handlers
import os
import signal
import threading
from pathlib import Path

from .. import paths

log = logging.getLogger("spool.worker")

LOG_MAX_BYTES = 1_000_000
LOG_BACKUPS = 3


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


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGTERM/SIGINT set ``stop`` (main thread only)."""

    def handler(signum, _frame):
        log.info("signal %d: stopping", signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)
