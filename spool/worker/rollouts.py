"""The optional rollouts job: new rollout files of sessions no hook reported (IDE and
app sessions, Codex runs in projects without spool's hooks), imported through
``spool.backfill.run``, the entry point of ``spool import``.

Off by default: ``SPOOL_IMPORT_ROLLOUTS=true`` switches it on (every
``SPOOL_INTERVAL_ROLLOUTS`` seconds, 60; spool/worker/settings.py).  Each scan looks
under ``$CODEX_HOME/sessions`` and ``archived_sessions`` (``backfill.default_roots``)
for rollout files changed since the previous scan began (mtime, or ctime: a file
moved into ``archived_sessions`` keeps its mtime), plus the files it left waiting:

* a file written to less than ``settle`` seconds ago (``backfill.SETTLE_SECONDS``)
  may still grow: it is not read, and waits for a later scan;
* a session any hook reported is left to the hooks, whole (``hookless``): the
  job never adds turns to a hooked session (``spool import`` does, explicitly).
  The worker parses waiting hook events first (``Worker.job_rollouts``), so the
  hooks' sessions are known;
* the rest is imported; dedup keys make a second import of a file insert nothing,
  and a file that grew again (a resumed session) brings only its new turns.

At most ``max_bytes`` of rollouts per scan (the rest waits for the next one), and
the scan stops between files when the worker stops.  Its state is one ``kv`` row,
``import:scan`` (JSON: when the last scan began, the paths waiting).
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from sqlalchemy import Engine, text

from .. import backfill, db

STATE_KEY = "import:scan"
MAX_BYTES = 256 << 20  # of rollouts read by one scan


@dataclass
class ScanDone:
    """What one scan did (``waiting``: files left for a later scan)."""

    files: int = 0
    turns: int = 0
    events: int = 0
    hooked: int = 0  # turns of sessions the hooks reported, left to them
    waiting: int = 0


def _changed(st: os.stat_result) -> float:
    return max(st.st_mtime, st.st_ctime)


def _candidates(roots: Iterable[Path], since: float | None,
                waiting: Iterable[str]) -> list[tuple[Path, os.stat_result]]:
    """Rollout files changed at or after ``since`` (all when None), and the waiting
    ones still there, oldest change first."""
    waiting = set(waiting)
    found: dict[Path, os.stat_result] = {}
    for path in [Path(p) for p in sorted(waiting)] + list(backfill.discover(roots)):
        if path in found:
            continue
        try:
            st = path.stat()
        except OSError:
            continue  # gone (or unreadable: `spool import` reports those)
        if since is None or _changed(st) >= since or str(path) in waiting:
            found[path] = st
    return sorted(found.items(), key=lambda kv: _changed(kv[1]))


def _load(engine: Engine) -> tuple[float | None, list[str]]:
    with db.read(engine) as conn:
        value = conn.execute(text("SELECT value FROM kv WHERE key = :k"),
                             {"k": STATE_KEY}).scalar()
    try:
        state = json.loads(value) if value else {}
        at = state.get("at")
        return (float(at) if at is not None else None,
                [str(p) for p in state.get("waiting") or ()])
    except (ValueError, TypeError, AttributeError):
        return None, []  # unreadable: scan everything again (dedup keys hold)


def _save(engine: Engine, at: float, waiting: list[str]) -> None:
    with db.write(engine) as conn:
        conn.execute(text("INSERT INTO kv (key, value) VALUES (:k, :v)"
                          " ON CONFLICT(key) DO UPDATE SET value = excluded.value"),
                     {"k": STATE_KEY, "v": json.dumps({"at": at, "waiting": waiting})})


def scan(engine: Engine, now: float, *, env: Mapping[str, str] | None = None,
         roots: list[Path] | None = None, settle: float = backfill.SETTLE_SECONDS,
         max_bytes: int = MAX_BYTES, stop: threading.Event | None = None) -> ScanDone:
    """One scan at ``now``: import the settled rollouts of hook-less sessions changed
    since the last scan."""
    roots = backfill.default_roots(env) if roots is None else roots
    since, waiting = _load(engine)
    done = ScanDone()
    left: list[str] = []
    budget = max_bytes
    for path, st in _candidates(roots, since, waiting):
        if (stop is not None and stop.is_set()) or budget <= 0 or \
                now - st.st_mtime < settle:
            left.append(str(path))  # still being written, or for the next scan
            continue
        res = backfill.run(engine, [path], now=now, settle=settle, hookless=True)
        budget -= st.st_size
        done.files += res.files
        done.turns += res.turns
        done.events += res.events
        done.hooked += res.hooked
    done.waiting = len(left)
    _save(engine, now, left)
    return done
