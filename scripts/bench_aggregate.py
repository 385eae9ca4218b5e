#!/usr/bin/env python
"""Benchmark: aggregate N events in M sessions, then time an idle pass.

    .venv/bin/python scripts/bench_aggregate.py                 # 1,000,000 events, 10,000 sessions
    .venv/bin/python scripts/bench_aggregate.py --events 100000 --sessions 1000
    SPOOL_AGGREGATE_PROCESSES=0 .venv/bin/python scripts/bench_aggregate.py   # no builders

How the events get in: they are inserted directly with ``executemany`` into
``raw_events`` as status ``'ok'`` with ``session_id``/``turn_id``/``event``
already set (what ingest would have written), so the number measures the
aggregator alone, not the hook or the parse step.  Each session is
SessionStart, turns of 10 events (prompt, 2 model requests, 2 tool calls,
Stop), SessionEnd; 100 sessions run "concurrently" (their events interleave),
all ended well before the aggregation clock, so one pass traces every turn
and finalises every session.

Targets: >= 50,000 events/s; an idle pass afterwards < 50 ms.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spool import db  # noqa: E402
from spool.aggregate import PROCESSES_ENV, aggregate, sweep  # noqa: E402

TARGET_EPS = 50_000
TARGET_IDLE_MS = 50.0
CONCURRENT = 100


def turn_events(sid: str, tid: str, n: int) -> list[dict]:
    """A turn of exactly ``n`` (>= 2) events: prompt, requests/tools, Stop."""
    middle = []
    k = 0
    while len(middle) < n - 2:
        cycle = [
            {"hook_event_name": "PreModelRequest", "model": "gpt-bench"},
            {"hook_event_name": "PostModelRequest", "model": "gpt-bench", "status": "completed",
             "error": None, "token_usage": {"input_tokens": 1000 + k, "cached_input_tokens": 500,
                                            "cache_write_input_tokens": 0, "output_tokens": 100,
                                            "reasoning_output_tokens": 30,
                                            "total_tokens": 1100 + k}},
            {"hook_event_name": "PreToolUse", "tool_name": "Bash",
             "tool_input": {"command": f"echo {k}"}, "tool_use_id": f"call_{tid}_{k}"},
            {"hook_event_name": "PostToolUse", "tool_name": "Bash",
             "tool_input": {"command": f"echo {k}"}, "tool_response": f"{k}\n",
             "tool_use_id": f"call_{tid}_{k}"},
        ]
        middle.extend(cycle)
        k += 1
    middle = middle[: n - 2]
    evs = [{"hook_event_name": "UserPromptSubmit", "prompt": f"Please do task {tid}",
            "model": "gpt-bench", "permission_mode": "default"}] + middle + [
        {"hook_event_name": "Stop", "last_assistant_message": f"Done with {tid}.",
         "stop_hook_active": False}]
    for e in evs:
        e["turn_id"] = tid
    return evs


def session_events(s: int, per_session: int, cwd: str) -> list[dict]:
    sid = f"bench-{s:06d}"
    evs = [{"hook_event_name": "SessionStart", "source": "startup", "model": "gpt-bench",
            "permission_mode": "default"}]
    body = per_session - 2
    t = 0
    while body > 0:
        n = 10 if body >= 12 or body == 10 else body
        if n < 2:
            n = 2
        evs.extend(turn_events(sid, f"{sid}-turn-{t}", n))
        body -= n
        t += 1
    evs.append({"hook_event_name": "SessionEnd", "reason": "exit"})
    for e in evs:
        e["session_id"] = sid
        e["cwd"] = cwd
        e["transcript_path"] = None
    return evs


def fill(path: Path, events: int, sessions: int, cwd: str, t0: float) -> tuple[int, float]:
    per = max(4, events // sessions)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    total = 0
    t = t0
    sql = ("INSERT INTO raw_events (received_at, source, cwd, payload, size, truncated, status,"
           " session_id, turn_id, event) VALUES (?, 'hook', ?, ?, ?, 0, 'ok', ?, ?, ?)")
    for g in range(0, sessions, CONCURRENT):
        group = [session_events(s, per, cwd) for s in range(g, min(sessions, g + CONCURRENT))]
        rows = []
        idx = [0] * len(group)
        live = True
        while live:
            live = False
            for i, evs in enumerate(group):
                if idx[i] < len(evs):
                    e = evs[idx[i]]
                    idx[i] += 1
                    live = True
                    t += 0.001
                    raw = json.dumps(e, separators=(",", ":")).encode()
                    rows.append((t, cwd, raw, len(raw), e["session_id"], e.get("turn_id"),
                                 e["hook_event_name"]))
        con.execute("BEGIN")
        con.executemany(sql, rows)
        con.execute("COMMIT")
        total += len(rows)
    con.close()
    return total, t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--sessions", type=int, default=None,
                    help="default: events / 100 (10,000 for a million)")
    ap.add_argument("--granularity", default="both", choices=["turn", "session", "both"])
    ap.add_argument("--keep", action="store_true", help="keep the temporary spool home")
    args = ap.parse_args(argv)
    sessions = args.sessions or max(1, args.events // 100)

    home = Path(tempfile.mkdtemp(prefix="spool-bench-"))
    os.environ["SPOOL_HOME"] = str(home)
    env = {"SPOOL_GRANULARITY": args.granularity, "SPOOL_SINKS": "file"}
    if PROCESSES_ENV in os.environ:  # e.g. SPOOL_AGGREGATE_PROCESSES=0: the pass alone
        env[PROCESSES_ENV] = os.environ[PROCESSES_ENV]
    engine = db.open_db(home=home)
    t0 = 1_800_000_000.0
    t_fill = time.perf_counter()
    n, last = fill(home / "spool.db", args.events, sessions, str(home / "project"), t0)
    t_fill = time.perf_counter() - t_fill
    print(f"inserted {n:,} events in {sessions:,} sessions in {t_fill:.1f} s "
          f"(granularity {args.granularity})")

    now = last + 60.0
    start = time.perf_counter()
    cpu = time.process_time()
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = aggregate(engine, now, env=env)
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu
    kids_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    kids_cpu = (kids_after.ru_utime + kids_after.ru_stime) - (kids.ru_utime + kids.ru_stime)
    eps = n / elapsed
    print(f"aggregate: {elapsed:.2f} s, {eps:,.0f} events/s (target >= {TARGET_EPS:,}: "
          f"{eps / TARGET_EPS:.2f}x); {res.turn_traces:,} turn traces, "
          f"{res.session_traces:,} session traces, {res.sessions_finalised:,} sessions final, "
          f"errors {res.errors}")
    print(f"  longest write transaction {res.max_write_ms:.1f} ms (target < 50 ms); longest WAL "
          f"checkpoint after one {res.max_checkpoint_ms:.1f} ms (holds no write lock)")
    print(f"  cpu time: this process {cpu:.2f} s, {res.builder_processes} builder process(es) "
          f"{kids_cpu:.2f} s "
          f"({n / (cpu + kids_cpu):,.0f} events per cpu-second); "
          f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    idle = []
    for i in range(7):
        s = time.perf_counter()
        r = aggregate(engine, now + 1 + i, env=env)
        sweep(engine, now + 1 + i, env=env)
        idle.append((time.perf_counter() - s) * 1000)
        assert r.traces == 0
    med = statistics.median(idle)
    print(f"idle pass (aggregate + sweep) on {n:,} old events: median {med:.1f} ms, "
          f"max {max(idle):.1f} ms (target < {TARGET_IDLE_MS:.0f} ms: "
          f"{TARGET_IDLE_MS / med:.1f}x headroom)")
    engine.dispose()
    if not args.keep:
        import shutil

        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
