"""`spool usage`: its options, checks, the read-only look and the output.

The console script (spool/entry.py) runs ``fast_main`` for ``spool usage``
without Typer, so the report answers in about the time Python takes to start
(scripts/bench_usage.py times it against ccusage); ``--help`` and any line it
does not parse go to the Typer app (spool/commands/usage.py, which calls
``run``).  The SQL is spool/usage.py's.  Imports stay inside the functions
that need them: tests/test_usage_cli.py checks what the command loads.
"""
from __future__ import annotations

import os
import sys

from .errors import SpoolError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from datetime import date

BY = ("day", "month", "session", "model")


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
        day = date.fromisoformat(value.strip())
    except ValueError:
        raise UsageError(f"{flag} {value!r} is not a date.",
                         f"Pass YYYY-MM-DD, e.g. {flag} 2026-11-01.") from None
    # No usage lies outside these; the ends of `date`'s range overflow in local time.
    return min(max(day, date(1970, 1, 1)), date(9998, 12, 31))


def check(o: Options) -> tuple[date | None, date | None, str | None]:
    """(since, until, project path) from the options, or UsageError."""
    if o.by not in BY:
        raise UsageError(f"--by {o.by!r} is not one of {', '.join(BY)}.", "Pass e.g. --by day.")
    lo, hi = _date(o.since, "--since"), _date(o.until, "--until")
    if lo and hi and lo > hi:
        raise UsageError(f"--since {lo} is after --until {hi}.", "Swap them.")
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

    path = paths.db_file()
    for attempt in (0, 1):
        if os.path.exists(path):
            quoted = path.replace("%", "%25").replace("?", "%3f").replace("#", "%23")
            uris = [f"file:{quoted}?mode=ro"]
            if not os.access(os.path.dirname(path), os.W_OK):  # read-only home: no -shm there
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
    """Print the report (raises SpoolError; UsageError for a bad option value)."""
    from . import usage

    out = out or sys.stdout
    lo, hi, proj = check(o)
    con = connect()
    try:
        # One read snapshot: the rollup's zone (kv) and its rows are read together.
        con.execute("BEGIN")
        rep = usage.report(con, o.by, lo, hi, proj)
    finally:
        con.close()
    if o.as_json:
        out.write(json_text(rep))
    elif not rep["rows"]:
        out.write("No model requests recorded" + (" in that range.\n" if lo or hi else " yet.\n"))
    else:
        _print_table(rep, out)


def json_text(rep: dict) -> str:
    """The report as one JSON object, keys sorted, a row per line (pure).  Each
    part goes through json's C encoder: ``indent=2`` would run its pure-Python
    one, three times slower on 180 rows; one encoder for all (``json.dumps`` with
    an option makes a new one per call)."""
    import json

    dumps = json.JSONEncoder(sort_keys=True).encode

    rows = ",\n    ".join(dumps(r) for r in rep["rows"])
    return (f'{{\n  "by": {dumps(rep["by"])},\n'
            f'  "rows": [{f"{chr(10)}    {rows}{chr(10)}  " if rows else ""}],\n'
            f'  "totals": {dumps(rep["totals"])},\n'
            f'  "unpriced_models": {dumps(rep["unpriced_models"])}\n}}\n')


def _tokens(n: int) -> str:
    return f"{n:,}"


def _usd(row: dict) -> str:
    if row["cost_usd"] is None:
        return "n/a"
    v = row["cost_usd"]
    return (f"${v:,.2f}" if v >= 1 else f"${v:.4f}") + ("*" if row["unpriced"] else "")


def _fold(text: str, width: int) -> list[str]:
    return [text[i:i + width] for i in range(0, len(text), width)] or [""]


def _fold_list(items: list[str], width: int) -> list[str]:
    """``items`` joined by ", " in lines of ``width``, breaking between items."""
    lines = [""]
    for i, item in enumerate(items):
        item += "," if i < len(items) - 1 else ""
        if lines[-1] and len(lines[-1]) + 1 + len(item) <= width:
            lines[-1] += " " + item
        elif not lines[-1]:
            lines[-1:] = _fold(item, width)
        else:
            lines += _fold(item, width)
    return lines


