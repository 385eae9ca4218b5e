"""spool commands: worker (see spool/worker.py for what it runs)."""
from __future__ import annotations

import os
import sys
from typing import Optional

import typer

from ..app import app


@app.command()
def worker(
    once: bool = typer.Option(False, "--once",
                              help="Run every job once, in flow order, and exit (no lock "
                                   "needed; safe beside a running worker)."),
    idle_exit: Optional[float] = typer.Option(
        None, "--idle-exit", min=0, metavar="SECONDS",
        help="Exit once nothing has been open, pending or held for SECONDS."),
    lock_fd: Optional[int] = typer.Option(None, "--lock-fd", hidden=True,
                                          help="A descriptor holding the worker lock (the hook "
                                               "hands it over)."),
    now: Optional[float] = typer.Option(None, "--now", hidden=True,
                                        help="With --once: the clock (epoch seconds), for tests."),
) -> None:
    """Run the worker: ingest, aggregate, sweep, deliver, maintenance.

    One worker runs per spool; the hooks start one when needed (unless
    SPOOL_NO_AUTOSTART=1).  A second `spool worker` says which one runs and exits.
    """
    from .. import worker as w
    from ..errors import SpoolError

    if now is not None and not once:
        raise SpoolError("--now only applies with --once.", "Add --once or drop --now.")
    if once:
        results = w.run_once(now=now)
        failed = [name for name, ok in results.items() if not ok]
        if failed:
            typer.echo(f"spool worker --once: job(s) failed: {', '.join(failed)}; "
                       "see `spool errors`.", err=True)
            raise typer.Exit(1)
        return

    def busy(pid: int | None) -> None:
        who = f"pid {pid}" if pid else "a process that just started it"
        typer.echo(f"A spool worker is already running ({who}); nothing to do.")

    def started(log_path) -> None:
        if lock_fd is None and sys.stderr.isatty():
            typer.echo(f"spool worker running (pid {os.getpid()}), logging to {log_path}; "
                       "Ctrl-C stops it.", err=True)

    code, wk = w.run_worker(idle_exit=idle_exit, lock_fd=lock_fd, on_busy=busy,
                            on_start=started)
    if wk is not None and wk.running_jobs:
        # A job is stuck in a request past the stop grace: its lease was released,
        # so leave at once rather than wait for interpreter shutdown to join it.
        import logging

        logging.shutdown()
        os._exit(code)
    raise typer.Exit(code)
