"""What a command works on: the project, the database, the traces named, the sinks.

Only the standard library at module level (imported by `spool --help`);
SQLAlchemy loads when the database is opened.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, List, Optional

from ..errors import SpoolError, UsageError


def project_dir(project: Optional[Path], walk_up: bool) -> Path:
    """``--project`` (an existing directory), else the cwd, or with ``walk_up`` the
    directory above the cwd holding .spool/config.json."""
    from .. import config

    start = Path(project or os.getcwd()).expanduser()
    if not start.is_dir():
        raise SpoolError(f"{start} is not a directory.", "Pass --project with an existing directory.")
    start = start.resolve()
    if walk_up and project is None:
        return config.find_project(start) or start
    return start


def project_here(cwd: Path | None = None) -> Path:
    """The project the cwd belongs to: the directory holding .spool/config.json
    (walking up), else the cwd itself."""
    from ..config import find_project

    cwd = Path(cwd or os.getcwd()).resolve()
    return find_project(cwd) or cwd


SQLITE_MAX_INT = 2**63 - 1


def parse_limit(value: str, flag: str = "--limit") -> int:
    """An integer >= 1, or a UsageError (exit 2) saying so."""
    try:
        n = int(str(value).strip())
    except ValueError:
        raise UsageError(f"{flag} {value!r} is not a whole number.",
                         f"Pass {flag} 1 or more, e.g. {flag} 20.") from None
    if n < 1:
        raise UsageError(f"{flag} must be at least 1 (got {n}).",
                         f"Pass {flag} 1 or more, e.g. {flag} 20.")
    return min(n, SQLITE_MAX_INT)  # more than any table holds: all rows (SQLite's LIMIT is 64-bit)


def codex_meta(project: Path) -> dict:
    """What `spool init` stored under ``codex`` in .spool/config.json ({} if unreadable)."""
    from .. import config

    try:
        meta = config.read_file(project).get("codex") or {}
    except SpoolError:
        return {}
    return meta if isinstance(meta, dict) else {}


def remembered_codex(project: Path, codex_home: Optional[Path],
                     codex_bin: Optional[str]) -> tuple[Optional[Path], Optional[str]]:
    """``--codex-home`` / ``--codex-bin`` as given, else what `spool init` stored for
    this project in .spool/config.json (``codex.codex_home`` / ``codex.codex_bin``)."""
    meta = codex_meta(project)
    if codex_home is None and meta.get("codex_home"):
        codex_home = Path(meta["codex_home"])
    if codex_bin is None and meta.get("codex_bin"):
        codex_bin = str(meta["codex_bin"])
    return codex_home, codex_bin


def parse_since(value: str) -> float:
    """``--since``: an age (30m, 2h, 7d, 1w) or a date/time (2026-11-29, 2026-11-29T10:00,
    local time) as epoch seconds; a UsageError (exit 2) otherwise."""
    import re
    import time
    from datetime import datetime

    v = str(value).strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", v)
    if m:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}[m.group(2)]
        return time.time() - float(m.group(1)) * unit
    try:
        when = datetime.fromisoformat(v)
    except ValueError:
        raise UsageError(f"--since {value!r} is neither an age nor a date.",
                         "Pass e.g. --since 2h, --since 7d or --since 2026-11-29.") from None
    try:
        return when.timestamp()
    except (ValueError, OverflowError, OSError):  # 0001-01-01 or 9999-12-31 in local time
        return 0.0 if when.year < 1970 else 253402300799.0


def open_engine():
    from .. import db

    return db.open_db()


@contextmanager
def database(write: bool = False) -> Iterator[Any]:
    """One command's look at the database: a read (or write) transaction on a
    fresh engine, disposed of afterwards."""
    from .. import db

    eng = open_engine()
    try:
        with (db.write if write else db.read)(eng) as conn:
            yield conn
    finally:
        eng.dispose()


def resolve_ids(conn, ids: List[str]) -> list[str]:
    """Full trace ids for ids or unique prefixes; a SpoolError for none or several."""
    from .. import queries

    out = []
    for given in ids:
        found = queries.resolve_trace_id(conn, given)
        if isinstance(found, str):
            out.append(found)
        elif not found:
            raise SpoolError(f"no trace with id {given!r}.",
                             "Run `spool history` to see trace ids.")
        else:
            raise SpoolError(f"{given!r} matches several traces ({', '.join(found)}).",
                             "Give more characters of the id.")
    return out


def sink_target(s, row) -> str:
    """Where ``s`` sends ``row``: the URL (Infinium, OTLP), the directory (file, ATIF),
    or the sink's name."""
    if hasattr(s, "config_for"):
        cfg = s.config_for(row)
        if getattr(cfg, "endpoint", None):  # OTLP
            return str(cfg.endpoint)
        if getattr(cfg, "base_url", None):  # Infinium
            return f"{cfg.base_url.rstrip('/')}/agents/{cfg.agent_id or '<agent id>'}/trace"
    if hasattr(s, "directory_for"):  # file
        return str(s.directory_for(row))
    if callable(getattr(s, "directory", None)):  # ATIF
        return str(s.directory())
    return str(s.name)


def configured_sinks(project: Path) -> tuple[list[str], dict]:
    """(the sink names this project's config sends to, every known sink by name).

    An unknown configured name is a SpoolError naming it and the known ones."""
    from .. import config
    from ..sinks import default_sinks

    cfg = config.load(project)
    known = default_sinks()
    names = list(cfg.effective_sinks())
    unknown = [n for n in names if n not in known]
    if unknown:
        where = "SPOOL_SINKS" if os.environ.get("SPOOL_SINKS") else f"sinks in {cfg.source}"
        for s in known.values():
            s.close()
        raise SpoolError(f"unknown sink {unknown[0]!r} in {where}.",
                         f"Known sinks: {', '.join(sorted(known))}.")
    return names, known
