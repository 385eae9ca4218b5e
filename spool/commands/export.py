"""`spool export SESSION_ID`: one session as an ATIF trajectory, or spool's own JSON."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from ..app import app, friendly
from ..errors import SpoolError


class Format(str, Enum):
    atif = "atif"
    json = "json"
    html = "html"


@app.command()
@friendly
def export(
    session_id: str = typer.Argument(..., metavar="SESSION_ID",
                                     help="A Codex session id, or a unique prefix of one."),
    fmt: Format = typer.Option(Format.atif, "--format", "-f",
                               help="atif: one ATIF-v1.8 trajectory (Harbor); json: spool's "
                                    "own trace model of the session's traces; html: the "
                                    "`spool ui` session view as one self-contained file."),
    output: Optional[Path] = typer.Option(None, "--output", "-o",
                                          help="Write to FILE (0600, atomically) instead of "
                                               "stdout."),
    full: bool = typer.Option(False, "--full",
                              help="ATIF: complete prompts, messages and tool outputs from the "
                                   "rollout file instead of spool's previews."),
) -> None:
    """Export one session: the latest revision of each of its traces.

    ATIF keys: schema_version, session_id (the Codex session id), agent {name,
    version, model_name}, steps (user / agent / system), notes, final_metrics,
    extra.spool.  JSON keys: schema, session_id, state, traces (trace bodies).
    Secrets are redacted in both.
    """
    from .. import db, export as exporting, files

    engine = db.open_db()
    try:
        if fmt is Format.atif:
            doc = exporting.atif_document(engine, session_id, full=full)
        elif fmt is Format.json:
            doc = exporting.json_document(engine, session_id)
        else:
            doc = None
            data = exporting.html_document(engine, session_id).encode()
    finally:
        engine.dispose()
    if doc is not None:
        data = exporting.dumps(doc)
    if output is None:
        typer.echo(data.decode(), nl=False)
        return
    target = output.expanduser()
    if not target.parent.is_dir():
        raise SpoolError(f"the directory of {output} does not exist.",
                         "Create it first, or pass another --output.")
    try:
        files.write_atomic(target, data)
    except OSError as exc:
        raise SpoolError(f"cannot write {output} ({exc.strerror or exc}).",
                         "Pass a writable --output path.") from None
    typer.echo(f"wrote {target} ({len(data)} bytes)", err=True)