def table_lines(rep: dict, width: int = 80) -> list[str]:
    """The report as a plain table of at most ``width`` columns (pure).

    Written out rather than with rich: rich spent ~250 ms of CPU laying out 180
    rows, ten times the whole `--json` answer.  The numbers keep their width; the
    group key (a 36-character session id) and the models fold onto more lines.
    """
    heads = (rep["by"], "input", "cached", "output", "reasoning", "cost", "models")
    rows = [(str(r["key"]), _tokens(r["input"]), _tokens(r["cached"]), _tokens(r["output"]),
             _tokens(r["reasoning"]), _usd(r), r["models"])
            for r in rep["rows"] + [rep["totals"]]]
    w = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(heads[:6])]
    w.append(max(len(heads[6]), *(len(", ".join(r[6])) for r in rows)))
    rest = width - sum(w[1:6]) - 2 * 6 - 1  # two spaces between columns, one at the start
    if w[0] + w[6] > rest:
        w[6] = min(w[6], max(6, rest // 3))
        w[0] = max(4, rest - w[6])

    def line(cells) -> list[str]:
        key = _fold(cells[0], w[0])
        models = [cells[6]] if isinstance(cells[6], str) else _fold_list(cells[6], w[6])
        out = []
        for i in range(max(len(key), len(models))):
            nums = cells[1:6] if i == 0 else ("",) * 5
            out.append(" " + "  ".join([(key[i] if i < len(key) else "").ljust(w[0])]
                                       + [n.rjust(x) for n, x in zip(nums, w[1:6])]
                                       + [models[i] if i < len(models) else ""]).rstrip())
        return out

    rule = " " + "\u2500" * (sum(w) + 2 * 6)
    body = [f"usage by {rep['by']}", ""] + line(heads) + [rule]
    for r in rows[:-1]:
        body += line(r)
    return body + [rule] + line(rows[-1])


def _print_table(rep: dict, out) -> None:
    width = 80
    if hasattr(out, "isatty") and out.isatty():
        try:
            width = min(width, os.get_terminal_size(out.fileno()).columns)
        except (OSError, ValueError):
            pass
    out.write("\n".join(table_lines(rep, width)) + "\n")
    t = rep["totals"]
    if t["unpriced"]:
        out.write(f"* partial: {t['unpriced']} request(s) not priced "
                  f"(no price for model {', '.join(rep['unpriced_models']) or '(none named)'}).\n")


# The options `spool usage` takes: spool/commands/usage.py declares the same ones
# for Typer (with their help).  tests/test_usage_cli.py proves the two sides
# accept the same options and answer every command line alike (output, errors,
# exit code).
VALUE_OPTIONS = {"--by": "by", "--since": "since", "--until": "until", "--project": "project"}
FLAG_OPTIONS = {"--json": "as_json"}


def parse(argv: list[str]) -> Options | None:
    """The options (as Click reads them: ``--by day`` or ``--by=day``, the last one
    wins), or None for any other line (``--help``, an unknown option, a missing
    value): Typer then answers it, help or error, as for every command."""
    o = Options()
    i = 0
    while i < len(argv):
        a = argv[i]
        name, eq, value = a.partition("=")
        if a in FLAG_OPTIONS:
            setattr(o, FLAG_OPTIONS[a], True)
        elif name in VALUE_OPTIONS and eq:
            setattr(o, VALUE_OPTIONS[name], value)
        elif a in VALUE_OPTIONS and i + 1 < len(argv):
            setattr(o, VALUE_OPTIONS[a], argv[i + 1])
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
    except SpoolError as exc:  # as spool.app.friendly prints it under Typer
        sys.stderr.write(f"Error: {exc.reason} {exc.instruction}".rstrip() + "\n")
        return getattr(exc, "exit_code", 1)
    return 0
