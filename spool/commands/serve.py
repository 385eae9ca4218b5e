"""`spool start`: server mode - the worker plus an HTTP ingest endpoint."""
from __future__ import annotations

import typer

from ..app import app


@app.command()
def start(
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8787, min=0, max=65535, help="Port to bind (0: any free port)."),
) -> None:
    """Run the worker and an HTTP ingest endpoint (POST /hooks/codex, GET /health).

    A bearer token is generated at start and printed once; every ingest
    request must send `Authorization: Bearer <token>`.  Stop with Ctrl-C.
    """
    import ipaddress

    from .. import paths, worker
    from ..errors import SpoolError
    from ..server import INGEST_PATH, IngestServer

    home = paths.ensure_home()
    try:
        srv = IngestServer(host, port, home=home)
    except OSError as exc:
        import errno
        import socket

        if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            fix = "Pass an address of this machine with --host, e.g. --host 127.0.0.1."
        else:
            fix = "Choose another --port, or stop what is using it."
        raise SpoolError(f"cannot listen on {host}:{port}: {exc.strerror or exc}.", fix) from None
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    srv.start()
    typer.echo(f"spool ingest listening on {srv.url}{INGEST_PATH}")
    typer.echo(f"token (send as 'Authorization: Bearer <token>'): {srv.token}")
    if not loopback:
        typer.echo("warning: not a loopback address - the token travels in plain HTTP; "
                   "put TLS in front of it.", err=True)

    busy_seen = []

    def busy(pid):
        busy_seen.append(pid)
        typer.echo(f"another worker is running (pid {pid or 'unknown'}); "
                   "it processes what this endpoint stores.")

    try:
        code, w = worker.run_worker(home, on_busy=busy)
        if busy_seen:  # the other worker does the processing; keep ingesting until stopped
            import signal
            import threading

            stop = threading.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: stop.set())
            stop.wait()
    finally:
        srv.stop()
    raise typer.Exit(code)
