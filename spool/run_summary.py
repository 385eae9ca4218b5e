"""What one ``spool run`` recorded, and the one line it prints on stderr.

``activity`` reads the spool database with the standard library's sqlite3,
read-only (``mode=ro``): the summary is printed after Codex exits, where
importing SQLAlchemy would cost ~0.3-0.7 s of the run.  ``settled`` and
``summary_line`` are pure.
"""
from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path

# outbox states that are still on their way
IN_PROGRESS = ("pending", "in_flight", "failed")
# a trace body's usage key -> the PostModelRequest token_usage key
_TRACE_USAGE = (("input", "input_tokens"), ("cached", "cached_input_tokens"),
                ("output", "output_tokens"), ("reasoning", "reasoning_output_tokens"),
                ("total", "total_tokens"))
NOTHING = {"events": 0, "unparsed": 0, "sessions": [], "turns": [], "open_turns": [],
           "usages": [], "outbox": []}


def connect(path: Path) -> sqlite3.Connection:
    uri = "file:" + str(path).replace("%", "%25").replace("?", "%3f").replace("#", "%23")
    con = sqlite3.connect(uri + "?mode=ro", uri=True, timeout=5)
    con.execute("PRAGMA query_only = 1")
    return con


def activity(con: sqlite3.Connection, since: float, cwd: str) -> dict:
    """What the hook events received since ``since`` in ``cwd`` (or below it) became.

    Keys: events, unparsed (not yet ingested), sessions, turns ([(session_id,
    turn_id)] with a Stop), open_turns (of those, not yet traced), usages
    (per turn: its trace's usage once traced, else its PostModelRequest token_usage
    payloads), outbox ([{trace_id, kind, sink,
    state}] of the traces made from them).  Reads only the rows received since
    then (ix_raw_events_received), their turns and their traces.
    """
    (mark,) = con.execute("SELECT coalesce(min(id), 1 << 62) - 1 FROM raw_events"
                          " WHERE received_at >= ?", (since,)).fetchone()
    (unparsed,) = con.execute("SELECT count(*) FROM raw_events WHERE status = 'new' AND id > ?",
                              (mark,)).fetchone()
    rows = con.execute(
        "SELECT session_id, turn_id, event, payload FROM raw_events WHERE id > ?"
        " AND received_at >= ? AND status = 'ok'"
        " AND (cwd = ? OR substr(cwd, 1, length(?) + 1) = ? || '/') ORDER BY id",
        (mark, since, cwd, cwd, cwd)).fetchall()
    sessions: list[str] = []
    stopped: list[tuple[str, str]] = []
    usages_of: dict[tuple[str, str], list[dict]] = {}
    for sid, tid, event, payload in rows:
        if sid and sid not in sessions:
            sessions.append(sid)
        if event == "Stop" and tid and (sid, tid) not in stopped:
            stopped.append((sid, tid))
        elif event == "PostModelRequest":
            try:
                usage = json.loads(payload).get("token_usage")
            except (ValueError, AttributeError):
                usage = None
            if isinstance(usage, dict):
                usages_of.setdefault((sid, tid), []).append(usage)
    states = {}
    for sid, tid in stopped:  # uq_turns_session_turn lookups
        row = con.execute("SELECT state, trace_id FROM turns WHERE session_id = ? AND turn_id = ?",
                          (sid, tid)).fetchone()
        if row is not None:
            states[(sid, tid)] = row
    open_turns = [k for k in stopped if states.get(k, (None, None))[0] != "traced"]
    trace_ids = [t for _state, t in states.values() if t]
    # A traced turn's tokens are its trace's: exact even when an async
    # PostModelRequest hook was killed at exit (the trace took it from the rollout).
    for key, (state, tid) in states.items():
        if state != "traced" or not tid:
            continue
        row = con.execute("SELECT json_extract(body, '$.usage') FROM traces WHERE trace_id = ?",
                          (tid,)).fetchone()
        try:
            u = json.loads(row[0]) if row and row[0] else None
        except ValueError:
            u = None
        if isinstance(u, dict):
            usages_of[key] = [{theirs: u.get(ours, 0) for ours, theirs in _TRACE_USAGE}]
    usages = [u for us in usages_of.values() for u in us]
    outbox: list[dict] = []
    if sessions:
        (first_at,) = con.execute("SELECT min(received_at) FROM raw_events WHERE id > ?",
                                  (mark,)).fetchone()
        sql = ("SELECT t.trace_id, t.kind, o.sink, o.state FROM traces AS t"
               " JOIN outbox AS o ON o.trace_id = t.trace_id WHERE t.trace_id IN ({})"
               " OR (t.kind = 'session' AND t.session_id IN ({}) AND t.created_at >= ?)")
        sql = sql.format(",".join("?" * len(trace_ids)) or "NULL", ",".join("?" * len(sessions)))
        outbox = [{"trace_id": r[0], "kind": r[1], "sink": r[2], "state": r[3]}
                  for r in con.execute(sql, (*trace_ids, *sessions, first_at))]
    return {"events": len(rows), "unparsed": unparsed, "sessions": sessions, "turns": stopped,
            "open_turns": open_turns, "usages": usages, "outbox": outbox}


