#!/usr/bin/env python
"""Benchmark: `spool ui` pages on a small spool against a big one (10,000 sessions,
1,000,000 raw events, 100,000 traces) - issue 21 asks for the same page time (±20 %).

The big spool is scripts/bench_cli.py's (built once, cached; ``--rebuild``), copied and
given what the pages read besides: one session with a 40-step turn (the newest), usage
rows (the same 120 session-hours in the last 30 days in both spools, plus one row per
session older than the 30-day window the usage page shows).  The small spool has the same
newest session, 119 others, and as many traces / failures / errors as its delivery page
lists, so both pages render the same number of rows.
Each page is fetched over real HTTP from a live UIServer on 127.0.0.1 (urllib, new
connection per request), small and big interleaved in pairs, ``--runs`` pairs; medians,
min ratio and the spread (p90/median).

    .venv/bin/python scripts/bench_ui.py [--runs 30] [--rebuild]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import bench_cli  # noqa: E402

UI_SID = "sess-ui-newest"
STEPS = 40


def _body(t0: float) -> dict:
    steps = [{"number": 1, "action": "user_prompt", "description": "fix the tests",
              "started_at": t0, "ended_at": t0, "input_preview": "fix the tests"}]
    t = t0
    for i in range(STEPS // 2):
        steps.append({"number": len(steps) + 1, "action": "model_request", "description": "m",
                      "started_at": t, "ended_at": t + 2.0, "duration_ms": 2000.0,
                      "model": "gpt-5", "status": "completed",
                      "usage": {"input": 5000, "cached": 4000, "output": 300, "reasoning": 100,
                                "total": 5300}})
        code = 1 if i == 7 else 0
        steps.append({"number": len(steps) + 1, "action": "tool_use", "description": "run",
                      "started_at": t + 2.0, "ended_at": t + 3.0, "duration_ms": 1000.0,
                      "tool_name": "Bash", "tool_use_id": f"c{i}", "command": f"pytest -x t{i}",
                      "exit_code": code, "input_preview": f"pytest -x t{i}",
                      "output_preview": "." * 200})
        t += 3.0
    return {"schema": "spool.trace/1", "kind": "turn", "name": "fix the tests",
            "session_id": UI_SID, "turn_id": "turn-ui", "trace_id": "tr-ui", "started_at": t0,
            "ended_at": t, "duration_ms": (t - t0) * 1000, "input_summary": "fix the tests",
            "output_summary": "done", "steps": steps, "errors": [],
            "usage": {"input": 100000, "cached": 80000, "output": 6000, "total": 106000},
            "notes": [], "cost_usd": 0.12}


def add_common(path: Path, n_other: int, t_end: float) -> None:
    """The newest session (one 40-step turn), ``n_other`` more sessions (small spool only),
    usage_hours rows (the same recent ones in both, one older row per session)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT INTO sessions (session_id, project, cwd, first_event_at, last_event_at, state,"
        " event_count) VALUES (?,?,?,?,?,?,?)",
        [(f"small-{i:04d}", "/home/dev/proj", "/home/dev/proj", t_end - 6000.0 * (i + 2),
          t_end - 6000.0 * (i + 1), "final", 100) for i in range(n_other)])
    t0 = t_end + 10
    conn.execute("INSERT INTO sessions (session_id, project, cwd, first_event_at, last_event_at,"
                 " state, event_count) VALUES (?,?,?,?,?,?,?)",
                 (UI_SID, "/home/dev/proj", "/home/dev/proj", t0, t0 + 200, "final", 85))
    conn.execute("INSERT INTO turns (session_id, turn_id, seq, opened_at, closed_at, state,"
                 " trace_id) VALUES (?,?,?,?,?,?,?)",
                 (UI_SID, "turn-ui", 1, t0, t0 + 120, "traced", "tr-ui"))
    body = json.dumps(_body(t0))
    conn.execute("INSERT INTO traces (trace_id, kind, session_id, turn_id, project, name,"
                 " created_at, started_at, ended_at, event_count, body)"
                 " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                 ("tr-ui", "turn", UI_SID, "turn-ui", "/home/dev/proj", "fix the tests",
                  t0 + 121, t0, t0 + 120, 85, body))
    conn.execute("INSERT INTO outbox (trace_id, sink, state, attempts, created_at,"
                 " next_attempt_at) VALUES ('tr-ui', 'infinium', 'pending', 0, ?, ?)",
                 (t0 + 121, t0 + 121))
    # the small spool gets what the big one's delivery page shows: traces, failures, errors
    for i in range(min(n_other, 60)):
        at = t_end - 6000.0 * (i + 1)
        conn.execute("INSERT INTO traces (trace_id, kind, session_id, turn_id, project, name,"
                     " created_at, started_at, ended_at, event_count, body)"
                     " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                     (f"tr-small-{i}", "turn", f"small-{i:04d}", "t", "/home/dev/proj",
                      "list the files", at, at - 5, at, 10, "{}"))
        oid = conn.execute("INSERT INTO outbox (trace_id, sink, state, attempts, created_at,"
                           " next_attempt_at, last_status, last_error) VALUES"
                           " (?, 'infinium', 'failed', 1, ?, ?, 503, 'HTTP 503: busy')",
                           (f"tr-small-{i}", at, at + 3600)).lastrowid
        conn.execute("INSERT INTO delivery_attempts (outbox_id, trace_id, sink, attempt,"
                     " started_at, duration_ms, http_status, outcome, error_class, message)"
                     " VALUES (?,?,'infinium',1,?,120.0,503,'retry','HTTP 503','busy')",
                     (oid, f"tr-small-{i}", at + 1))
        conn.execute("INSERT INTO errors (at, source, message) VALUES (?, 'worker', 'job crashed')",
                     (at,))
    # usage: the same last-30-days activity in both spools (120 session-hours), and one
    # older row per session (history: 119 rows small, 10,000 big), 40+ days back
    old = [(sid, at - 40 * 86400) for sid, at in
           conn.execute("SELECT session_id, last_event_at FROM sessions")]
    recent = [(f"recent-{i}", t_end - 6000.0 * i) for i in range(120)]
    conn.executemany(
        "INSERT INTO usage_hours (hour, session_id, model, project, requests, input, cached,"
        " output, reasoning, total, cost_usd) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        [(int(at // 3600), sid, "gpt-5" if i % 2 else "gpt-5-mini", "/home/dev/proj", 20,
          100000, 80000, 6000, 2000, 106000, 0.12) for i, (sid, at) in enumerate(old + recent)])
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def pages(engine) -> dict[str, str]:
    """Page name -> path (after the token); the deep page starts 5,000 sessions back
    on the big spool (60 on the small one): keyset, not OFFSET."""
    from spool import db

    with db.read(engine) as conn:
        n = conn.exec_driver_sql("SELECT count(*) FROM sessions").scalar_one()
        at, row = conn.exec_driver_sql(
            "SELECT last_event_at, rowid FROM sessions ORDER BY last_event_at DESC"
            " LIMIT 1 OFFSET ?", (min(5000, n // 2),)).one()
    return {"sessions": "", "sessions p.deep": f"?after={at!r}:{row}",
            "sessions state=open": "?state=open", "session": f"session/{UI_SID}",
            "turn timeline": "turn/tr-ui", "delivery": "delivery", "usage (30 d)": "usage"}


def fetch(url: str) -> float:
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as r:
        r.read()
        assert r.status == 200
    return time.perf_counter() - t


def render_time(views, path_query: str) -> float:
    from urllib.parse import parse_qs, urlsplit

    u = urlsplit(path_query)
    q = {k: v[-1] for k, v in parse_qs(u.query).items()}
    t = time.perf_counter()
    views.render(u.path, q)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--cache", type=Path,
                    default=Path(tempfile.gettempdir()) / "spool-bench-cli" / "big")
    ap.add_argument("--rebuild", action="store_true")
    args = ap.parse_args()
    if args.rebuild or not (args.cache / "BUILT").exists():
        print(f"building the big spool at {args.cache} (bench_cli.build_big) ...", flush=True)
        bench_cli.build_big(args.cache)
    work = Path(tempfile.mkdtemp(prefix="spool-bench-ui-"))
    os.environ["SPOOL_HOME"] = str(work)
    from spool import db
    from spool.ui.server import UIServer

    big, small = work / "big", work / "small"
    shutil.copytree(args.cache, big)
    with sqlite3.connect(big / "spool.db") as c:  # the end of the big spool's history
        t_end = c.execute("SELECT max(last_event_at) FROM sessions").fetchone()[0] + 1000
    add_common(big / "spool.db", 0, t_end)
    bench_cli.make_empty(small)
    add_common(small / "spool.db", 119, t_end)
    today = datetime.fromtimestamp(t_end).date()  # the usage window ends with the history
    servers, urls = {}, {}
    try:
        for name, home in (("small", small), ("big", big)):
            engine = db.make_engine(home / "spool.db")
            servers[name] = UIServer(engine, 0, today=lambda: today)
            servers[name].start_background()
            urls[name] = {p: servers[name].url + q for p, q in pages(engine).items()}
        for name in urls:  # warm-up (page cache, imports)
            for u in urls[name].values():
                fetch(u)
        samples = {(p, w): [] for p in urls["small"] for w in ("small", "big")}
        for _ in range(args.runs):
            for p in urls["small"]:
                for w in ("small", "big"):
                    samples[(p, w)].append(fetch(urls[w][p]))
        # the same pages rendered in-process (Views.render: SQL + HTML, no HTTP/threads)
        direct = {(p, w): [] for p in urls["small"] for w in ("small", "big")}
        for _ in range(args.runs):
            for p, path in pages(servers["small"].views.engine).items():
                for w in ("small", "big"):
                    direct[(p, w)].append(render_time(servers[w].views,
                                                      pages(servers[w].views.engine)[p]))
    finally:
        for s in servers.values():
            s.shutdown()
            s.server_close()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nmedians of {args.runs} interleaved pairs (HTTP GET, 127.0.0.1); "
          f"big = {bench_cli.N_SESSIONS:,} sessions / {bench_cli.N_EVENTS:,} events / "
          f"{bench_cli.N_TRACES:,} traces")
    print(f"{'page':<22}{'small':>10}{'big':>10}{'ratio':>8}{'min ratio':>11}"
          f"{'p90/med small':>15}{'p90/med big':>13}")
    for p in urls["small"]:
        s, b = samples[(p, "small")], samples[(p, "big")]
        ms, mb = statistics.median(s), statistics.median(b)
        q = lambda xs: sorted(xs)[int(len(xs) * 0.9) - 1]  # noqa: E731
        print(f"{p:<22}{ms * 1000:>8.2f}ms{mb * 1000:>8.2f}ms{mb / ms:>8.2f}"
              f"{min(b) / min(s):>11.2f}{q(s) / ms:>15.2f}{q(b) / mb:>13.2f}")
    print(f"\nin-process render (Views.render: the SQL and the HTML, no HTTP), "
          f"medians of {args.runs} interleaved pairs")
    print(f"{'page':<22}{'small':>10}{'big':>10}{'ratio':>8}{'min ratio':>11}")
    for p in urls["small"]:
        s, b = direct[(p, "small")], direct[(p, "big")]
        ms, mb = statistics.median(s), statistics.median(b)
        print(f"{p:<22}{ms * 1000:>8.2f}ms{mb * 1000:>8.2f}ms{mb / ms:>8.2f}{min(b) / min(s):>11.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
