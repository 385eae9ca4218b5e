"""Benchmark `spool import` against its floor, side by side, interleaved.

Generates realistic rollouts (scripts/rollout_gen.py) of 50 MB and 200 MB, then
for each size runs interleaved pairs of

* floor:  read every line of every file and ``orjson.loads`` it (nothing else);
* import: ``spool.backfill.run`` into a fresh spool database (events written,
          committed and checkpointed).

Each run is its own process (so its peak RSS is its own: ru_maxrss).  Prints
the medians and spread of time, MB/s, the import/floor ratio of each pair, and
the peak RSS of each side.

    .venv/bin/python scripts/bench_import.py [--pairs 5] [--sizes 50,200] [--dir DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def _one(kind: str, data: Path, home: Path) -> dict:
    """One measured run in this process (called in a child)."""
    import orjson

    from spool import backfill, db

    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = ru0.ru_utime + ru0.ru_stime
    if kind == "floor":
        t = time.perf_counter()
        n = 0
        for p in backfill.discover([data]):
            with open(p, "rb") as fh:
                for line in fh:
                    orjson.loads(line)
                    n += 1
        elapsed = time.perf_counter() - t
        out = {"lines": n}
    else:
        engine = db.open_db(home)
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        cpu0 = ru0.ru_utime + ru0.ru_stime
        t = time.perf_counter()
        res = backfill.run(engine, [data], now=time.time() + 10 ** 6)
        elapsed = time.perf_counter() - t
        engine.dispose()
        out = {"events": res.events, "turns": res.turns, "files": res.files}
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out["seconds"] = elapsed
    out["cpu"] = ru.ru_utime + ru.ru_stime - cpu0
    out["max_rss_mb"] = ru.ru_maxrss / 1024
    return out


def _run(kind: str, data: Path, home: Path) -> dict:
    shutil.rmtree(home, ignore_errors=True)
    r = subprocess.run([sys.executable, __file__, "--one", kind, str(data), str(home)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{kind} run failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return json.loads(r.stdout)


def _spread(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.3f} (min {min(xs):.3f}, max {max(xs):.3f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--sizes", default="50,200", help="MB, comma separated")
    ap.add_argument("--dir", type=Path, default=None, help="where data is generated (kept)")
    ap.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(_one(a.one[0], Path(a.one[1]), Path(a.one[2]))))
        return
    import rollout_gen

    base = a.dir or Path(tempfile.gettempdir()) / "spool-bench-import"
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpu(s),"
          f" load {os.getloadavg()[0]:.1f}")
    for mb in (float(x) for x in a.sizes.split(",")):
        data = base / f"rollouts-{mb:g}mb"
        if not data.exists():
            rollout_gen.generate_tree(data, int(mb * 1e6), seed=1)
        files = list(data.rglob("*.jsonl"))
        size = sum(f.stat().st_size for f in files)
        floor, imp, ratios = [], [], []
        for i in range(a.pairs):
            order = ("floor", "import") if i % 2 == 0 else ("import", "floor")
            got = {k: _run(k, data, base / "home") for k in order}
            floor.append(got["floor"])
            imp.append(got["import"])
            ratios.append(got["import"]["seconds"] / got["floor"]["seconds"])
        ft = [r["seconds"] for r in floor]
        it = [r["seconds"] for r in imp]
        print(f"\n{size / 1e6:.1f} MB in {len(files)} rollouts, {imp[0]['turns']} turns,"
              f" {imp[0]['events']} events; {a.pairs} interleaved pairs")
        print(f"  floor  seconds {_spread(ft)}; {size / 1e6 / statistics.median(ft):.0f} MB/s;"
              f" peak RSS {statistics.median(r['max_rss_mb'] for r in floor):.0f} MB")
        print(f"  import seconds {_spread(it)}; {size / 1e6 / statistics.median(it):.1f} MB/s;"
              f" peak RSS {statistics.median(r['max_rss_mb'] for r in imp):.0f} MB")
        print(f"  import/floor per pair: {_spread(ratios)}")
        fc = [r["cpu"] for r in floor]
        ic = [r["cpu"] for r in imp]
        print(f"  CPU seconds (user+sys, timed part): floor {_spread(fc)}; import {_spread(ic)};"
              f" ratio of medians {statistics.median(ic) / statistics.median(fc):.2f}")
    shutil.rmtree(base / "home", ignore_errors=True)


if __name__ == "__main__":
    main()
