"""Load: N concurrent Codex-like sessions firing real hook processes while a worker runs.

Each session process replays turns shaped like the recorded Codex session
(SessionStart, then per turn UserPromptSubmit, Pre/PostModelRequest, two tool
calls, Pre/PostModelRequest, Stop; SessionEnd at the end) with realistic gaps,
running the hook exactly as hooks.json does and timing every invocation.

Prints: events sent, hook failures, events stored, traces made/delivered, and
the hook latency distribution (p50 / p90 / p99 / max).  Exit 1 if anything
was lost or any hook failed.

Usage: python scripts/load_hooks.py [--sessions 8] [--duration 60] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from multiprocessing import Pool
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOOK = [sys.executable, "-I", "-S", str(ROOT / "spool" / "hook.py")]


def _fire(payload: dict, cwd: str, env: dict) -> tuple[float, bool]:
    t0 = time.perf_counter()
    res = subprocess.run(HOOK, input=json.dumps(payload).encode(), cwd=cwd, env=env,
                         capture_output=True)
    return time.perf_counter() - t0, res.returncode == 0 and not res.stdout


def session(args: tuple[int, float, str, dict]) -> dict:
    index, duration, cwd, env = args
    rnd = random.Random(index)
    sid = str(uuid.uuid4())
    base = {"session_id": sid, "cwd": cwd, "transcript_path": None, "model": "gpt-fake"}
    lat: list[float] = []
    fails = sent = turns = 0

    def fire(event: str, **fields) -> None:
        nonlocal fails, sent
        d, ok = _fire({**base, "hook_event_name": event, **fields}, cwd, env)
        lat.append(d)
        sent += 1
        fails += not ok
        time.sleep(rnd.uniform(0.02, 0.25))  # the model / tool working between events

    end = time.monotonic() + duration
    fire("SessionStart", source="startup", permission_mode="default")
    while time.monotonic() < end:
        turns += 1
        tid = str(uuid.uuid4())
        fire("UserPromptSubmit", turn_id=tid, prompt=f"turn {turns} of session {index}")
        for call in range(2):
            fire("PreModelRequest", turn_id=tid)
            fire("PostModelRequest", turn_id=tid, status="completed", error=None,
                 token_usage={"input_tokens": 100 + call, "cached_input_tokens": 10,
                              "cache_write_input_tokens": 0, "output_tokens": 20,
                              "reasoning_output_tokens": 5, "total_tokens": 120 + call})
            tool = f"call_{turns}_{call}"
            fire("PreToolUse", turn_id=tid, tool_name="Bash", tool_use_id=tool,
                 tool_input={"command": f"echo {call}"})
            fire("PostToolUse", turn_id=tid, tool_name="Bash", tool_use_id=tool,
                 tool_input={"command": f"echo {call}"}, tool_response=f"{call}\n")
        fire("Stop", turn_id=tid, stop_hook_active=False, last_assistant_message="done")
    fire("SessionEnd", reason="other")
    return {"session": sid, "sent": sent, "fails": fails, "turns": turns, "latencies": lat}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="spool-load-"))
    home, project = root / "home", root / "project"
    project.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INFINIUM_", "SPOOL_"))}
    env.update(SPOOL_HOME=str(home), SPOOL_NO_AUTOSTART="1", SPOOL_SESSION_END_GRACE="0",
               SPOOL_FILE_SINK_DIR=str(root / "traces"))
    subprocess.run([sys.executable, "-m", "spool", "path"], env=env, check=True,
                   capture_output=True)  # create + migrate the database
    worker = subprocess.Popen([sys.executable, "-m", "spool", "worker"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with Pool(args.sessions) as pool:
            results = pool.map(session, [(i, args.duration, str(project), env)
                                         for i in range(args.sessions)])
        sent = sum(r["sent"] for r in results)
        turns = sum(r["turns"] for r in results)
        # let the worker catch up (bounded)
        deadline = time.monotonic() + 60
        db = home / "spool.db"
        stored = traced = delivered = 0
        while time.monotonic() < deadline:
            conn = sqlite3.connect(db)
            try:
                stored = conn.execute("SELECT count(*) FROM raw_events WHERE status='ok'").fetchone()[0]
                traced = conn.execute("SELECT count(*) FROM traces WHERE kind='turn'").fetchone()[0]
                delivered = conn.execute(
                    "SELECT count(*) FROM outbox WHERE state='sent'").fetchone()[0]
            finally:
                conn.close()
            overflow = list(home.glob("overflow-*.jsonl"))
            if stored >= sent and traced >= turns and not overflow:
                break
            time.sleep(0.2)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    lat = [x for r in results for x in r["latencies"]]
    summary = {
        "sessions": args.sessions, "duration_s": args.duration, "events_sent": sent,
        "hook_failures": sum(r["fails"] for r in results), "events_stored": stored,
        "lost": sent - stored, "turns": turns, "turn_traces": traced, "outbox_sent": delivered,
        "hook_ms": {"p50": round(statistics.median(lat) * 1000, 2),
                    "p90": round(pct(lat, 0.90) * 1000, 2),
                    "p99": round(pct(lat, 0.99) * 1000, 2),
                    "max": round(max(lat) * 1000, 2)},
        "events_per_s": round(sent / args.duration, 1),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        for k, v in summary.items():
            print(f"{k:15} {v}")
    ok = summary["lost"] == 0 and summary["hook_failures"] == 0 and traced == turns
    import shutil

    shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
