"""`spool ui`: a local, read-only viewer of sessions, timelines, usage and delivery."""
from __future__ import annotations

from typing import Optional

import typer

from ..app import app, friendly
from ..errors import SpoolError


@app.command()
@friendly
def ui(
    port: Optional[int] = typer.Option(None, "--port", "-p", min=1, max=65535,
                                       help="Port on 127.0.0.1 (default: a free one)."),
    no_browser: bool = typer.Option(False, "--no-browser",
                                    help="Only print the URL; do not open a browser."),
) -> None:
    """Serve a read-only web view of the spool on 127.0.0.1 until Ctrl-C.

    The URL it prints carries a random token made at each start; requests without it
    are refused (403).  Pages: sessions, a session, a turn's timeline, usage, delivery.
    Everything shown is redacted as the sinks redact it.
    """
    from .. import db
    from ..ui.server import UIServer

    engine = db.open_db()
    try:
        server = UIServer(engine, port or 0)
    except OSError as exc:
        engine.dispose()
        raise SpoolError(f"cannot listen on 127.0.0.1:{port} ({exc.strerror or exc}).",
                         "Pass another --port, or none for a free one.") from None
    typer.echo(f"spool ui: {server.url}  (Ctrl-C to stop)")
    if not no_browser:
        import webbrowser

        try:
            webbrowser.open(server.url)
        except Exception:  # noqa: BLE001 - no browser is fine: the URL is printed
            pass
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        typer.echo("spool ui: stopped", err=True)
    finally:
        server.server_close()
        engine.dispose()