def overflow_waiting(home: Path) -> bool:
    """Hook events kept in overflow files (the database was missing or locked) that the
    worker has not ingested yet.  The same places as spool.ingest.overflow_files, without
    importing the database layer."""
    from . import paths

    for i, directory in enumerate((home, paths.fallback_overflow_dir(home))):
        if i and not paths.is_private_dir(directory):
            continue
        try:
            if any(directory.glob(paths.OVERFLOW_PREFIX + "*.jsonl")):
                return True
        except OSError:
            continue
    return False


def settled(activity: dict) -> bool:
    """Nothing of this run left to ingest, trace or deliver (a retrying row is not settled)."""
    return (not activity["unparsed"] and not activity.get("overflow") and not activity["open_turns"]
            and not any(r["state"] in IN_PROGRESS for r in activity["outbox"]))


def tokens(usages: list[dict]) -> dict[str, int]:
    keys = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_output_tokens",
            "total_tokens")
    total = {k: 0 for k in keys}
    for u in usages:
        for k in keys:
            v = u.get(k)
            if isinstance(v, int) and not isinstance(v, bool):
                total[k] += v
    return total


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def summary_line(activity: dict, *, exit_code: int, waited: float, timed_out: bool,
                 run_id: str | None = None) -> str:
    """``spool run: 1 session, 2 turns, 1,234 tokens (in 1,000, out 234); 2 traces -> file: 2 sent``."""
    head = "spool run" + (f" {run_id}" if run_id else "")
    if not activity["events"] and not activity["unparsed"] and not activity.get("overflow"):
        return (f"{head}: no hook events recorded{' yet' if timed_out else ''} (Codex exited {exit_code}); "
                "run `spool doctor` if you expected some.")
    t = tokens(activity["usages"])
    parts = [f"{_plural(len(activity['sessions']), 'session')}, "
             f"{_plural(len(activity['turns']), 'turn')}, "
             f"{t['total_tokens']:,} tokens (in {t['input_tokens']:,}, "
             f"cached {t['cached_input_tokens']:,}, out {t['output_tokens']:,})"]
    traces = {r["trace_id"] for r in activity["outbox"]}
    by_sink: dict[str, Counter] = {}
    for r in activity["outbox"]:
        by_sink.setdefault(r["sink"], Counter())[r["state"]] += 1
    if by_sink:
        sinks = "; ".join(f"{sink}: " + ", ".join(f"{n} {state}" for state, n in sorted(c.items()))
                          for sink, c in sorted(by_sink.items()))
        parts.append(f"{_plural(len(traces), 'trace')} -> {sinks}")
    else:
        parts.append("no traces yet")
    if activity["open_turns"] or activity["unparsed"] or activity.get("overflow"):
        parts.append(f"{_plural(len(activity['open_turns']), 'turn')} not traced yet")
    line = f"{head}: " + "; ".join(parts)
    if timed_out:
        line += f" (still in progress after {waited:.0f} s: `spool history` shows the rest)"
    return line
