"""Benchmark the hook against its physical floor, side by side in one run.

Runs, interleaved, each fed the same real Codex payload on stdin:

  F0    python -I -c pass                  (starting the interpreter)
  F1    python -I -c "import sqlite3"      (the unavoidable cost of SQLite in Python)
  F1s   python -I -S -c "import sqlite3"  (the same without site/.pth files: the
        strictest floor, since the hook also runs with -S)
  hook  the hook exactly as hooks.json runs it: python -I -S .../spool/hook.py,
        writing into a real, migrated spool database (WAL, synchronous=FULL)
  hook -m   python -m spool.hook (for reference: site + .pth files included)

and prints median / p95 wall time, peak RSS, and the ratios to F1.

  peer  (--peer FILE) another hook.py, e.g. the previous landing's, run the same way,
        interleaved: `git show main:spool/hook.py > /tmp/peer_hook.py`

Usage: python scripts/bench_hook.py [--runs 200] [--peer FILE]   (with the python spool is
installed in)
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = (ROOT / "tests/fixtures/codex-0.169.0/two-turn-echo/payloads/0005-PreToolUse.json").read_bytes()


def run_once(cmd: list[str], env: dict, stdin_path: str) -> float:
    with open(stdin_path, "rb") as stdin:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, stdin=stdin, stdout=subprocess.DEVNULL, env=env)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} exited {proc.returncode}")
    return wall


def peak_rss_kib(cmd: list[str], env: dict, stdin_path: str, runs: int = 5) -> int:
    """Peak RSS through GNU time (a forked child's own rusage would count the
    benchmark's memory from before exec)."""
    best = 0
    for _ in range(runs):
        with open(stdin_path, "rb") as stdin:
            out = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], stdin=stdin,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                                 text=True)
        best = max(best, int(out.stderr.strip().splitlines()[-1]))
    return best


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--peer", help="another hook.py to run side by side (same flags)")
    args = ap.parse_args()

    py = sys.executable
    home = Path(tempfile.mkdtemp(prefix="spool-bench-"))
    env = dict(os.environ, SPOOL_HOME=str(home), SPOOL_NO_AUTOSTART="1")
    os.environ["SPOOL_HOME"] = str(home)
    import shlex

    from spool import codex, db  # the installed spool (pip install . or -e .)

    db.open_db().dispose()  # a migrated database, as the worker leaves it
    stdin_path = str(home / "payload.json")
    Path(stdin_path).write_bytes(PAYLOAD)

    cases = {
        "F0  python -I -c pass": [py, "-I", "-c", "pass"],
        "F1  python -I -c 'import sqlite3'": [py, "-I", "-c", "import sqlite3"],
        "F1s python -I -S -c 'import sqlite3'": [py, "-I", "-S", "-c", "import sqlite3"],
        "hook (as in hooks.json)": shlex.split(codex.hook_command()),
        "hook via python -m spool.hook": [py, "-m", "spool.hook"],
    }
    if args.peer:
        cases["peer hook (--peer, as in hooks.json)"] = [py, "-I", "-S", args.peer]
    results: dict[str, list[float]] = {k: [] for k in cases}
    for name, cmd in cases.items():  # warm-up
        run_once(cmd, env, stdin_path)
    for _ in range(args.runs):
        for name, cmd in cases.items():
            results[name].append(run_once(cmd, env, stdin_path))

    import sqlite3

    have_time = os.path.exists("/usr/bin/time")
    rss = {name: (peak_rss_kib(cmd, env, stdin_path) if have_time else 0)
           for name, cmd in cases.items()}
    rows = sqlite3.connect(home / "spool.db").execute("SELECT count(*) FROM raw_events").fetchone()[0]
    hooks = 3 if args.peer else 2
    expected = hooks * (args.runs + 1) + (5 * hooks if have_time else 0)
    print(f"python {sys.version.split()[0]}  runs={args.runs}  rows written={rows} (expected {expected})")
    f1 = statistics.median(results["F1  python -I -c 'import sqlite3'"])
    print(f"{'case':38} {'median ms':>10} {'p95 ms':>8} {'max RSS MiB':>12} {'median/F1':>10}")
    for name, walls in results.items():
        med = statistics.median(walls)
        print(f"{name:38} {med * 1000:10.2f} {pct(walls, 0.95) * 1000:8.2f} "
              f"{rss[name] / 1024:12.1f} {med / f1:10.2f}")
    if rows != expected:
        raise SystemExit("the hook lost events during the benchmark")


if __name__ == "__main__":
    main()
