"""`spool usage`: tokens and cost per day, month, session or model.

Answered by SQL over ``usage_hours`` (spool/usage.py), so it takes as long on a
year of history as on a day of it, beyond the rows it prints.  Only typer and
the standard library load at import time (``spool --help`` imports this).
"""
from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from contextlib import contextmanager
from typing import Optional

import typer

from ..cli import app, friendly
from ..errors import SpoolError

BY = ("day", "month", "session", "model")


def _bad(message: str) -> None:
    """A malformed command line: one line on stderr, exit 2."""
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(2)


def _date(value: str | None, flag: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        _bad(f"{flag} {value!r} is not a date. Pass YYYY-MM-DD, e.g. {flag} 2026-11-01.")


@contextmanager
def _connection():
    """A read-only sqlite3 connection to the spool, without SQLAlchemy (it is most of a
    command's start-up).  A spool without the usage tables yet (new, or not
    upgraded) is created/upgraded through spool.db first, as every command does."""
    import sqlite3

    from .. import paths

    path = paths.db_path()
    for attempt in (0, 1):
        if path.exists():
            quoted = str(path).replace("%", "%25").replace("?", "%3f").replace("#", "%23")
            con = sqlite3.connect(f"file:{quoted}?mode=ro", uri=True, timeout=5.0)
            try:
                con.execute("SELECT 1 FROM usage_hours LIMIT 0")
            except sqlite3.OperationalError:
                con.close()
            else:
                try:
                    yield con
                finally:
                    con.close()
                return
        if attempt == 0:
            from .. import db

            db.open_db().dispose()  # create or upgrade; refuses a newer or corrupt spool
    raise SpoolError("The spool database has no usage table after upgrading.",
                     "Run `spool doctor` and check the spool home.")


def _tokens(n: int) -> str:
    return f"{n:,}"


def _usd(row: dict) -> str:
    if row["cost_usd"] is None:
        return "n/a"
    mark = "*" if row["unpriced"] else ""
    v = row["cost_usd"]
    return (f"${v:,.2f}" if v >= 1 else f"${v:.4f}") + mark


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
    n/a: none had. JSON: {"by", "rows": [...], "totals", "unpriced_models"}, each row with keys
    key, requests, input, cached, cache_write, output, reasoning, total,
    cost_usd (null when unknown), unpriced, models.
    """
    from .. import usage as usage_mod

    if by not in BY:
        _bad(f"--by {by!r} is not one of {', '.join(BY)}. Pass e.g. --by day.")
    lo, hi = _date(since, "--since"), _date(until, "--until")
    if lo and hi and lo > hi:
        _bad(f"--since {lo} is after --until {hi}. Swap them.")
    proj = str(Path(project).expanduser().resolve()) if project else None
    with _connection() as con:
        rep = usage_mod.report(con, by, lo, hi, proj)
    if as_json:
        typer.echo(json.dumps(rep, indent=2, sort_keys=True))
        return
    if not rep["rows"]:
        typer.echo("No model requests recorded" + (" in that range." if lo or hi else " yet."))
        return
    _print_table(rep)


def _print_table(rep: dict) -> None:
    import sys

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"usage by {rep['by']}", title_justify="left", pad_edge=False,
                  padding=(0, 1))
    # A session id (36 characters) folds onto two lines rather than push the table past 80.
    table.add_column(rep["by"], overflow="fold", no_wrap=rep["by"] in ("day", "month"))
    for c in ("input", "cached", "output", "reasoning", "cost"):
        table.add_column(c, justify="right", no_wrap=True)
    table.add_column("models", overflow="fold")
    for r in rep["rows"] + [rep["totals"]]:
        table.add_row(str(r["key"]), _tokens(r["input"]), _tokens(r["cached"]),
                      _tokens(r["output"]), _tokens(r["reasoning"]), _usd(r),
                      ", ".join(r["models"]), end_section=r is rep["rows"][-1])
    Console(width=min(Console().width, 80) if sys.stdout.isatty() else 80).print(table)
    t = rep["totals"]
    if t["unpriced"]:
        typer.echo(f"* partial: {t['unpriced']} request(s) not priced "
                   f"(no price for model {', '.join(rep['unpriced_models']) or '(none named)'}).")
