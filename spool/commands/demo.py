"""`spool demo`: the README's main job."""
from __future__ import annotations

import typer

from ..app import app


@app.command()
def demo(keep: bool = typer.Option(False, "--keep", help="Keep the temporary spool home."),
         timeout: float = typer.Option(90.0, min=1, help="Seconds to wait for delivery.")) -> None:
    """See spool work end to end, offline: a recorded Codex session, delivered and listed.

    Replays a bundled real Codex session through real hook processes into a
    temporary spool, lets the worker deliver to an embedded loopback receiver
    speaking the Infinium API, and prints `spool history`.  No network, no
    credentials, no Codex needed.  Exits 0 only if every trace arrived."""
    from ..demo import run

    raise typer.Exit(run(typer.echo, keep=keep, timeout=timeout))
