#!/usr/bin/env python
"""Delivery benchmark: traces/s to a loopback receiver, and the claim cost with 1,000,000
already-sent outbox rows vs an empty outbox.

    .venv/bin/python scripts/bench_deliver.py [--traces 2000] [--sent 1000000] [--sinks]

First the Infinium sink and the OTLP sink side by side (interleaved rounds, real turn
bodies, each receiver in its own process; target: OTLP >= 10x Infinium thanks to batching).
For that comparison use ``--sinks --traces 6000``: an OTLP round of 2,000 traces lasts under
half a second, and a run's one-off costs (a new dispatcher, its connection) weigh on it.

Runs in a throw-away SPOOL_HOME.  Floors: 300 traces/s; the claim with 1M sent rows should
cost about what it costs on an empty outbox (ratio ~1: the partial index ix_outbox_due).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FLOOR_TPS = 300.0


def _setup_home() -> Path:
    home = Path(tempfile.mkdtemp(prefix="spool-bench-"))
    os.environ["SPOOL_HOME"] = str(home / "home")
    for var in ("INFINIUM_AGENT_ID", "INFINIUM_BASE_URL", "SPOOL_SINKS"):
        os.environ.pop(var, None)
    return home


def _insert(engine, ids, project, now):
    from sqlalchemy import text

    from spool import db

    body = json.dumps({"name": "bench", "description": "bench trace", "input_summary": "x" * 200,
                       "output_summary": "y" * 500, "duration_ms": 1000, "kind": "turn"})
    with db.write(engine) as conn:
        conn.execute(text("INSERT INTO traces (trace_id, kind, project, name, created_at, body) "
                          "VALUES (:t, 'turn', :p, 'bench', :n, :b)"),
                     [{"t": t, "p": str(project), "n": now, "b": body} for t in ids])
        conn.execute(text("INSERT INTO outbox (trace_id, sink, created_at, next_attempt_at) "
                          "VALUES (:t, 'infinium', :n, :n)"), [{"t": t, "n": now} for t in ids])


def bench_throughput(n: int) -> float:
    """One Dispatcher (pooled client) -> a receiver in its own process (as a real server
    would be: no GIL shared with the worker)."""
    import subprocess

    import httpx

    from spool import config, db
    from spool.deliver import Dispatcher

    base = _setup_home()
    engine = db.open_db()
    server = subprocess.Popen([sys.executable, "-m", "spool.demo.receiver"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parent.parent)
    try:
        url = server.stdout.readline().strip()
        project = base / "proj"
        project.mkdir()
        config.write_file(project, {"agent_id": "bench-agent", "base_url": url})
        from spool import credentials

        credentials.approve_base_url(engine, project, url)
        os.environ["INFINIUM_AGENT_SECRET"] = "bench-secret-123"
        _insert(engine, [f"t{i:06d}" for i in range(n)], project, time.time())
        t0 = time.perf_counter()
        with Dispatcher(engine) as d:
            sent = 0
            while sent < n:
                r = d.run_once(limit=100)
                sent += r.sent
                if r.claimed == 0:
                    raise SystemExit(f"stuck after {sent} sent")
        elapsed = time.perf_counter() - t0
        stats = httpx.get(f"{url}/_stats").json()
        assert stats["accepted_keys"] == n, stats
    finally:
        server.stdin.close()
        server.wait(10)
    engine.dispose()
    return n / elapsed


def _claim_cost(engine, due: int, reps: int) -> float:
    """Median seconds of one claim transaction (hold-paused + claim 50), rolled back."""
    from spool import outbox

    times = []
    now = 2e9
    with engine.connect() as conn:
        for _ in range(reps):
            t0 = time.perf_counter()
            tx = conn.begin()
            _held, rows = outbox.claim(conn, owner="bench", now=now, lease_until=now + 45,
                                       limit=50)
            tx.rollback()
            times.append(time.perf_counter() - t0)
            assert len(rows) == min(due, 50), (len(rows), due)
    return statistics.median(times)


def bench_claim(sent_rows: int, reps: int) -> tuple[float, float]:
    from spool import db

    base = _setup_home()
    engine = db.open_db()
    _insert(engine, [f"due{i}" for i in range(50)], base, 1.0)
    empty = _claim_cost(engine, 50, reps)
    path = db.paths.db_path()
    engine.dispose()
    import sqlite3

    t0 = time.perf_counter()
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
    con.execute(f"""WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c
                    WHERE x < {sent_rows})
                    INSERT INTO traces (trace_id, kind, name, created_at, body)
                    SELECT 'sent' || x, 'turn', 'old', x, '{{}}' FROM c""")
    con.execute("""INSERT INTO outbox (trace_id, sink, state, attempts, created_at,
                   first_attempt_at, next_attempt_at, sent_at, updated_at)
                   SELECT trace_id, 'infinium', 'sent', 1, created_at, created_at, created_at,
                          created_at, created_at FROM traces WHERE trace_id LIKE 'sent%'""")
    con.execute("COMMIT")
    con.execute("ANALYZE")
    con.close()
    print(f"  (inserted {sent_rows:,} sent rows in {time.perf_counter() - t0:.1f} s)")
    engine = db.make_engine(path)
    full = _claim_cost(engine, 50, reps)
    engine.dispose()
    return empty, full


# --- Infinium vs OTLP, side by side (issue 14) -------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
OTLP_TARGET = 10.0  # OTLP traces/s >= 10x Infinium's (batching)


def _real_body() -> dict:
    """A real turn body (the recorded Codex session replayed; tests/fixtures/otlp)."""
    return json.loads((ROOT / "tests" / "fixtures" / "otlp" / "bodies.json").read_text())["turn"][0]


def _sink_run(sink: str, url: str, n: int, batch: int) -> tuple[float, float]:
    """(traces/s, CPU ms per trace) of one Dispatcher delivering ``n`` fresh rows of ``sink``
    to ``url`` (the CPU time is this process's: the dispatcher's, not the receiver's)."""
    from sqlalchemy import text

    from spool import config, credentials, db
    from spool.deliver import ROUNDS, Dispatcher
    from spool.trace import TRACE_NAMESPACE

    base = _setup_home()
    engine = db.open_db()
    project = base / "proj"
    project.mkdir()
    config.write_file(project, {"agent_id": "bench-agent", "base_url": url, "sinks": [sink]})
    credentials.approve_base_url(engine, project, url)
    os.environ["INFINIUM_AGENT_SECRET"] = "bench-secret-123"
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = url
    body = _real_body()
    now = time.time()
    rows = []
    run = f"{sink}-{time.time_ns()}"
    for i in range(n):  # fresh ids of spool's own kind (uuid5, spool.trace), unique per run
        b = dict(body, trace_id=str(uuid.uuid5(TRACE_NAMESPACE, f"{run}-{i:06d}")))
        rows.append({"t": b["trace_id"], "p": str(project), "n": now, "b": json.dumps(b),
                     "s": sink})
    with db.write(engine) as conn:
        conn.execute(text("INSERT INTO traces (trace_id, kind, project, name, created_at, body) "
                          "VALUES (:t, 'turn', :p, 'bench', :n, :b)"), rows)
        conn.execute(text("INSERT INTO outbox (trace_id, sink, created_at, next_attempt_at) "
                          "VALUES (:t, :s, :n, :n)"), rows)
    t0, c0 = time.perf_counter(), time.process_time()
    with Dispatcher(engine) as d:
        sent = 0
        while sent < n:
            r = d.run_once(limit=batch, full_batches=True, rounds=ROUNDS)  # as the worker
            sent += r.sent
            if r.claimed == 0 or r.sent == 0:
                raise SystemExit(f"{sink}: stuck after {sent} sent ({r})")
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    engine.dispose()
    return n / elapsed, cpu / n * 1e3


def bench_sinks(n: int, rounds: int, batch: int) -> None:
    """Interleaved rounds (the order alternates), each sink to its own receiver process."""
    import subprocess

    import httpx

    servers = {
        "infinium": subprocess.Popen([sys.executable, "-m", "spool.demo.receiver"], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True),
        "otlp": subprocess.Popen([sys.executable,
                                  str(ROOT / "tests" / "support" / "otlp_receiver.py")],
                                 cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True),
    }
    try:
        urls = {k: p.stdout.readline().strip() for k, p in servers.items()}
        for k in ("infinium", "otlp"):  # warm-up (imports, pools), not timed
            _sink_run(k, urls[k], 20, batch)
        tps: dict[str, list[float]] = {"infinium": [], "otlp": []}
        cpus: dict[str, list[float]] = {"infinium": [], "otlp": []}
        ratios, cpu_ratios = [], []
        for r in range(rounds):
            order = ("infinium", "otlp") if r % 2 == 0 else ("otlp", "infinium")
            got = {k: _sink_run(k, urls[k], n, batch) for k in order}
            for k, (v, c) in got.items():
                tps[k].append(v)
                cpus[k].append(c)
            ratios.append(got["otlp"][0] / got["infinium"][0])
            cpu_ratios.append(got["infinium"][1] / got["otlp"][1])
            print(f"  round {r + 1}: infinium {got['infinium'][0]:,.0f}/s  otlp "
                  f"{got['otlp'][0]:,.0f}/s  ratio {ratios[-1]:.1f}x  (dispatcher CPU per trace:"
                  f" {got['infinium'][1]:.3f} / {got['otlp'][1]:.3f} ms, {cpu_ratios[-1]:.1f}x)")
        spans = httpx.get(f"{urls['otlp']}/_stats").json()["spans"]
        assert spans == (rounds * n + 20) * 4, spans  # every trace's 4 spans arrived, once
        accepted = httpx.get(f"{urls['infinium']}/_stats").json()["accepted_keys"]
        assert accepted == rounds * n + 20, accepted
    finally:
        for p in servers.values():
            p.stdin.close()
            p.wait(10)
    med = {k: statistics.median(v) for k, v in tps.items()}
    print(f"sinks side by side ({rounds} interleaved rounds of {n} real turn traces, one worker,"
          f" claim limit {batch}):")
    for k in ("infinium", "otlp"):
        print(f"  {k:9s} median {med[k]:,.0f} traces/s  (min {min(tps[k]):,.0f}, "
              f"max {max(tps[k]):,.0f})")
    ratio = statistics.median(ratios)
    print(f"  otlp / infinium: median {ratio:.1f}x (min {min(ratios):.1f}, max {max(ratios):.1f})"
          f"  target >= {OTLP_TARGET:.0f}x: {'met' if ratio >= OTLP_TARGET else 'NOT met'}")
    print(f"  dispatcher CPU per trace: infinium {statistics.median(cpus['infinium']):.3f} ms, "
          f"otlp {statistics.median(cpus['otlp']):.3f} ms; infinium / otlp median "
          f"{statistics.median(cpu_ratios):.1f}x (min {min(cpu_ratios):.1f}, "
          f"max {max(cpu_ratios):.1f}): what the load does not move much")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sinks", action="store_true",
                    help="only the Infinium vs OTLP side-by-side run")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=50,
                    help="claim limit per pass (the worker's DELIVER_BATCH is 50; a batching "
                         "sink's claim is topped up to its max_batch_rows, as in the worker)")
    ap.add_argument("--traces", type=int, default=2000)
    ap.add_argument("--sent", type=int, default=1_000_000)
    ap.add_argument("--reps", type=int, default=200)
    args = ap.parse_args()
    bench_sinks(args.traces, args.rounds, args.batch)
    if args.sinks:
        return
    tps = bench_throughput(args.traces)
    print(f"delivery: {tps:,.0f} traces/s to a loopback receiver ({args.traces} traces, "
          f"one worker, pooled client)  ratio to the {FLOOR_TPS:.0f}/s floor: "
          f"{tps / FLOOR_TPS:.1f}x")
    empty, full = bench_claim(args.sent, args.reps)
    print(f"claim of 50 due rows: empty outbox {empty * 1e3:.3f} ms, with {args.sent:,} sent "
          f"rows {full * 1e3:.3f} ms  ratio {full / empty:.2f}x (flat ~1.0)")


if __name__ == "__main__":
    main()
