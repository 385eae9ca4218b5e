#!/usr/bin/env python
"""Benchmark: the size of spool's ATIF export per turn (issue 15), beside NeMo Relay.

NeMo Relay 0.10.4 exports Codex sessions as ATIF-v1.7 with full request bodies:
on a real session its file was about 491 KB per turn (issue 15's side-by-side run;
NeMo Relay does not run here, so that number is quoted, not re-measured).  spool exports from its traces:
compact by default (spool's previews), complete outputs with ``--full``.

The session: the bundled real Codex 0.169.0 session (spool/demo_session: two
turns, one tool call each), replayed through real hook processes into a
temporary spool, ingested and aggregated; or ``--home DIR --session ID`` for a
session of an existing spool (its rollout read where Codex left it).

Printed: bytes of the ATIF document (default and --full) and of spool's own
JSON export, total and per turn; and the render time (median and spread of
``--runs`` interleaved runs of the ATIF render vs the JSON export on the same
open database, the floor: reading the traces alone).

    .venv/bin/python scripts/bench_atif_size.py [--runs 21] [--home DIR --session ID]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NEMO_RELAY_PER_TURN = 491 * 1000


def replay_demo(home: Path) -> str:
    """The bundled session through real hook processes; its session id."""
    from spool import aggregate, config, db, ingest

    base = REPO / "spool" / "demo_session"
    project = home.parent / "project"
    project.mkdir(exist_ok=True)
    config.write_file(project, {"granularity": "both"})
    rollout = home.parent / "rollout.jsonl"
    rollout.write_bytes((base / "rollout.jsonl").read_bytes())
    env = dict(os.environ, SPOOL_HOME=str(home), SPOOL_NO_AUTOSTART="1")
    sid = None
    for p in sorted(base.glob("0*.json")):
        obj = json.loads(p.read_bytes())
        obj["transcript_path"], obj["cwd"] = str(rollout), str(project)
        sid = obj["session_id"]
        subprocess.run([sys.executable, "-I", "-S", str(REPO / "spool" / "hook.py")],
                       input=json.dumps(obj).encode(), env=env, cwd=project, check=True)
    engine = db.open_db(home)
    ingest.ingest_all(engine)
    aggregate.aggregate(engine, time.time() + 60)
    engine.dispose()
    return sid


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--home", type=Path)
    ap.add_argument("--session")
    a = ap.parse_args()
    tmp = None
    if a.home:
        home, sid = a.home, a.session
        os.environ["SPOOL_HOME"] = str(home)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="spool-bench-atif-")
        home = Path(tmp.name) / "home"
        os.environ["SPOOL_HOME"] = str(home)
        sid = replay_demo(home)
    from spool import db, export

    engine = db.open_db(home)
    sid = export.gather(engine, sid).session_id
    docs = {"atif": export.atif_document(engine, sid),
            "atif --full": export.atif_document(engine, sid, full=True),
            "json (spool traces)": export.json_document(engine, sid)}
    turns = sum(1 for s in docs["atif"]["steps"] if s["source"] == "user") or 1
    print(f"session {sid}: {turns} turn(s), {len(docs['atif']['steps'])} ATIF steps")
    print(f"| export | bytes | bytes per turn | vs NeMo Relay ({NEMO_RELAY_PER_TURN // 1000} KB/turn) |")
    print("|---|---|---|---|")
    for name, doc in docs.items():
        n = len(export.dumps(doc))
        print(f"| {name} | {n:,} | {n / turns:,.0f} | {n / turns / NEMO_RELAY_PER_TURN:.3f} × |")
    times: dict[str, list[float]] = {"atif": [], "json": []}
    for _ in range(a.runs):  # interleaved pairs
        for name, fn in (("atif", lambda: export.atif_document(engine, sid)),
                         ("json", lambda: export.json_document(engine, sid))):
            t0 = time.perf_counter()
            export.dumps(fn())
            times[name].append((time.perf_counter() - t0) * 1000)
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=10)
        print(f"{name} export in process: median {statistics.median(ts):.2f} ms "
              f"(p10 {q[0]:.2f}, p90 {q[-1]:.2f}, {a.runs} runs)")
    engine.dispose()
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
