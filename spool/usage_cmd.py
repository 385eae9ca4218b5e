"""The `spool usage` command without Typer: checks, the read-only look, the table.

Typer (and the pydantic it imports) is most of a command's start-up, and this
report is meant to answer in about the time Python takes to start, so the
console script (spool/entry.py) runs ``fast_main`` for ``spool usage`` and only
falls back to the Typer app (spool/commands/usage.py, which calls ``run``) for
``--help`` or anything it does not parse.  The SQL is spool/usage.py's.
"""
from __future__ import annotations

import os
import sys

from .errors import SpoolError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from datetime import date

BY = ("day", "month", "session", "model")


class BadUsage(Exception):
    """A malformed command line (exit 2): the message says what to pass."""


class Options:
    """The command line's values (a plain class: ``dataclasses`` costs start-up time)."""

    def __init__(self, by: str = "day", since: str | None = None, until: str | None = None,
                 project: str | None = None, as_json: bool = False) -> None:
        self.by, self.since, self.until, self.project, self.as_json = (
            by, since, until, project, as_json)


def _date(value: str | None, flag: str) -> date | None:
    if value is None:
        return None
    from datetime import date

    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise BadUsage(f"{flag} {value!r} is not a date. "
                       f"Pass YYYY-MM-DD, e.g. {flag} 2026-11-01.") from None


def check(o: Options) -> tuple[date | None, date | None, str | None]:
    """(since, until, project path) from the options, or BadUsage."""
    if o.by not in BY:
        raise BadUsage(f"--by {o.by!r} is not one of {', '.join(BY)}. Pass e.g. --by day.")
    lo, hi = _date(o.since, "--since"), _date(o.until, "--until")
    if lo and hi and lo > hi:
        raise BadUsage(f"--since {lo} is after --until {hi}. Swap them.")
    if not o.project:
        return lo, hi, None
    from pathlib import Path

    return lo, hi, str(Path(o.project).expanduser().resolve())


def connect():
    """A read-only sqlite3 connection to the spool (the caller closes it), without
    SQLAlchemy.  A spool without the usage tables yet (new, or not upgraded) is
    created/upgraded through spool.db first, as every command does."""
    import sqlite3

    from . import paths

    path = paths.db_path()
    for attempt in (0, 1):
        if path.exists():
            quoted = str(path).replace("%", "%25").replace("?", "%3f").replace("#", "%23")
            uris = [f"file:{quoted}?mode=ro"]
            if not os.access(path.parent, os.W_OK):  # a read-only home: no -shm file there
                uris.append(uris[0] + "&immutable=1")
            for uri in uris:
                con = sqlite3.connect(uri, uri=True, timeout=5.0)
                try:
                    con.execute("SELECT 1 FROM usage_hours LIMIT 0")
                except sqlite3.DatabaseError:
                    con.close()
                else:
                    return con
        if attempt == 0:
            from . import db

            db.open_db().dispose()  # create or upgrade; refuses a newer or corrupt spool
    raise SpoolError("The spool database has no usage table after upgrading.",
                     "Run `spool doctor` and check the spool home.")


def run(o: Options, out=None) -> None:
    """Print the report (raises BadUsage or SpoolError)."""
    from . import usage

    out = out or sys.stdout
    lo, hi, proj = check(o)
    con = connect()
    try:
        rep = usage.report(con, o.by, lo, hi, proj)
    finally:
        con.close()
    if o.as_json:
        import json

        out.write(json.dumps(rep, indent=2, sort_keys=True) + "\n")
    elif not rep["rows"]:
        out.write("No model requests recorded" + (" in that range.\n" if lo or hi else " yet.\n"))
    else:
        _print_table(rep, out)


def _tokens(n: int) -> str:
    return f"{n:,}"


def _usd(row: dict) -> str:
    if row["cost_usd"] is None:
        return "n/a"
    v = row["cost_usd"]
    return (f"${v:,.2f}" if v >= 1 else f"${v:.4f}") + ("*" if row["unpriced"] else "")


def _print_table(rep: dict, out) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"usage by {rep['by']}", title_justify="left", box=box.SIMPLE_HEAD,
                  pad_edge=False, padding=(0, 1))
    # A session id (36 characters) folds onto two lines rather than push the table past 80.
    table.add_column(rep["by"], overflow="fold", no_wrap=rep["by"] in ("day", "month"))
    for c in ("input", "cached", "output", "reasoning", "cost"):
        table.add_column(c, justify="right", no_wrap=True)
    table.add_column("models", overflow="fold", min_width=6)
    for r in rep["rows"] + [rep["totals"]]:
        table.add_row(str(r["key"]), _tokens(r["input"]), _tokens(r["cached"]),
                      _tokens(r["output"]), _tokens(r["reasoning"]), _usd(r),
                      ", ".join(r["models"]), end_section=r is rep["rows"][-1])
    tty = out.isatty() if hasattr(out, "isatty") else False
    Console(file=out, width=min(Console().width, 80) if tty else 80).print(table)
    t = rep["totals"]
    if t["unpriced"]:
        out.write(f"* partial: {t['unpriced']} request(s) not priced "
                  f"(no price for model {', '.join(rep['unpriced_models']) or '(none named)'}).\n")


def parse(argv: list[str]) -> Options | None:
    """The options, or None for anything but the plain flags (e.g. --help): Typer then."""
    o = Options()
    flags = {"--by": "by", "--since": "since", "--until": "until", "--project": "project"}
    i = 0
    while i < len(argv):
        a = argv[i]
        name, eq, value = a.partition("=")
        if a == "--json":
            o.as_json = True
        elif name in flags and eq:
            setattr(o, flags[name], value)
        elif a in flags and i + 1 < len(argv):
            setattr(o, flags[a], argv[i + 1])
            i += 1
        else:
            return None
        i += 1
    return o


def fast_main(argv: list[str]) -> int | None:
    """Run `spool usage ARGV` without Typer; None when Typer should handle the line."""
    o = parse(argv)
    if o is None:
        return None
    try:
        run(o)
    except BadUsage as exc:
        sys.stderr.write(f"Error: {exc}\n")
        return 2
    except SpoolError as exc:
        sys.stderr.write(f"Error: {exc.reason} {exc.instruction}".rstrip() + "\n")
        return 1
    return 0
