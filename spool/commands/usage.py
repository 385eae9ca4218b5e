"""`spool usage` in the Typer app: help text and options; the work is spool/usage_cmd.py
(which the console script also runs directly, without Typer: see spool/entry.py)."""
from __future__ import annotations

from typing import Optional

import typer

from ..app import app, friendly


@app.command()
@friendly
def usage(
    by: str = typer.Option("day", "--by", metavar="day|month|session|model",
                           help="Group rows by local day, local month, session or model."),
    since: Optional[str] = typer.Option(None, "--since", metavar="YYYY-MM-DD",
                                        help="First day to count (local time)."),
    until: Optional[str] = typer.Option(None, "--until", metavar="YYYY-MM-DD",
                                        help="Last day to count (local time, inclusive)."),
    project: Optional[str] = typer.Option(None, "--project", metavar="PATH",
                                          help="Only this project (its root directory)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Token usage and cost in USD, one row per group, and the totals.

    Input includes cached tokens and output includes reasoning tokens (as
    OpenAI counts them); each model request is counted once. A cost marked *
    is partial: some requests had no known price (their models are listed);
    n/a: none had. JSON: {"by", "rows": [...], "totals", "unpriced_models"},
    each row with keys key, requests, input, cached, cache_write, output,
    reasoning, total, cost_usd (null when unknown), unpriced, models.
    """
    import sys

    from ..usage_cmd import Options, run

    run(Options(by, since, until, project, as_json), sys.stdout)
