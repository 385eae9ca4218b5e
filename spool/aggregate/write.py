"""Writing built sessions: traces, outbox rows and watermarks, after a re-check.

Built sessions are written in groups, one ``BEGIN IMMEDIATE`` transaction
each: insert the traces, one outbox row per sink, and mark the events
consumed by moving watermarks (``EVENT_TRACES``): a turn trace holds its
turn's events up to ``turns.traced_through_id``, a session summary the
session's events up to ``sessions.summarised_through_id``; an event row is
never rewritten for it (only the rare late ones get ``late``).  Trace ids are
deterministic (spool.trace.trace_id) and every insert is ``INSERT OR IGNORE``
guarded by state checks, so a crash, a re-run or a concurrent pass never makes
a second trace.
"""
from __future__ import annotations

import sqlite3
import time
import traceback

from .. import usage
from ..wal_checkpointer import Checkpointer
from .connection import in_query, log_error, tx
from .index import WRITE_TX_TARGET_MS, bump_writes
from .result import AggregateResult
from .session import KV_ROLLOUT, Built, NewTrace

# Sessions whose write transactions are grouped into one (small sessions only):
# the first group holds WRITE_GROUP_EVENTS events; later ones are sized from the
# time the previous ones took, so a transaction lasts about WRITE_TX_TARGET_MS
# (bigger groups rewrite fewer pages, shorter ones keep the hooks' wait short).
WRITE_GROUP_EVENTS = 1000
WRITE_GROUP_MAX = 4000

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




_TRACE_INSERT = (
    "INSERT OR IGNORE INTO traces (trace_id, kind, session_id, turn_id, revision, supersedes,"
    " project, name, created_at, started_at, ended_at, event_count, body)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)")
_OUTBOX_INSERT = (
    "INSERT OR IGNORE INTO outbox (trace_id, sink, state, attempts, created_at, next_attempt_at)"
    " VALUES (?, ?, 'pending', 0, ?, ?)")


def _row_values(row: NewTrace, now: float) -> tuple:
    return (*row[:8], now, *row[8:12])


def write_group(con: sqlite3.Connection, group: list[Built], now: float,
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
    current = {r[0]: r[1:] for r in in_query(
        con, "SELECT session_id, state, last_event_id, summary_revision FROM sessions"
        " WHERE session_id IN ({})", sids)}
    turn_state = {(r[0], r[1]): (r[2], r[3]) for r in in_query(
        con, "SELECT session_id, turn_id, state, trace_id FROM turns WHERE session_id IN ({})",
        sids)}
    new_ids = [row.trace_id for b in group for _t, row, *_ in b.turn_traces]
    new_ids += [b.summary.trace_id for b in group if b.summary is not None]
    existing = {r[0] for r in in_query(
        con, "SELECT trace_id FROM traces WHERE trace_id IN ({})", new_ids)}
    trace_rows: list[tuple] = []
    requests: list[dict] = []
    outbox: list[tuple] = []
    traced: list[tuple] = []
    finals: list[tuple] = []
    execute = con.execute

    def queue_trace(row: NewTrace, sinks: tuple[str, ...]) -> bool:
        """Queue a trace and its outbox rows; True if it is not in the database yet."""
        trace_rows.append(_row_values(row, now))
        requests.extend(row.requests)
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
        written: set[str] = set()  # the turns traced here
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
            written.add(tid)
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
                if not row.skipped <= written:  # a turn trace was dropped: its requests too
                    row = row._replace(requests=row.all_requests(), skipped=frozenset())
                if queue_trace(row, sinks):
                    res.session_traces += 1
                finals.append((sid, row.revision, b.read_last_event_id, row.trace_id,
                               b.cfg.turn_traces))
            else:
                finals.append((sid, None, None, None, b.cfg.turn_traces))
            res.sessions_finalised += 1
    con.executemany(_TRACE_INSERT, trace_rows)
    usage.record_requests(con, requests)
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
    bump_writes(con, now)


class Sizer:
    """Sizes the groups of sessions written in one transaction: the first holds
    WRITE_GROUP_EVENTS events; later ones are sized from the time the previous
    full ones took, so a transaction lasts about WRITE_TX_TARGET_MS."""

    def __init__(self) -> None:
        self.group_events = WRITE_GROUP_EVENTS

    def observe(self, events: int, ms: float) -> None:
        if events >= self.group_events // 2 and ms > 0:  # a full group: a fair sample
            fit = WRITE_TX_TARGET_MS * events / ms
            self.group_events = int(min(WRITE_GROUP_MAX, max(1, (self.group_events + fit) / 2)))


def flush(con: sqlite3.Connection, group: list[Built], now: float, res: AggregateResult,
           sizer: Sizer, ckpt: Checkpointer) -> None:
    """Write one group of built sessions in one transaction; when that fails,
    each session alone (one bad session must not block the others).  Counts
    reach ``res`` only for what was committed."""
    try:
        started = time.perf_counter()
        done = AggregateResult()
        with tx(con):
            write_group(con, group, now, done)
        ms = (time.perf_counter() - started) * 1000
        res.add(done)
        res.max_write_ms = max(res.max_write_ms, ms)
        sizer.observe(sum(b.event_count for b in group), ms)
    except Exception:
        for b in group:
            try:
                done = AggregateResult()
                with tx(con):
                    write_group(con, [b], now, done)
                res.add(done)
            except Exception:
                res.errors += 1
                log_error(con, now, f"session {b.session_id}: {traceback.format_exc()}")
    finally:
        ckpt.request()

