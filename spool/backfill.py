"""Backfill from Codex rollout files: the I/O edge of ``spool import``.

Finds rollout files, streams each one line by line (never a whole file in
memory) through the pure ``spool.importer.Converter``, and stores the events
it makes as ``raw_events`` rows (source ``import``, stored already parsed:
status ``ok`` with their ids) with ``INSERT OR IGNORE`` on their dedup key, so
the normal aggregate -> deliver pipeline builds their traces exactly once:

* a turn the hooks already captured (any non-imported event with its session
  and turn id) is skipped whole, and so are the SessionStart/SessionEnd of a
  session the hooks saw: importing a hooked session adds nothing, a partly
  hooked one gets only its missing turns;
* a file still being written (modified less than ``settle`` seconds ago) keeps
  its open last turn and its SessionEnd for a later import, so its session is not
  finalised while it may grow; a last line cut short is left unread (in a
  settled file, one Codex stopped writing: counted as unreadable);
* a project that is paused records nothing (as the hook's insert);
* a file that is not a rollout, unreadable, or with unknown line types is
  skipped or partly skipped, counted in the summary and logged in the
  ``errors`` table (source ``import``) for ``spool errors``.  Never a crash.
"""
from __future__ import annotations

import gzip
import os
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

import orjson
from sqlalchemy import Engine

from . import problems
from .aggregate.connection import tx
from .hook import INSERT_SQL
from .importer import SOURCE, Block, Converter, NotARollout
from .ingest import FACT_COLUMNS, payload_facts
from .maintenance import RETIRED_SQL
from .wal_checkpointer import Checkpointer

# The hook's columns (spool.hook.INSERT_SQL), plus the dedup key (as overflow records
# use), and the row already parsed: the importer made the payload, so it knows its ids
# (ingest's parse step has nothing to add, and the aggregator takes the row as it is),
# with the facts ingest would have stored (spool.ingest.payload_facts).  One statement
# per block (up to BLOCK_ROWS events): what all its events share - cwd, session, turn,
# facts - is bound once (?1-?8), then each event's time, payload, dedup key and name.
# The hook's pause rule (the cwd is a paused project or under one) is applied to the
# batch inside the same write transaction (``_Store.flush``), not per row.
_HOOK_COLUMNS = "INSERT INTO raw_events (received_at, source, cwd, payload, size, truncated)"
assert INSERT_SQL.startswith(_HOOK_COLUMNS)
_COLUMNS = ("received_at, source, cwd, payload, size, truncated, dedup_key, status, "
            "session_id, turn_id, event, " + ", ".join(c for c, _key in FACT_COLUMNS))
BLOCK_ROWS = 200


@lru_cache(maxsize=BLOCK_ROWS)
def _insert_sql(n: int) -> str:
    """INSERT OR IGNORE of ``n`` events of one block."""
    rows = ", ".join(
        f"(?{k}, '{SOURCE}', ?1, ?{k + 1}, length(?{k + 1}), 0, ?{k + 2}, 'ok', ?2, ?3, "
        f"?{k + 3}, ?4, ?5, ?6, ?7, ?8)" for k in range(9, 9 + 4 * n, 4))
    return f"INSERT OR IGNORE INTO raw_events ({_COLUMNS}) VALUES {rows}"


SETTLE_SECONDS = 600.0  # a rollout written to more recently may still grow
# Events are held in memory, across files, until this many payload bytes (or events)
# are waiting; then written in one transaction (~15 ms: a hook waits no longer than that
# for the write lock).  Larger batches measured no faster (the checkpoints follow the
# WAL's size, not the commits) and raised the peak RSS with the input.
FLUSH_BYTES = 1 << 20
FLUSH_EVENTS = 2000
_SUFFIXES = (".jsonl", ".jsonl.gz")
# Rollout lines are often longer than io's default 8 KiB buffer (a command's output,
# twice): a larger one reads them in one piece (line iteration 2.5x cheaper).
READ_BUFFER = 1 << 20
TOKEN_KEYS = ("input_tokens", "cached_input_tokens", "output_tokens",
              "reasoning_output_tokens", "total_tokens")


