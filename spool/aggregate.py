"""Aggregation: parsed raw events -> exact traces, through a transactional outbox.

The I/O edge around the pure builders of spool/trace.py.  One pass
(``aggregate``) does, each step in short ``BEGIN IMMEDIATE`` transactions so
the hooks waiting on the write lock are never held up for long:

1. **Index** the events parsed since the last pass (``raw_events.id`` above
   the ``cursors`` row ``aggregate``, status ``ok``; it stops at the first row
   ingest has not parsed yet): sessions and turns rows are created/updated,
   a turn is *closed* by its Stop, a session *ended* by SessionEnd, and any
   event reopens an ended/final session.  Events without ``turn_id`` (older
   Codex) get a synthetic one (``synthetic:<event id>``, written into
   ``raw_events.turn_id``): UserPromptSubmit opens such a turn, Stop closes it.
   An event for a turn already traced is flagged ``late`` and counted.
   Each batch is planned in a read transaction and only its writes are
   applied under the write lock, after checking nothing changed meanwhile.
2. **Trace** what is due, session by session: read the events (deferred read
   transaction), read the session's rollout incrementally (offset in
   ``sessions.rollout_offset``, facts in ``kv['rollout:<session id>']``),
   build the traces (pure), then in one write transaction re-check that
   nothing changed under us, insert the trace, one outbox row per sink, and
   mark the events consumed by moving watermarks (``EVENT_TRACES``): a turn
   trace holds its turn's events up to ``turns.traced_through_id``, a session
   summary the session's events up to ``sessions.summarised_through_id``; an
   event row is never rewritten for it (only the rare late ones get ``late``).
   Trace ids are deterministic (spool.trace.trace_id) and every insert is
   ``INSERT OR IGNORE`` guarded by state checks, so a crash, a re-run or a
   concurrent pass never makes a second trace.

Finalising a session (SessionEnd + ``session_end_grace`` quiet: ``aggregate``;
``session_ttl`` quiet: ``sweep``): open turns are traced as *incomplete*
(granularity turn/both), a session summary is made (session/both, not for an
empty session), and in ``turn`` granularity a turn that received late events
gets a new revision of its trace covering them (``supersedes`` the first).  In
``both``, late events go into the session summary.  A session that resumes
after its summary gets a new summary revision covering the whole session.

Cost grows with new work only: the cursor, the partial indexes on open
sessions (``ix_sessions_open``) and untraced turns (``ix_turns_pending``).

Speed (scripts/bench_aggregate.py): each payload is parsed once per pass and
each step turned into a dict once (shared by its turn trace and the summary,
``Trace.to_dict(step_memo)``); bodies are serialised before the write
transaction; consuming events moves a watermark, it rewrites no event row; a
write group reads its state up front and writes with ``executemany``; index
batches are planned outside the write lock (so they can be big: per-session
work is paid per batch) and only applied under it; PASSIVE
WAL checkpoints run on a thread with their own connection (the write lock is
held only for the writes).  A pass with a big backlog (PARALLEL_MIN_EVENTS)
builds sessions in builder processes (spool.builders, one per core beside
this one: SPOOL_AGGREGATE_PROCESSES) while it indexes and writes: see _Runner.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Mapping, NamedTuple

import orjson

from . import config as config_mod
from .errors import SpoolError
from .rollout import RolloutState, read_incremental
from .trace import (LIFECYCLE_EVENTS, Event, Limits, SessionFacts, TurnPart, build_part,
                    build_session_trace, build_turn_trace, trace_id)

if TYPE_CHECKING:  # builder processes import this module: no SQLAlchemy there
    from sqlalchemy import Engine

CURSOR = "aggregate"
# Rows per index batch: the first batch; later ones are sized from the time
# the previous full ones held the write lock (applying a plan made outside it),
# so that lasts about WRITE_TX_TARGET_MS.
INDEX_BATCH = 1000
INDEX_BATCH_MIN = 100
INDEX_BATCH_MAX = 8000
KV_ROLLOUT = "rollout:"
SYNTHETIC = "synthetic:"
# A cursors row every transaction that changes sessions or turns, other than
# the index's own, increments (see _index).
WRITES = "aggregate-writes"
# Sessions whose write transactions are grouped into one (small sessions only):
# the first group holds WRITE_GROUP_EVENTS events; later ones are sized from the
# time the previous ones took, so a transaction lasts about WRITE_TX_TARGET_MS
# (bigger groups rewrite fewer pages, shorter ones keep the hooks' wait short).
WRITE_GROUP_EVENTS = 1000
WRITE_GROUP_MAX = 4000
WRITE_TX_TARGET_MS = 15.0
# Page cache of the aggregator's connection (KiB).
CACHE_KIB = 64 * 1024


@dataclass
class AggregateResult:
    indexed: int = 0
    turn_traces: int = 0
    session_traces: int = 0
    sessions_finalised: int = 0
    late_events: int = 0
    conflicts: int = 0  # work dropped because events arrived or another pass did it
    errors: int = 0
    trace_ids: list[str] = field(default_factory=list)
    # Not a field (the worker reads any non-zero field as "did work"): the
    # longest write transaction of the pass (BEGIN IMMEDIATE to COMMIT: the
    # time others wait for the write lock at most), and the longest WAL
    # checkpoint run after one (it does not hold the write lock), for the benchmark.
    max_write_ms = 0.0
    max_checkpoint_ms = 0.0
    builder_processes = 0  # builder processes the pass used (spool.builders)
    built_by_builders = 0  # sessions they built

    @property
    def traces(self) -> int:
        return self.turn_traces + self.session_traces

    def add(self, other: "AggregateResult") -> None:
        for name in ("indexed", "turn_traces", "session_traces", "sessions_finalised",
                     "late_events", "conflicts", "errors"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.trace_ids.extend(other.trace_ids)
        self.max_write_ms = max(self.max_write_ms, other.max_write_ms)
        self.max_checkpoint_ms = max(self.max_checkpoint_ms, other.max_checkpoint_ms)


# --- plumbing -------------------------------------------------------------------


@contextmanager
def _connect(engine: Engine) -> Iterator[sqlite3.Connection]:
    """The engine's DB-API connection (pragmas applied, isolation_level None)."""
    raw = engine.raw_connection()
    con = raw.driver_connection
    saved = None
    try:
        saved = (con.execute("PRAGMA cache_size").fetchone()[0],
                 con.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
        # A pass rewrites many pages in one transaction: with SQLite's default
        # 2 MiB cache they would spill into the WAL (and be written again)
        # before the commit.
        con.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        # The pass checkpoints after each of its write transactions itself
        # (_checkpoint): not inside the COMMIT, and the WAL stays small, so a
        # hook's commit never has a checkpoint to run.
        con.execute("PRAGMA wal_autocheckpoint = 0")
        yield con
    finally:
        try:
            if saved is not None:
                if not con.in_transaction:  # what the throttled _checkpoint left over
                    con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                con.execute(f"PRAGMA cache_size = {int(saved[0])}")
                con.execute(f"PRAGMA wal_autocheckpoint = {int(saved[1])}")
        except sqlite3.Error:
            pass
        raw.close()


@contextmanager
def _tx(con: sqlite3.Connection, immediate: bool = True) -> Iterator[sqlite3.Connection]:
    con.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


class _Configs:
    """``config.load`` per cwd, cached for one pass."""

    def __init__(self, env: Mapping[str, str] | None):
        self.env = os.environ if env is None else env
        self._cache: dict[str | None, config_mod.Config] = {}

    def get(self, cwd: str | None) -> config_mod.Config:
        cfg = self._cache.get(cwd)
        if cfg is None:
            try:
                cfg = config_mod.load(cwd, self.env)
            except SpoolError:
                try:  # a broken project file: the environment and defaults still apply
                    cfg = config_mod.load(None, self.env)
                except SpoolError:
                    cfg = config_mod.Config()
            self._cache[cwd] = cfg
        return cfg

    def project(self, cwd: str | None) -> str | None:
        cfg = self.get(cwd)
        return str(cfg.project) if cfg.project is not None else cwd


CHECKPOINT_EVERY_S = 0.25


class _Checkpointer:
    """PASSIVE WAL checkpoints after the pass's write transactions, on a thread
    with its own connection (what SQLite's automatic checkpoint would do inside
    the COMMIT; it never waits for, nor blocks, writers).

    Copying the WAL into the database and syncing it is I/O that needs no
    Python: SQLite releases the GIL, so it runs beside the pass instead of
    between its transactions.  At most every CHECKPOINT_EVERY_S (each one syncs
    the database file); the WAL still stays small (a quarter second of writes).
    The thread starts on the first request, so an idle pass starts none."""

    def __init__(self, engine: Engine):
        self._engine = engine
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.max_ms = 0.0

    def request(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._main, name="spool-checkpoint",
                                            daemon=True)
            self._thread.start()
        self._wake.set()

    def close(self) -> None:
        if self._thread is not None:
            self._stopping.set()
            self._wake.set()
            self._thread.join()

    def _main(self) -> None:
        try:
            raw = self._engine.raw_connection()
        except Exception:  # noqa: BLE001 - the pass's own final checkpoint still runs
            return
        try:
            con = raw.driver_connection
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping.is_set():
                    return
                started = time.perf_counter()
                try:
                    con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    pass
                self.max_ms = max(self.max_ms, (time.perf_counter() - started) * 1000)
                # Throttle: requests meanwhile are folded into the next one.
                if self._stopping.wait(CHECKPOINT_EVERY_S):
                    return
        finally:
            raw.close()


def _log_error(con: sqlite3.Connection, now: float, message: str) -> None:
    try:
        with _tx(con):
            con.execute("INSERT INTO errors (at, source, message) VALUES (?, ?, ?)",
                        (now, "aggregate", message[:4000]))
    except sqlite3.Error:
        pass


def _chunks(seq: list, n: int = 500):
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _in_query(con: sqlite3.Connection, sql: str, keys: list, params: tuple = ()) -> list:
    """``sql`` with ``{}`` replaced by a placeholder list, run over ``keys`` in
    chunks (after the fixed ``params``); all the rows."""
    out: list = []
    for chunk in _chunks(keys):
        out.extend(con.execute(sql.format(",".join("?" * len(chunk))),
                               (*params, *chunk)).fetchall())
    return out


# Which traces hold each event, derived from the watermarks (one row per raw
# event: id, session_id, turn_id, event, status, late, turn_trace_id,
# session_trace_id; NULL = in no trace of that kind).  A turn trace holds its
# turn's 'ok' events (not SessionStart/SessionEnd, which go to the summary only)
# up to the turn's traced_through_id; the current session summary holds the
# session's 'ok' events up to summarised_through_id.  Use as a subquery:
# ``SELECT ... FROM (EVENT_TRACES) AS e``.
EVENT_TRACES = (
    "SELECT r.id AS id, r.session_id AS session_id, r.turn_id AS turn_id, r.event AS event,"
    " r.status AS status, r.late AS late,"
    " CASE WHEN r.status = 'ok' AND r.event NOT IN ('SessionStart', 'SessionEnd')"
    " AND r.id <= t.traced_through_id THEN t.trace_id END AS turn_trace_id,"
    " CASE WHEN r.status = 'ok' AND s.summary_revision > 0 AND r.id <= s.summarised_through_id"
    " THEN (SELECT x.trace_id FROM traces AS x WHERE x.session_id = s.session_id"
    " AND x.kind = 'session' AND x.revision = s.summary_revision) END AS session_trace_id"
    " FROM raw_events AS r"
    " LEFT JOIN turns AS t ON t.session_id = r.session_id AND t.turn_id = r.turn_id"
    " LEFT JOIN sessions AS s ON s.session_id = r.session_id")


# --- 1. indexing --------------------------------------------------------------------

_SESSION_COLS = ("state", "cwd", "transcript_path", "model", "permission_mode", "source",
                 "project", "first_event_at", "last_event_at", "last_event_id", "ended_at",
                 "event_count", "late_event_count")


def _backlog(con: sqlite3.Connection) -> int:
    """About how many rows the index has to go through."""
    with _tx(con, immediate=False):
        cursor = _marks(con)[0]
        top = con.execute("SELECT max(id) FROM raw_events").fetchone()[0]
    return max(0, (top or 0) - cursor)


def _marks(con: sqlite3.Connection) -> tuple[int, int]:
    """(the index cursor, the writes counter): what an index plan was made from."""
    vals = dict(con.execute("SELECT name, value FROM cursors WHERE name IN (?, ?)",
                            (CURSOR, WRITES)).fetchall())
    return vals.get(CURSOR, 0), vals.get(WRITES, 0)


def _bump_writes(con: sqlite3.Connection, now: float) -> None:
    """Inside a transaction that changes sessions or turns (other than the
    index's own): index plans made before it are stale."""
    con.execute("INSERT INTO cursors (name, value, updated_at) VALUES (?, 1, ?)"
                " ON CONFLICT(name) DO UPDATE SET value = value + 1,"
                " updated_at = excluded.updated_at", (WRITES, now))


def _index(con: sqlite3.Connection, now: float, cfgs: _Configs, res: AggregateResult,
           ckpt: _Checkpointer, after_batch=None) -> None:
    """Index every parsed event not indexed yet, in short write transactions;
    ``after_batch(touched, cursor)`` after each: the sessions the batch changed
    (session id -> (state, cwd, last_event_at, event_count)) and the new cursor.

    Each batch is planned in a read transaction (all the per-row work: the
    write lock the hooks wait for is not held meanwhile), then applied in a
    write transaction that first checks the plan is still current: the cursor
    and the writes counter (_bump_writes) unchanged, i.e. no other pass indexed
    or traced anything since.  Otherwise it is planned again inside the write
    transaction.  Nothing else a plan reads can change under it: rows up to the
    first unparsed one are never rewritten above the cursor (ingest only parses
    'new' rows; retention only deletes sessions with no unindexed event)."""
    batch = INDEX_BATCH
    while True:
        with _tx(con, immediate=False):  # a snapshot; an idle pass takes no write lock
            plan = _index_plan(con, now, cfgs, batch)
        if plan is None:
            return
        started = time.perf_counter()
        with _tx(con):
            if _marks(con) != plan.marks:
                plan = _index_plan(con, now, cfgs, batch)
            if plan is not None:
                _index_apply(con, plan, now)
        ms = (time.perf_counter() - started) * 1000
        res.max_write_ms = max(res.max_write_ms, ms)
        if plan is None:
            return
        if plan.more and ms > 0:  # a full batch: resize towards the target
            fit = batch * WRITE_TX_TARGET_MS / ms
            batch = int(min(INDEX_BATCH_MAX, max(INDEX_BATCH_MIN, (batch + fit) / 2)))
        ckpt.request()
        res.indexed += plan.indexed
        if after_batch is not None and plan.touched:
            after_batch(plan.touched, plan.cursor)
        if not plan.more:
            return


class _IndexPlan(NamedTuple):
    """One index batch's writes, and what they were planned from."""

    marks: tuple[int, int]  # _marks() when planned
    cursor: int  # the new cursor
    indexed: int  # usable events in the batch
    more: bool  # a full batch: there may be more
    touched: dict  # session id -> (state, cwd, last_event_at, event_count)
    session_inserts: list
    session_updates: list
    turn_inserts: list
    turn_updates: list
    synthetic: list  # (turn_id, raw event id) for events that had none
    late: list  # (raw event id,) of events for turns already traced


def _turns_of(con: sqlite3.Connection, keys: list[tuple[str, str]]) -> dict:
    """(session, turn) -> (state, closed_at) of the existing ones among ``keys``."""
    out: dict = {}
    for chunk in _chunks(keys, 400):
        sql = ("WITH k(s, t) AS (VALUES " + ",".join(["(?,?)"] * len(chunk)) + ")"
               " SELECT k.s, k.t, turns.state, turns.closed_at FROM k"
               " JOIN turns ON turns.session_id = k.s AND turns.turn_id = k.t")
        for sid, tid, state, closed_at in con.execute(sql, [x for key in chunk for x in key]):
            out[(sid, tid)] = (state, closed_at)
    return out


def _index_plan(con: sqlite3.Connection, now: float, cfgs: _Configs,
                batch: int) -> _IndexPlan | None:
    """Plan the next index batch (reads only); None when there is nothing to index."""
    marks = _marks(con)
    pos = marks[0]
    # status as a small int (0 new, 1 ok, 2 other): no string made per row; the
    # raw cwd is read only for the rare rows that need it.
    rows = con.execute(
        "SELECT id, received_at, CASE status WHEN 'ok' THEN 1 WHEN 'new' THEN 0 ELSE 2 END,"
        " session_id, turn_id, event,"
        " CASE WHEN event IN ('SessionStart', 'UserPromptSubmit') THEN payload END"
        " FROM raw_events WHERE id > ? ORDER BY id LIMIT ?", (pos, batch)).fetchall()
    if not rows:
        return None
    blocked = False
    # The usable rows of each session, sessions in order of first appearance
    # (all state is per session, so each session's rows are handled together).
    by_sid: dict[str, list] = {}
    n_usable = 0
    new_pos = pos
    for r in rows:
        status = r[2]
        if status == 0:  # 'new': not parsed yet: wait for ingest, keep the order
            blocked = True
            break
        new_pos = r[0]
        if status == 1 and r[3]:  # 'ok'
            lst = by_sid.get(r[3])
            if lst is None:
                by_sid[r[3]] = [r]
            else:
                lst.append(r)
            n_usable += 1
    if new_pos == pos:
        return None

    sids = list(by_sid)
    sessions: dict[str, dict] = {}
    for srow in _in_query(con, f"SELECT session_id, {', '.join(_SESSION_COLS)} FROM sessions"
                               " WHERE session_id IN ({})", sids):
        s = dict(zip(_SESSION_COLS, srow[1:]))
        s["_new"] = False
        sessions[srow[0]] = s
    turns: dict[tuple[str, str], dict] = {}
    synthetic_open: dict[str, str | None] = {}
    synth_updates: list[tuple[str, int]] = []
    late_ids: list[tuple[int]] = []

    # What the batch needs of the known sessions' turns, read at once (not one
    # query per turn, nor every turn of a long session): the state and
    # closed_at of the turns it names, the highest seq of each session.
    known_sids = [sid for sid in sids if sid in sessions]
    known = _turns_of(con, [(sid, tid) for sid in known_sids
                            for tid in {r[4] for r in by_sid[sid] if r[4]}])
    next_seq: dict[str, int] = dict(_in_query(
        con, "SELECT session_id, max(seq) FROM turns WHERE session_id IN ({})"
        " GROUP BY session_id", known_sids))
    # The payloads of the first rows of sessions that lack a cwd or a rollout
    # path (probed below), at once.
    probe_ids = [srows[0][0] for sid, srows in by_sid.items() if srows[0][6] is None and (
        sid not in sessions or not sessions[sid]["cwd"] or not sessions[sid]["transcript_path"])]
    probed_payloads = dict(_in_query(con, "SELECT id, payload FROM raw_events WHERE id IN ({})",
                                     probe_ids))

    def get_turn(sid: str, tid: str, at: float, rid: int) -> dict:
        t = turns.get((sid, tid))
        if t is None:
            r = known.get((sid, tid))
            if r is not None:
                t = {"state": r[0], "closed_at": r[1], "_new": False, "_dirty": False}
            else:
                next_seq[sid] = next_seq.get(sid, 0) + 1
                # "_at": the row that made it, so new turns are inserted in row order.
                t = {"state": "open", "closed_at": None, "seq": next_seq[sid], "opened_at": at,
                     "_new": True, "_dirty": True, "_at": rid}
            turns[(sid, tid)] = t
        return t

    def open_synthetic(sid: str) -> str | None:
        if sid not in synthetic_open:
            r = None if sessions[sid]["_new"] else con.execute(
                "SELECT turn_id, state, closed_at FROM turns WHERE session_id = ?"
                " AND state = 'open' AND turn_id LIKE 'synthetic:%' ORDER BY seq DESC LIMIT 1",
                (sid,)).fetchone()
            synthetic_open[sid] = r[0] if r else None
            if r:
                known[(sid, r[0])] = (r[1], r[2])
        return synthetic_open[sid]

    for sid, srows in by_sid.items():
        s = sessions.get(sid)
        if s is None:
            at0 = srows[0][1]
            s = sessions[sid] = {
                "state": "open", "cwd": None, "transcript_path": None, "model": None,
                "permission_mode": None, "source": None, "project": None,
                "first_event_at": at0, "last_event_at": at0, "last_event_id": 0,
                "ended_at": None, "event_count": 0, "late_event_count": 0, "_new": True,
            }
        # The session's counters as locals for the loop, written back after it.
        state = s["state"]
        first_at = s["first_event_at"]
        last_at = s["last_event_at"]
        ended_at = s["ended_at"]
        late_n = s["late_event_count"]
        probed = False
        by_tid: dict[str, dict] = {}
        for rid, received_at, _status, _sid, turn_id, event, payload in srows:
            if (event == "SessionStart" or event == "UserPromptSubmit"
                    or (not probed and (not s["cwd"] or not s["transcript_path"]))):
                probed = True
                if payload is None:
                    payload = probed_payloads.get(rid)
                try:
                    p = orjson.loads(payload)
                    if not isinstance(p, dict):
                        p = {}
                except (ValueError, TypeError, RecursionError):
                    p = {}
                cwd = p.get("cwd")
                if not s["cwd"]:
                    if not (isinstance(cwd, str) and cwd):  # the hook's cwd of the row
                        r = con.execute("SELECT cwd FROM raw_events WHERE id = ?",
                                        (rid,)).fetchone()
                        cwd = r[0] if r else None
                    s["cwd"] = cwd
                tp = p.get("transcript_path")
                if isinstance(tp, str) and tp:
                    s["transcript_path"] = tp
                for k in ("model", "permission_mode"):
                    v = p.get(k)
                    if isinstance(v, str) and v:
                        s[k] = v
                src = p.get("source")
                if event == "SessionStart" and isinstance(src, str) and src and not s["source"]:
                    s["source"] = src
            # Rows come in id order, but not always in arrival order: an event the
            # hook had to put in overflow is ingested later than ones that came
            # after it.  Arrival stamps decide what is new activity.
            newest = received_at >= last_at
            if received_at > last_at:
                last_at = received_at
            elif received_at < first_at:
                first_at = received_at
            if event == "SessionEnd":
                if newest:  # an older SessionEnd does not end a session that went on
                    state = "ended"
                    ended_at = received_at
                continue
            if state != "open" and newest:
                state = "open"  # resumed / new activity: reopen
            if event == "SessionStart":
                continue
            tid = turn_id
            if not tid:
                cur = open_synthetic(sid)
                if cur is not None and event == "UserPromptSubmit":
                    # A new prompt ends the previous (unstopped) synthetic turn.
                    t = get_turn(sid, cur, received_at, rid)
                    if t["state"] == "open":
                        t["state"] = "closed"
                        t["closed_at"] = received_at
                        t["_dirty"] = True
                    cur = None
                if cur is None:
                    cur = f"{SYNTHETIC}{rid}"
                synthetic_open[sid] = None if event == "Stop" else cur
                tid = cur
                synth_updates.append((tid, rid))
            t = by_tid.get(tid)
            if t is None:
                t = by_tid[tid] = get_turn(sid, tid, received_at, rid)
            tstate = t["state"]
            if tstate == "traced":
                late_ids.append((rid,))
                late_n += 1
            elif event == "Stop" and tstate == "open":
                t["state"] = "closed"
                t["closed_at"] = received_at
                t["_dirty"] = True
        s["state"] = state
        s["first_event_at"] = first_at
        s["last_event_at"] = last_at
        s["last_event_id"] = srows[-1][0]
        s["ended_at"] = ended_at
        s["event_count"] += len(srows)
        s["late_event_count"] = late_n

    inserts, updates = [], []
    for sid, s in sessions.items():
        if s["_new"]:
            s["project"] = cfgs.project(s["cwd"])
            inserts.append((sid, s["project"], s["cwd"], s["transcript_path"], s["model"],
                            s["permission_mode"], s["source"], s["first_event_at"],
                            s["last_event_at"], s["last_event_id"], s["state"], s["ended_at"],
                            s["event_count"], s["late_event_count"]))
        else:
            updates.append((s["cwd"], s["transcript_path"], s["model"], s["permission_mode"],
                            s["source"], s["first_event_at"], s["last_event_at"],
                            s["last_event_id"], s["state"], s["ended_at"], s["event_count"],
                            s["late_event_count"], sid))
    new_turns = sorted(((t["_at"], sid, tid, t["seq"], t["opened_at"], t["closed_at"], t["state"])
                        for (sid, tid), t in turns.items() if t["_new"]))
    touched = {sid: (s["state"], s["cwd"], s["last_event_at"], s["event_count"])
               for sid, s in sessions.items()}
    return _IndexPlan(
        marks, new_pos, n_usable, len(rows) == batch and not blocked, touched, inserts, updates,
        [nt[1:] for nt in new_turns],
        [(t["state"], t["closed_at"], sid, tid) for (sid, tid), t in turns.items()
         if t["_dirty"] and not t["_new"]],
        synth_updates, late_ids)


def _index_apply(con: sqlite3.Connection, plan: _IndexPlan, now: float) -> None:
    con.executemany(
        "INSERT INTO sessions (session_id, project, cwd, transcript_path, model,"
        " permission_mode, source, first_event_at, last_event_at, last_event_id, state,"
        " ended_at, event_count, late_event_count) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        plan.session_inserts)
    con.executemany(
        "UPDATE sessions SET cwd = ?, transcript_path = ?, model = ?, permission_mode = ?,"
        " source = ?, first_event_at = ?, last_event_at = ?, last_event_id = ?, state = ?,"
        " ended_at = ?, event_count = ?, late_event_count = ? WHERE session_id = ?",
        plan.session_updates)
    con.executemany("INSERT INTO turns (session_id, turn_id, seq, opened_at, closed_at, state)"
                    " VALUES (?,?,?,?,?,?)", plan.turn_inserts)
    con.executemany("UPDATE turns SET state = ?, closed_at = ? WHERE session_id = ? AND turn_id = ?",
                    plan.turn_updates)
    con.executemany("UPDATE raw_events SET turn_id = ? WHERE id = ?", plan.synthetic)
    con.executemany("UPDATE raw_events SET late = 1 WHERE id = ?", plan.late)
    con.execute("INSERT INTO cursors (name, value, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET value = excluded.value,"
                " updated_at = excluded.updated_at", (CURSOR, plan.cursor, now))


# --- 2. what is due -------------------------------------------------------------------


@dataclass
class _Work:
    session_id: str
    cfg: config_mod.Config
    finalize: str | None = None  # None | "ended" | "stale"
    events: int = 0  # the session's indexed events (what reading it may cost)


def _finalize_kind(state: str, quiet: float, cfg: config_mod.Config, stale: bool) -> str | None:
    """Whether a session is due to be finalised: by ``sweep`` (``stale``) when
    quiet for the TTL, by ``aggregate`` when ended and quiet for the grace period."""
    if stale:
        return "stale" if quiet >= cfg.session_ttl else None
    return "ended" if state == "ended" and quiet >= cfg.session_end_grace else None


def _due(con: sqlite3.Connection, now: float, cfgs: _Configs, *, stale: bool) -> list[_Work]:
    with _tx(con, immediate=False):
        open_sessions = con.execute(
            "SELECT session_id, state, cwd, last_event_at, event_count FROM sessions"
            " WHERE state != 'final'").fetchall()
        closed = {r[0] for r in con.execute(
            "SELECT DISTINCT session_id FROM turns WHERE state != 'traced' AND state = 'closed'")}
    work = []
    for sid, state, cwd, last_at, events in open_sessions:
        cfg = cfgs.get(cwd)
        kind = _finalize_kind(state, now - last_at, cfg, stale)
        if kind is not None:
            work.append(_Work(sid, cfg, kind, events))
        elif not stale and sid in closed and cfg.turn_traces:
            work.append(_Work(sid, cfg, None, events))
    return work


# --- 3. building and writing ---------------------------------------------------------------


@dataclass
class _Built:
    """One session's traces, ready to write, and the facts to re-check first.

    Plain data (it crosses from a builder process to the writer: see
    spool.builders): each trace is its ``traces`` row (TraceRow)."""

    session_id: str
    cfg: config_mod.Config
    finalize: str | None
    read_state: str
    read_last_event_id: int
    read_summary_revision: int
    read_rollout_offset: int
    rollout: RolloutState | None
    turn_traces: list[tuple[str, "TraceRow", str | None, bool]] = field(default_factory=list)
    # (turn_id, row, supersedes, needs_finalize)
    summary: "TraceRow | None" = None
    event_count: int = 0


class TraceRow(NamedTuple):
    """A ``traces`` row (created_at is the writer's)."""

    trace_id: str
    kind: str
    session_id: str
    turn_id: str | None
    revision: int
    supersedes: str | None
    project: str | None
    name: str
    started_at: float | None
    ended_at: float | None
    event_count: int
    body: str  # the body as JSON

    @classmethod
    def of(cls, body: dict) -> "TraceRow":
        return cls(body["trace_id"], body["kind"], body["session_id"], body["turn_id"],
                   body["revision"], body["supersedes"], body["project"], body["name"],
                   body["started_at"], body["ended_at"], body["event_count"],
                   orjson.dumps(body).decode("utf-8"))


def read_session(con: sqlite3.Connection, w: _Work) -> _Built | None:
    sid = w.session_id
    with _tx(con, immediate=False):
        srow = con.execute(
            "SELECT state, cwd, project, transcript_path, model, permission_mode, source,"
            " last_event_id, summary_revision, rollout_offset, codex_version, git_branch,"
            " git_commit FROM sessions WHERE session_id = ?", (sid,)).fetchone()
        if srow is None:
            return None
        (state, cwd, project, transcript, model, pmode, source, last_id, summ_rev, r_off,
         cver, gbranch, gcommit) = srow
        if state == "final":
            return None
        turn_rows = con.execute(
            "SELECT turn_id, seq, state, trace_id, traced_through_id FROM turns"
            " WHERE session_id = ? ORDER BY seq",
            (sid,)).fetchall()
        closed = [t[0] for t in turn_rows if t[2] == "closed"]
        if w.finalize is None and (not closed or not w.cfg.turn_traces):
            return None
        cols = "id, received_at, event, turn_id, payload, late"
        if w.finalize:
            rows = con.execute(f"SELECT {cols} FROM raw_events WHERE session_id = ? AND id <= ?"
                               " AND status = 'ok' ORDER BY id", (sid, last_id)).fetchall()
        else:
            rows = sorted(_in_query(
                con, f"SELECT {cols} FROM raw_events WHERE session_id = ? AND id <= ?"
                " AND status = 'ok' AND turn_id IN ({})", closed, (sid, last_id)))
        kv = con.execute("SELECT value FROM kv WHERE key = ?", (KV_ROLLOUT + sid,)).fetchone()
        prev_turn_revs: dict[str, int] = {}
        if w.finalize and w.cfg.granularity == "turn":
            for tid, rev in con.execute(
                    "SELECT trace_id, revision FROM traces WHERE session_id = ? AND kind = 'turn'",
                    (sid,)):
                prev_turn_revs[tid] = rev

    # The rollout: only the bytes written since last time (outside any transaction).
    rstate = RolloutState.from_json(kv[0]) if kv else RolloutState()
    if rstate.offset != r_off:  # facts and offset disagree: start the file again
        rstate = RolloutState()
    new_r = read_incremental(transcript, rstate) if transcript else rstate
    changed = new_r.offset != r_off
    facts = new_r.facts()
    meta_src = new_r.meta.get("source")
    session = SessionFacts(
        session_id=sid, cwd=cwd, project=project, model=model, permission_mode=pmode,
        source=source or meta_src, codex_version=new_r.cli_version or cver,
        git_branch=new_r.git_branch or gbranch, git_commit=new_r.git_commit or gcommit)
    limits = Limits(w.cfg.max_input_preview, w.cfg.max_output_preview)

    by_turn: dict[str, list[Event]] = {}
    lifecycle: list[Event] = []
    loads = orjson.loads
    for rid, at, event, tid, payload, late in rows:
        # Event.from_row, inlined (the hot loop of a pass).
        try:
            obj = loads(payload) if payload else {}
        except (ValueError, RecursionError, TypeError):  # truncated payload kept by ingest
            obj = {}
        if obj.__class__ is not dict:
            obj = {}
        ev = Event(rid, at, event, tid, obj, bool(late))
        if tid is None or event in LIFECYCLE_EVENTS:
            lifecycle.append(ev)
        else:
            evs = by_turn.get(tid)
            if evs is None:
                by_turn[tid] = [ev]
            else:
                evs.append(ev)
    parts: dict[str, TurnPart] = {tid: build_part(tid, evs, limits, facts)
                                  for tid, evs in by_turn.items()}
    # Each step becomes a dict once, shared by its turn trace and the summary.
    memo: dict[int, dict] = {}

    b = _Built(sid, w.cfg, w.finalize, state, last_id, summ_rev, r_off,
               new_r if changed else None, event_count=len(rows))
    trace_of = {t[0]: t[3] for t in turn_rows}
    if w.cfg.turn_traces:
        for tid, _seq, tstate, ttrace, through in turn_rows:
            part = parts.get(tid)
            if part is None:
                continue
            if tstate == "closed":
                row = TraceRow.of(build_turn_trace(session, part).to_dict(memo))
                b.turn_traces.append((tid, row, None, False))
                trace_of[tid] = row.trace_id
            elif tstate == "open" and w.finalize:
                row = TraceRow.of(build_turn_trace(session, part, end_reason=(
                    "session ended" if w.finalize == "ended" else "session went stale")
                ).to_dict(memo))
                b.turn_traces.append((tid, row, None, True))
                trace_of[tid] = row.trace_id
            elif (tstate == "traced" and w.finalize and w.cfg.granularity == "turn"
                  and (through is None or any(e.id > through for e in part.events))):
                # Late events for a traced turn, and no session trace to carry them.
                rev = prev_turn_revs.get(ttrace or "", 0) + 1
                row = TraceRow.of(build_turn_trace(session, part, revision=rev,
                                                   supersedes=ttrace).to_dict(memo))
                b.turn_traces.append((tid, row, ttrace, True))
                trace_of[tid] = row.trace_id
    if w.finalize and w.cfg.session_traces and parts:
        rev = summ_rev + 1
        prev = trace_id(sid, None, "session", summ_rev) if summ_rev else None
        b.summary = TraceRow.of(build_session_trace(
            session, list(parts.values()), lifecycle=lifecycle, revision=rev, supersedes=prev,
            end_reason="ended" if w.finalize == "ended" else "stale (no event for the TTL)",
            turn_trace_ids={k: v for k, v in trace_of.items() if v},
            rollout_total=new_r.total and facts.total_usage).to_dict(memo))
    return b


_TRACE_INSERT = (
    "INSERT OR IGNORE INTO traces (trace_id, kind, session_id, turn_id, revision, supersedes,"
    " project, name, created_at, started_at, ended_at, event_count, body)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)")
_OUTBOX_INSERT = (
    "INSERT OR IGNORE INTO outbox (trace_id, sink, state, attempts, created_at, next_attempt_at)"
    " VALUES (?, ?, 'pending', 0, ?, ?)")


def _trace_row(row: TraceRow, now: float) -> tuple:
    return (*row[:8], now, *row[8:])


def _write_group(con: sqlite3.Connection, group: list[_Built], now: float,
                 res: AggregateResult) -> None:
    """Apply built sessions (inside the caller's write transaction).

    Each session is re-checked against what it was built from (state, indexed
    events, summary revision, each turn's state): work another pass did, or
    that events arriving since made stale, is dropped.  The state of the whole
    group is read up front and the writes go in a few ``executemany`` calls
    (per-statement overhead dominated small sessions).

    A trace holds exactly the events read for it: its turn's (or session's)
    'ok' events up to what was indexed when they were read (the watermarks
    ``traced_through_id`` / ``summarised_through_id``).  Rows at or below an
    indexed id never change: ingest only parses rows above the aggregate cursor,
    and retention deletes only final sessions (the state re-check sees that).
    """
    sids = [b.session_id for b in group]
    current = {r[0]: r[1:] for r in _in_query(
        con, "SELECT session_id, state, last_event_id, summary_revision FROM sessions"
        " WHERE session_id IN ({})", sids)}
    turn_state = {(r[0], r[1]): (r[2], r[3]) for r in _in_query(
        con, "SELECT session_id, turn_id, state, trace_id FROM turns WHERE session_id IN ({})",
        sids)}
    new_ids = [row.trace_id for b in group for _t, row, *_ in b.turn_traces]
    new_ids += [b.summary.trace_id for b in group if b.summary is not None]
    existing = {r[0] for r in _in_query(
        con, "SELECT trace_id FROM traces WHERE trace_id IN ({})", new_ids)}

    trace_rows: list[tuple] = []
    outbox: list[tuple] = []
    traced: list[tuple] = []
    finals: list[tuple] = []
    execute = con.execute

    def queue_trace(row: TraceRow, sinks: tuple[str, ...]) -> bool:
        """Queue a trace and its outbox rows; True if it is not in the database yet."""
        trace_rows.append(_trace_row(row, now))
        outbox.extend((row.trace_id, s, now, now) for s in sinks)
        if row.trace_id in existing:
            return False
        existing.add(row.trace_id)
        res.trace_ids.append(row.trace_id)
        return True
    for b in group:
        sid = b.session_id
        cur = current.get(sid)
        if cur is None:
            continue
        sinks = b.cfg.effective_sinks()
        unchanged = (cur[0] == b.read_state and cur[1] == b.read_last_event_id
                     and cur[2] == b.read_summary_revision)
        finalize = b.finalize is not None and unchanged
        if b.finalize is not None and not unchanged:
            res.conflicts += 1
        # Events of a turn indexed after we read it are late (the indexer flags the
        # ones it has not seen yet itself); none can be when nothing was indexed since.
        indexed_since = cur[1] > b.read_last_event_id
        for tid, row, supersedes, needs_finalize in b.turn_traces:
            if needs_finalize and not finalize:
                continue
            trow = turn_state.get((sid, tid))
            if trow is None:
                continue
            if supersedes is None and trow[0] == "traced":
                res.conflicts += 1
                continue  # another pass traced it
            if supersedes is not None and trow[1] != supersedes:
                res.conflicts += 1
                continue
            if queue_trace(row, sinks):
                res.turn_traces += 1
            traced.append((row.trace_id, row.ended_at, b.read_last_event_id, sid, tid))
            if indexed_since:
                late = execute(
                    "UPDATE raw_events SET late = 1 WHERE session_id = ? AND turn_id = ?"
                    " AND id > ? AND id <= ? AND late = 0",
                    (sid, tid, b.read_last_event_id, cur[1])).rowcount
                if late:
                    res.late_events += late
                    execute("UPDATE sessions SET late_event_count = late_event_count + ?"
                            " WHERE session_id = ?", (late, sid))
        if finalize:
            if b.summary is not None:
                row = b.summary
                if queue_trace(row, sinks):
                    res.session_traces += 1
                finals.append((sid, row.revision, b.read_last_event_id, row.trace_id,
                               b.cfg.turn_traces))
            else:
                finals.append((sid, None, None, None, b.cfg.turn_traces))
            res.sessions_finalised += 1
    con.executemany(_TRACE_INSERT, trace_rows)
    con.executemany("UPDATE turns SET state = 'traced', trace_id = ?,"
                    " closed_at = COALESCE(closed_at, ?), traced_through_id = ?"
                    " WHERE session_id = ? AND turn_id = ?", traced)
    con.executemany(_OUTBOX_INSERT, outbox)
    for sid, revision, through, summary_id, own_turn_traces in finals:
        if not own_turn_traces:  # session granularity: the summary holds the turns
            if summary_id is not None:
                execute("UPDATE turns SET state = 'traced', trace_id = ? WHERE session_id = ?",
                        (summary_id, sid))
            else:  # an empty session: nothing to trace
                execute("UPDATE turns SET state = 'traced' WHERE session_id = ?", (sid,))
        if summary_id is not None:
            execute("UPDATE sessions SET state = 'final', summary_revision = ?,"
                    " summarised_through_id = ? WHERE session_id = ?", (revision, through, sid))
        else:
            execute("UPDATE sessions SET state = 'final' WHERE session_id = ?", (sid,))
    for b in group:
        if b.rollout is None or b.session_id not in current:
            continue
        r = b.rollout
        ok = execute(
            "UPDATE sessions SET rollout_offset = ?, codex_version = COALESCE(?, codex_version),"
            " git_branch = COALESCE(?, git_branch), git_commit = COALESCE(?, git_commit)"
            " WHERE session_id = ? AND rollout_offset = ?",
            (r.offset, r.cli_version, r.git_branch, r.git_commit, b.session_id,
             b.read_rollout_offset)).rowcount
        if ok:
            execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)",
                    (KV_ROLLOUT + b.session_id, r.to_json()))
    _bump_writes(con, now)


