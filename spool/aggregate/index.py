"""Indexing: parsed raw events -> ``sessions`` and ``turns`` rows.

The events parsed since the last pass (``raw_events.id`` above the ``cursors``
row ``aggregate``, status ``ok``; it stops at the first row ingest has not
parsed yet) create/update sessions and turns: a turn is *closed* by its Stop,
a session *ended* by SessionEnd, and any event reopens an ended/final session.
Events without ``turn_id`` (older Codex) get a synthetic one
(``synthetic:<event id>``, written into ``raw_events.turn_id``):
UserPromptSubmit opens such a turn, Stop closes it.  An event for a turn
already traced is flagged ``late`` and counted.

Each batch is planned in a read transaction (all the per-row work: the write
lock the hooks wait for is not held meanwhile) and only applied under the
write lock, after checking nothing changed meanwhile (``marks``: the cursor,
and the ``aggregate-writes`` counter every other writer of sessions/turns
bumps: ``bump_writes``).
"""
from __future__ import annotations

import sqlite3
import time
from typing import NamedTuple

from ..wal_checkpointer import Checkpointer
from .connection import chunks, in_query, tx
from .result import AggregateResult, Configs

CURSOR = "aggregate"
# A cursors row every transaction that changes sessions or turns, other than
# the index's own, increments (see bump_writes).
WRITES = "aggregate-writes"
SYNTHETIC = "synthetic:"
# Rows per index batch: the first batch; later ones are sized from the time
# the previous full ones held the write lock (applying a plan made outside it),
# so that lasts about WRITE_TX_TARGET_MS.
INDEX_BATCH = 1000
INDEX_BATCH_MIN = 100
INDEX_BATCH_MAX = 8000
WRITE_TX_TARGET_MS = 15.0

_SESSION_COLS = ("state", "cwd", "transcript_path", "model", "permission_mode", "source",
                 "project", "first_event_at", "last_event_at", "last_event_id", "ended_at",
                 "event_count", "late_event_count", "run_id", "codex_pid", "codex_start")


def marks(con: sqlite3.Connection) -> tuple[int, int]:
    """(the index cursor, the writes counter): what an index plan was made from."""
    vals = dict(con.execute("SELECT name, value FROM cursors WHERE name IN (?, ?)",
                            (CURSOR, WRITES)).fetchall())
    return vals.get(CURSOR, 0), vals.get(WRITES, 0)


# Run inside every transaction that changes sessions or turns, other than the
# index's own (the writer here, retention in spool.maintenance): index plans
# made before it are stale.  One parameter: the time.
BUMP_WRITES_SQL = (
    f"INSERT INTO cursors (name, value, updated_at) VALUES ('{WRITES}', 1, ?)"
    " ON CONFLICT(name) DO UPDATE SET value = value + 1, updated_at = excluded.updated_at")


def bump_writes(con: sqlite3.Connection, now: float) -> None:
    con.execute(BUMP_WRITES_SQL, (now,))


def index(con: sqlite3.Connection, now: float, cfgs: Configs, res: AggregateResult,
          ckpt: Checkpointer) -> None:
    """Index every parsed event not indexed yet, in short write transactions.

    Each batch is planned in a read transaction (all the per-row work: the
    write lock the hooks wait for is not held meanwhile), then applied in a
    write transaction that first checks the plan is still current: the cursor
    and the writes counter (bump_writes) unchanged, i.e. no other pass indexed
    or traced anything since.  Otherwise it is planned again inside the write
    transaction.  Nothing else a plan reads can change under it: rows up to the
    first unparsed one are never rewritten above the cursor (ingest only parses
    'new' rows; retention only deletes sessions with no unindexed event, and bumps the
    writes counter when it deletes sessions or turns)."""
    batch = INDEX_BATCH
    while True:
        with tx(con, immediate=False):  # a snapshot; an idle pass takes no write lock
            plan = plan_batch(con, now, cfgs, batch)
        if plan is None:
            return
        started = time.perf_counter()
        with tx(con):
            if marks(con) != plan.marks:
                plan = plan_batch(con, now, cfgs, batch)
            if plan is not None:
                apply_batch(con, plan, now)
        ms = (time.perf_counter() - started) * 1000
        res.max_write_ms = max(res.max_write_ms, ms)
        if plan is None:
            return
        if plan.more and ms > 0:  # a full batch: resize towards the target
            fit = batch * WRITE_TX_TARGET_MS / ms
            batch = int(min(INDEX_BATCH_MAX, max(INDEX_BATCH_MIN, (batch + fit) / 2)))
        ckpt.request()
        res.indexed += plan.indexed
        if not plan.more:
            return


class IndexPlan(NamedTuple):
    """One index batch's writes, and what they were planned from."""

    marks: tuple[int, int]  # marks() when planned
    cursor: int  # the new cursor
    indexed: int  # usable events in the batch
    more: bool  # a full batch: there may be more
    session_inserts: list
    session_updates: list
    turn_inserts: list
    turn_updates: list
    synthetic: list  # (turn_id, raw event id) for events that had none
    late: list  # (raw event id,) of events for turns already traced