@dataclass
class Summary:
    files: int = 0
    bytes: int = 0
    sessions: set = field(default_factory=set)
    turns: int = 0  # turns imported (or, in a dry run, that would be)
    events: int = 0
    already: int = 0  # turns imported before (or delivered, then deleted by retention)
    hooked: int = 0  # turns skipped: the hooks captured them
    waiting: int = 0  # files still being written: open turn and session end left for later
    paused: int = 0  # blocks of paused projects (not recorded, as by the hook)
    skipped_files: list = field(default_factory=list)  # (path, reason)
    unknown_lines: Counter = field(default_factory=Counter)
    bad_lines: int = 0
    tokens: dict = field(default_factory=lambda: dict.fromkeys(TOKEN_KEYS, 0))
    problems: list = field(default_factory=list)  # the lines for `spool errors` (one a file)

    def to_dict(self) -> dict:
        return {"files": self.files, "bytes": self.bytes, "sessions": len(self.sessions),
                "turns": self.turns, "events": self.events, "already_imported": self.already,
                "captured_by_hooks": self.hooked, "still_being_written": self.waiting,
                "paused": self.paused,
                "skipped_files": [{"path": p, "reason": r} for p, r in self.skipped_files],
                "unknown_lines": dict(self.unknown_lines), "bad_lines": self.bad_lines,
                "tokens": dict(self.tokens)}


def default_roots(env: Mapping[str, str] | None = None) -> list[Path]:
    """$CODEX_HOME/sessions (else ~/.codex/sessions) and archived_sessions beside it."""
    env = os.environ if env is None else env
    home = Path(env["CODEX_HOME"]).expanduser() if env.get("CODEX_HOME") else \
        Path("~/.codex").expanduser()
    return [home / "sessions", home / "archived_sessions"]


def discover(paths: Iterable[Path]) -> Iterator[Path]:
    """Rollout files under ``paths`` (files are taken as given), sorted, each once."""
    seen: set[Path] = set()
    for root in paths:
        root = root.absolute()  # as `spool errors` will name it, seen from anywhere
        if root.is_dir():
            # A broken symlink is an unreadable file: listed, to be reported.
            found = sorted(p for p in root.rglob("*") if p.name.endswith(_SUFFIXES)
                           and (p.is_file() or (p.is_symlink() and not p.exists())))
        else:
            found = [root]
        for p in found:
            if p not in seen:
                seen.add(p)
                yield p