class _Sizer:
    """Sizes the groups of sessions written in one transaction: the first holds
    WRITE_GROUP_EVENTS events; later ones are sized from the time the previous
    full ones took, so a transaction lasts about WRITE_TX_TARGET_MS."""

    def __init__(self) -> None:
        self.group_events = WRITE_GROUP_EVENTS

    def observe(self, events: int, ms: float) -> None:
        if events >= self.group_events // 2 and ms > 0:  # a full group: a fair sample
            fit = WRITE_TX_TARGET_MS * events / ms
            self.group_events = int(min(WRITE_GROUP_MAX, max(1, (self.group_events + fit) / 2)))


def _flush(con: sqlite3.Connection, group: list[_Built], now: float, res: AggregateResult,
           sizer: _Sizer, ckpt: _Checkpointer) -> None:
    """Write one group of built sessions in one transaction; when that fails,
    each session alone (one bad session must not block the others).  Counts
    reach ``res`` only for what was committed."""
    try:
        started = time.perf_counter()
        done = AggregateResult()
        with _tx(con):
            _write_group(con, group, now, done)
        ms = (time.perf_counter() - started) * 1000
        res.add(done)
        res.max_write_ms = max(res.max_write_ms, ms)
        sizer.observe(sum(b.event_count for b in group), ms)
    except Exception:
        for b in group:
            try:
                done = AggregateResult()
                with _tx(con):
                    _write_group(con, [b], now, done)
                res.add(done)
            except Exception:
                res.errors += 1
                _log_error(con, now, f"session {b.session_id}: {traceback.format_exc()}")
    finally:
        ckpt.request()


