"""How commands print: JSON, rich tables, short ids and times.

Only typer and the standard library at module level (imported by
`spool --help`); rich loads when a table is printed.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable

import typer


def print_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


def rich_console():
    """Rich console; piped output (not a terminal) gets 140 columns instead of rich's
    80, so tables stay readable in logs and CI (COLUMNS still wins)."""
    import sys

    from rich.console import Console

    if not sys.stdout.isatty() and not os.environ.get("COLUMNS"):
        return Console(width=140)
    return Console()


def fmt_time(epoch: float | None) -> str:
    from ..timeline import fmt_time as _fmt

    return _fmt(epoch)


def fmt_when(epoch: float | None) -> str:
    """A time for an 80-column table: "09:55:02" today, else "Nov 28" (JSON keeps
    the full epoch, `spool show` the full time)."""
    if epoch is None:
        return "-"
    import time

    t = time.localtime(epoch)
    today = time.localtime()[:3] == t[:3]
    return time.strftime("%H:%M:%S" if today else "%b %d", t)


def short(s: str | None, n: int = 12) -> str:
    return "" if s is None else (s if len(s) <= n else s[:n])


FREE_TEXT = ("name", "message", "last error", "project", "", "session / project")


def table(title: str, columns: list[str], rows: list[list[Any]]):
    from rich.table import Table

    t = Table(title=title, title_justify="left", show_lines=False, show_edge=False,
              show_header=any(columns))  # status: a key/value table, no empty header row
    for c in columns:
        # Ids, times and states never wrap or shrink; free text (names, messages) folds.
        free = c in FREE_TEXT
        t.add_column(c, overflow="fold" if free else "ellipsis", no_wrap=not free)
    for r in rows:
        t.add_row(*["" if v is None else str(v) for v in r])
    return t


def print_rows(rows: list[dict], as_json: bool, empty: str, title: str, columns: list[str],
               cells: Callable[[dict], list[Any]]) -> None:
    """A list command's output: the rows as JSON, ``empty`` when there are none,
    else a table with one line of ``cells(row)`` per row."""
    if as_json:
        print_json(rows)
    elif not rows:
        typer.echo(empty)
    else:
        rich_console().print(table(title, columns, [cells(r) for r in rows]))


def report(title: str, done: list[str], nothing: str) -> None:
    """What a setup command did, one line each (or that there was nothing to do)."""
    typer.echo(title)
    for line in done:
        typer.echo(f"  - {line}")
    if not done:
        typer.echo(f"  {nothing}")


def fmt_usd(usd: float | None, partial: bool = False) -> str:
    """A cost for a table cell: ``$0.0123`` (``$1.23`` from a dollar), ``*`` when some
    requests were not priced, ``n/a`` when none was (never $0)."""
    if usd is None:
        return "n/a"
    return (f"${usd:,.2f}" if usd >= 1 else f"${usd:.4f}") + ("*" if partial else "")