def _open(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb", buffering=READ_BUFFER)


class _Store:
    """The database side, on one connection for the whole run: what the hooks
    captured and what was imported before (per session, one read), and the
    buffered inserts (one ``BEGIN IMMEDIATE`` transaction per batch).

    Each batch is checkpointed after its commit by ``spool.wal_checkpointer``, on
    its own thread, while the next batch is built; the next batch waits for it, so
    the WAL holds about one batch and a hook's commit does not find a WAL of an
    import to checkpoint."""

    def __init__(self, engine: Engine, dry_run: bool, now: float, hookless: bool = False):
        self.dry_run, self.now, self.hookless = dry_run, now, hookless
        self.raw = engine.raw_connection()
        self.con = self.raw.driver_connection
        self.con.isolation_level = None  # transactions are ours
        # A batch's pages and the indexes' hot pages stay in memory until the commit
        # (SQLite's default 2 MiB cache would spill them into the WAL before it).
        self.con.execute("PRAGMA cache_size = -8192")
        self.checkpoints: Checkpointer | None = None
        if not dry_run:
            self.autocheckpoint = self.con.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
            self.con.execute("PRAGMA wal_autocheckpoint = 0")
            self.checkpoints = Checkpointer(engine)
        self.paused = [r[0] for r in self.con.execute("SELECT project FROM pauses")]
        self.known: dict[str, tuple[set, set]] = {}
        self.rows: list[list] = []  # one block's (part's) parameters each (_insert_sql)
        self.held = 0  # payload bytes in ``rows``
        self.events = 0  # events in ``rows``
        self.waiting: set[str] = set()  # the sessions of ``rows``

    def close(self) -> None:
        try:
            if self.checkpoints is not None:
                self.checkpoints.close()
                # The connection as it was (a pooled engine would hand it out again).
                self.con.execute(f"PRAGMA wal_autocheckpoint = {int(self.autocheckpoint)}")
        finally:
            self.raw.close()

    def file_done(self) -> None:
        """Between files: write a full batch, and drop the per-session facts of the
        sessions with nothing waiting to be written (bounded memory)."""
        if self.held >= FLUSH_BYTES or self.events >= FLUSH_EVENTS:
            self.flush()
        self.known = {sid: self.known[sid] for sid in self.waiting if sid in self.known}

    def session(self, sid: str) -> tuple[set, set, float | None]:
        """(turn ids with non-imported events, with '' when the hooks saw the session;
        dedup keys already imported for it; the time up to which retention deleted
        it, delivered, or None)."""
        got = self.known.get(sid)
        if got is None:
            con = self.con
            con.execute("BEGIN")
            try:
                hooked = {r[0] or "" for r in con.execute(
                    "SELECT DISTINCT turn_id FROM raw_events WHERE session_id = ?"
                    " AND source != ? AND status = 'ok'", (sid, SOURCE))}
                keys = {r[0] for r in con.execute(
                    "SELECT dedup_key FROM raw_events WHERE dedup_key >= ? AND dedup_key < ?",
                    (f"import:{sid}:", f"import:{sid};"))}
                retired = con.execute(RETIRED_SQL, (sid,)).fetchone()
            finally:
                con.execute("COMMIT")
            if hooked:
                hooked.add("")
            got = self.known[sid] = (hooked, keys, retired[0] if retired else None)
        return got

    def add(self, block: Block) -> None:
        events = block.events
        self.session(block.session_id)[1].add(events[0].key)
        self.waiting.add(block.session_id)
        # What every event of a block shares (the Converter builds a turn's events from
        # one base; a lifecycle block is one event): its cwd, ids, and ingest's facts.
        shared = (events[0].cwd, block.session_id, block.turn_id,
                  *payload_facts(events[0].payload).values())
        dumps = orjson.dumps
        for i in range(0, len(events), BLOCK_ROWS):
            params = list(shared)
            for ev in events[i:i + BLOCK_ROWS]:
                payload = dumps(ev.payload)
                self.held += len(payload)
                params += (ev.at, payload, ev.key, ev.payload["hook_event_name"])
            self.rows.append(params)
            self.events += len(events[i:i + BLOCK_ROWS])
        if self.held >= FLUSH_BYTES or self.events >= FLUSH_EVENTS:
            self.flush()

    def flush(self) -> None:
        rows, self.rows, self.held, self.events = self.rows, [], 0, 0
        self.waiting = set()
        if self.dry_run or not rows:
            return
        ckpt = self.checkpoints
        if ckpt is not None and not ckpt.wait():  # its thread could not connect
            self.con.execute(f"PRAGMA wal_autocheckpoint = {int(self.autocheckpoint)}")
            self.checkpoints = ckpt = None
        with tx(self.con) as con:
            # The hook's pause rule, read in this write transaction.
            paused = [r[0] for r in con.execute("SELECT project FROM pauses")]
            for params in rows:
                if not (paused and is_paused(params[0], paused)):
                    con.execute(_insert_sql((len(params) - 8) // 4), params)
        if ckpt is not None:
            ckpt.request()

    def error(self, message: str) -> None:
        if not self.dry_run:
            with tx(self.con) as con:
                problems.record_dbapi(con, SOURCE, message, self.now)


def is_paused(cwd: str | None, projects: list[str]) -> bool:
    """The hook's pause rule (spool.hook.INSERT_SQL): ``cwd`` is a paused project or
    under one."""
    return cwd is not None and any(cwd == p or cwd[:len(p) + 1] == p + "/" for p in projects)


def _take(block: Block, store: _Store, res: Summary) -> None:
    if is_paused(block.events[0].cwd, store.paused):
        res.paused += 1  # as the hook: a paused project records nothing
        return
    hooked, imported, retired = store.session(block.session_id)
    if (block.turn_id or "") in hooked or (hooked and store.hookless):
        if block.turn_id is not None:
            res.hooked += 1
        return
    if block.events[0].key in imported or (retired is not None
                                           and block.events[0].at <= retired):
        if block.turn_id is not None:
            res.already += 1
        return
    store.add(block)
    res.sessions.add(block.session_id)
    res.events += len(block.events)
    if block.turn_id is not None:
        res.turns += 1
        for k in TOKEN_KEYS:
            res.tokens[k] += block.usage.get(k, 0)


def import_file(path: Path, store: _Store, res: Summary, *, now: float, settle: float,
                progress: Callable[[int, int], None] | None = None) -> None:
    """Import one file.  ``progress(bytes, files)`` is told of the file's bytes as they
    are read (compressed ones for a .gz), and of the file when done, read or not."""
    try:
        st = path.stat()
    except OSError as exc:
        _skip(path, f"unreadable: {exc.strerror or exc}", store, res)
        if progress is not None:
            progress(0, 1)
        return
    conv = Converter(str(path.resolve()))
    partial = False  # the last line is cut short, or what follows could not be read
    stopped = ""  # why reading stopped before the end of a damaged compressed file
    done = 0  # bytes of lines read since the last progress report
    shown = 0  # bytes of the file reported to ``progress``
    feed = conv.feed
    try:
        with _open(path) as fh:
            try:
                for line in fh:  # buffered: one line at a time, never the whole file
                    done += len(line)
                    if line[-1:] != b"\n":
                        partial = True  # Codex is still writing it (or stopped mid-line)
                        break
                    if len(line) > 1:
                        for block in feed(line):
                            _take(block, store, res)
                    if progress is not None and done >= 1 << 20:
                        at = _position(fh, shown + done)
                        progress(at - shown, 0)
                        shown, done = at, 0
            except (OSError, EOFError, zlib.error) as exc:
                if conv.meta is None:
                    raise  # nothing of it read: the file is skipped
                # A compressed file cut short or damaged after its first lines: what
                # was read is the session so far, as for a last line cut short.
                partial, stopped = True, str(exc)
        # Not written to for ``settle`` seconds: it will not grow.  A last line cut
        # short then was left so by a Codex that stopped: the rest is the session.
        settled = now - st.st_mtime >= settle
        if partial and settled:
            conv.bad_lines += 1
        for block in conv.finish(settled=settled):
            _take(block, store, res)
    except NotARollout as exc:
        _skip(path, f"not a Codex rollout: {exc}", store, res)
        return
    except (OSError, EOFError, zlib.error) as exc:
        _skip(path, f"unreadable: {exc}", store, res)
        return
    finally:
        if progress is not None:
            progress(max(st.st_size - shown, 0), 1)  # all of it, read or skipped
    res.files += 1
    res.bytes += st.st_size
    if not settled and (conv.turn is not None or (conv.started and not conv.agent_id)):
        res.waiting += 1  # an open turn, or the session's end, is left for later
    res.bad_lines += conv.bad_lines
    res.unknown_lines.update(conv.unknown)
    if conv.bad_lines or conv.unknown:
        kinds = ", ".join(f"{k} x{n}" for k, n in sorted(conv.unknown.items()))
        cut = ""
        if partial and settled:
            cut = (f" (the rest of the file: {stopped})" if stopped
                   else " (the last one cut short, not written to since)")
        _problem(f"{path}: skipped {conv.bad_lines} unreadable line(s){cut}"
                 + (f" and lines of unknown type ({kinds})" if kinds else ""), store, res)


def _position(fh, read: int) -> int:
    """How far into the file ``fh`` is: ``read`` bytes, or for a .gz the position in
    the compressed file (its lines are longer than the file)."""
    raw = getattr(fh, "fileobj", None)
    return raw.tell() if raw is not None else read


def _skip(path: Path, reason: str, store: _Store, res: Summary) -> None:
    res.skipped_files.append((str(path), reason))
    _problem(f"{path}: skipped, {reason}", store, res)


def _problem(message: str, store: _Store, res: Summary) -> None:
    res.problems.append(message)
    store.error(message)  # not in a dry run: the summary shows them


def run(engine: Engine, paths: Iterable[Path], *, now: float | None = None,
        settle: float = SETTLE_SECONDS, since: float | None = None, dry_run: bool = False,
        progress: Callable[[int, int], None] | None = None,
        hookless: bool = False) -> Summary:
    """Import every rollout under ``paths``.  ``since``: only files modified since then;
    ``hookless``: leave every session the hooks reported whole to them (the worker's
    rollouts job), not only the turns they captured."""
    now = time.time() if now is None else now
    store = _Store(engine, dry_run, now, hookless)
    res = Summary()
    try:
        for path in discover(paths):
            if since is not None:
                try:
                    if path.stat().st_mtime < since:
                        continue
                except OSError:
                    pass  # reported by import_file
            import_file(path, store, res, now=now, settle=settle, progress=progress)
            store.file_done()
        store.flush()
    finally:
        store.close()
    return res