# A pass with at least this many events to index or read builds them in
# builder processes (spool.builders) when the machine has more than one core.
PARALLEL_MIN_EVENTS = 20_000
PROCESSES_ENV = "SPOOL_AGGREGATE_PROCESSES"


def _processes(env: Mapping[str, str]) -> int:
    """How many builder processes a big pass may use (SPOOL_AGGREGATE_PROCESSES;
    default: one per core beside the pass's own, at most 4; 0: none)."""
    try:
        return max(0, int(env[PROCESSES_ENV]))
    except (KeyError, ValueError):
        return max(0, min(4, (os.cpu_count() or 1) - 1))


class _Runner:
    """Builds and writes one pass's due sessions.

    Built sessions are written in groups (one transaction each, sized by
    _Sizer).  A big pass builds in builder processes while this one indexes
    and writes; once the index is done, this process also builds whatever the
    builders have not started while it has nothing to write.  With builders, a
    session is handed over while the index is still running as soon as it is
    due to be finalised and none of its events lie beyond the indexed ones:
    later index batches cannot change it, so it is built from exactly the state
    the end of the index would show (and each write re-checks that state
    anyway).  Builders that fail are not started again in the same pass."""

    def __init__(self, con: sqlite3.Connection, now: float, cfgs: _Configs,
                 res: AggregateResult, ckpt: _Checkpointer, stale: bool):
        self.con, self.now, self.cfgs, self.res, self.ckpt = con, now, cfgs, res, ckpt
        self.stale = stale
        self.sizer = _Sizer()
        self.pending: list[_Built] = []
        self.pending_events = 0
        self.pool = None
        self.builders_failed = False
        self.handed: set[str] = set()  # sessions handed over during the index

    # --- builders ---

    def start_builders(self, events: int) -> None:
        processes = _processes(self.cfgs.env)
        if (self.pool is not None or self.builders_failed or not processes
                or events < PARALLEL_MIN_EVENTS):
            return
        from .builders import BuilderError, BuilderPool

        db_path = os.path.abspath(self.con.execute("PRAGMA database_list").fetchone()[2])
        try:
            self.pool = BuilderPool(db_path, processes)
        except BuilderError as exc:
            self.builders_failed = True
            _log_error(self.con, self.now, f"{exc}; building in the pass's process")
            return
        self.res.builder_processes = processes

    def _builders_failed(self, exc: Exception) -> None:
        """A builder died: build what it had, and everything after, here."""
        left = self.pool.unfinished()
        self.res.built_by_builders += self.pool.built
        self.pool.close()
        self.pool = None
        self.builders_failed = True
        _log_error(self.con, self.now, f"builder processes: {exc}; building in the pass's process")
        for w in left:
            self.take(w, self.build(w))

    def after_index_batch(self, touched: dict, cursor: int) -> None:
        if self.pool is None:
            return
        from .builders import BuilderError

        early = []
        for sid, (state, cwd, last_at, events) in touched.items():
            cfg = self.cfgs.get(cwd)
            kind = _finalize_kind(state, self.now - last_at, cfg, self.stale)
            if kind is None or self.con.execute(
                    "SELECT 1 FROM raw_events WHERE session_id = ? AND id > ? LIMIT 1",
                    (sid, cursor)).fetchone() is not None:
                continue
            early.append(_Work(sid, cfg, kind, events))
            self.handed.add(sid)
        try:
            if early:
                self.pool.submit(early, [w.events for w in early])
            for w, b in self.pool.ready():
                self.take(w, b)
        except BuilderError as exc:
            self._builders_failed(exc)

    # --- building and writing ---

    def build(self, w: _Work) -> "_Built | None | str":
        try:
            return read_session(self.con, w)
        except Exception:
            return traceback.format_exc()

    def take(self, w: _Work, b: "_Built | None | str") -> None:
        if b is None:
            return
        if isinstance(b, str):
            self.res.errors += 1
            _log_error(self.con, self.now, f"session {w.session_id}: {b}")
            return
        self.pending.append(b)
        self.pending_events += b.event_count
        if self.pending_events >= self.sizer.group_events:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            _flush(self.con, self.pending, self.now, self.res, self.sizer, self.ckpt)
        self.pending, self.pending_events = [], 0

    def run(self, work: list[_Work]) -> None:
        """Build and write ``work`` (what is due after the index) and whatever
        was handed to the builders during it."""
        from .builders import BuilderError

        work = [w for w in work if w.session_id not in self.handed]
        self.start_builders(sum(w.events for w in work))
        if self.pool is not None:
            try:
                self.pool.submit(work, [w.events for w in work])
                for w, b in self.pool.drain(local=self.build):
                    self.take(w, b)
                work = []
            except BuilderError as exc:
                self._builders_failed(exc)
                work = []
        for w in work:
            self.take(w, self.build(w))
        self.flush()

    def close(self) -> None:
        if self.pool is not None:
            self.res.built_by_builders += self.pool.built
            self.pool.close()
            self.pool = None