def _turns_of(con: sqlite3.Connection, keys: list[tuple[str, str]]) -> dict:
    """(session, turn) -> (state, closed_at) of the existing ones among ``keys``."""
    out: dict = {}
    for chunk in chunks(keys, 400):
        sql = ("WITH k(s, t) AS (VALUES " + ",".join(["(?,?)"] * len(chunk)) + ")"
               " SELECT k.s, k.t, turns.state, turns.closed_at FROM k"
               " JOIN turns ON turns.session_id = k.s AND turns.turn_id = k.t")
        for sid, tid, state, closed_at in con.execute(sql, [x for key in chunk for x in key]):
            out[(sid, tid)] = (state, closed_at)
    return out


def plan_batch(con: sqlite3.Connection, now: float, cfgs: Configs,
                batch: int) -> IndexPlan | None:
    """Plan the next index batch (reads only); None when there is nothing to index."""
    planned_from = marks(con)
    pos = planned_from[0]
    # status as a small int (0 new, 1 ok, 2 other): no string made per row.
    # The session facts come from the columns ingest filled from the payload
    # (spool.ingest.FACT_COLUMNS), and the hook's cwd.
    rows = con.execute(
        "SELECT id, received_at, CASE status WHEN 'ok' THEN 1 WHEN 'new' THEN 0 ELSE 2 END,"
        " session_id, turn_id, event, payload_cwd, cwd, payload_transcript_path, payload_model,"
        " payload_permission_mode, payload_source, run_id, codex_pid, codex_start"
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
    for srow in in_query(con, f"SELECT session_id, {', '.join(_SESSION_COLS)} FROM sessions"
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
    next_seq: dict[str, int] = dict(in_query(
        con, "SELECT session_id, max(seq) FROM turns WHERE session_id IN ({})"
        " GROUP BY session_id", known_sids))

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
                "run_id": None, "codex_pid": None, "codex_start": None,
            }
        # The session's counters as locals for the loop, written back after it.
        state = s["state"]
        first_at = s["first_event_at"]
        last_at = s["last_event_at"]
        ended_at = s["ended_at"]
        late_n = s["late_event_count"]
        probed = False
        by_tid: dict[str, dict] = {}
        for (rid, received_at, _status, _sid, turn_id, event, cwd, hook_cwd, transcript, model,
             permission_mode, source, run_id, codex_pid, codex_start) in srows:
            if run_id and not s["run_id"]:
                s["run_id"] = run_id
            if codex_pid is not None:  # the latest Codex process (a resume starts another)
                s["codex_pid"], s["codex_start"] = codex_pid, codex_start
            if (event == "SessionStart" or event == "UserPromptSubmit"
                    or (not probed and (not s["cwd"] or not s["transcript_path"]))):
                probed = True
                if not s["cwd"]:
                    s["cwd"] = cwd or hook_cwd
                if transcript:
                    s["transcript_path"] = transcript
                if model:
                    s["model"] = model
                if permission_mode:
                    s["permission_mode"] = permission_mode
                if event == "SessionStart" and source and not s["source"]:
                    s["source"] = source
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
            elif (event == "Stop" or event == "SubagentStop") and tstate == "open":
                # SubagentStop ends a subagent's turn (the child fires no Stop).
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
                            s["event_count"], s["late_event_count"], s["run_id"],
                            s["codex_pid"], s["codex_start"]))
        else:
            updates.append((s["cwd"], s["transcript_path"], s["model"], s["permission_mode"],
                            s["source"], s["first_event_at"], s["last_event_at"],
                            s["last_event_id"], s["state"], s["ended_at"], s["event_count"],
                            s["late_event_count"], s["run_id"], s["codex_pid"], s["codex_start"],
                            sid))
    new_turns = sorted(((t["_at"], sid, tid, t["seq"], t["opened_at"], t["closed_at"], t["state"])
                        for (sid, tid), t in turns.items() if t["_new"]))
    return IndexPlan(
        planned_from, new_pos, n_usable, len(rows) == batch and not blocked, inserts, updates,
        [nt[1:] for nt in new_turns],
        [(t["state"], t["closed_at"], sid, tid) for (sid, tid), t in turns.items()
         if t["_dirty"] and not t["_new"]],
        synth_updates, late_ids)


def apply_batch(con: sqlite3.Connection, plan: IndexPlan, now: float) -> None:
    con.executemany(
        "INSERT INTO sessions (session_id, project, cwd, transcript_path, model,"
        " permission_mode, source, first_event_at, last_event_at, last_event_id, state,"
        " ended_at, event_count, late_event_count, run_id, codex_pid, codex_start)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        plan.session_inserts)
    con.executemany(
        "UPDATE sessions SET cwd = ?, transcript_path = ?, model = ?, permission_mode = ?,"
        " source = ?, first_event_at = ?, last_event_at = ?, last_event_id = ?, state = ?,"
        " ended_at = ?, event_count = ?, late_event_count = ?, run_id = ?, codex_pid = ?,"
        " codex_start = ? WHERE session_id = ?",
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