# --- entry points -------------------------------------------------------------------------


def _pass(engine: Engine, now: float, env: Mapping[str, str] | None, *,
          stale: bool) -> AggregateResult:
    res = AggregateResult()
    cfgs = _Configs(env)
    ckpt = _Checkpointer(engine)
    try:
        with _connect(engine) as con:
            runner = _Runner(con, now, cfgs, res, ckpt, stale)
            try:
                runner.start_builders(_backlog(con))
                _index(con, now, cfgs, res, ckpt, runner.after_index_batch)
                runner.run(_due(con, now, cfgs, stale=stale))
            finally:
                runner.close()
    finally:
        ckpt.close()
    res.max_checkpoint_ms = max(res.max_checkpoint_ms, ckpt.max_ms)
    return res


def aggregate(engine: Engine, now: float, *, env: Mapping[str, str] | None = None) -> AggregateResult:
    """One pass: index new events, trace closed turns, finalise ended sessions."""
    return _pass(engine, now, env, stale=False)


def sweep(engine: Engine, now: float, *, env: Mapping[str, str] | None = None) -> int:
    """Finalise sessions quiet for ``session_ttl``.  Returns how many were finalised."""
    return _pass(engine, now, env, stale=True).sessions_finalised


def run_pass(engine: Engine, now: float | None = None, *,
             env: Mapping[str, str] | None = None) -> AggregateResult:
    """aggregate() then sweep(), what the worker's job does (convenience)."""
    now = time.time() if now is None else now
    res = aggregate(engine, now, env=env)
    res.sessions_finalised += sweep(engine, now, env=env)
    return res
