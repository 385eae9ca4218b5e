"""Benchmark `spool import` against its floor, side by side, interleaved.

Generates realistic rollouts (scripts/rollout_gen.py) of 50 MB and 200 MB, then
for each size runs interleaved pairs of

* floor:  read every line of every file and ``orjson.loads`` it (nothing else; read
          with the same buffer size as the import, ``backfill.READ_BUFFER``);
* import: ``spool.backfill.run`` into a fresh spool database (events written,
          committed and checkpointed).

Each run is its own process (so its peak RSS is its own: ru_maxrss); both sides
import the same modules before their clock starts, so neither times interpreter
start-up or imports; the import's timed part ends with its connection closed (the
WAL checkpointed).  Prints the medians and spread of time, MB/s, the import/floor
ratio of each pair, the peak RSS of each side, and the load average before and
after each size.

``--phases``: where the import's time goes, in one process (CPU and wall seconds,
best of 5, each as a multiple of the floor's; the first of ``--sizes``): reading
the lines; the floor; the conversion alone (``Converter.feed``); a dry run
(conversion + payloads serialised + rows built, nothing written); the full
import; and writing the same rows alone into a fresh database.  The conversion
and the write alone are both parts of every import, so their sum bounds the
import/floor ratio from below.

    .venv/bin/python scripts/bench_import.py [--pairs 5] [--sizes 50,200] [--dir DIR]
    .venv/bin/python scripts/bench_import.py --phases [--sizes 200] [--dir DIR]
"""
from __future__ import annotations

import argparse
import gc
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
            with open(p, "rb", buffering=backfill.READ_BUFFER) as fh:
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


def _phases(data: Path) -> None:
    """CPU and wall seconds of each phase of the import (best of 5), in this process."""
    import orjson

    from spool import backfill, db
    from spool.importer import Converter

    files = list(backfill.discover([data]))

    def read():
        for p in files:
            with open(p, "rb", buffering=backfill.READ_BUFFER) as fh:
                for _line in fh:
                    pass

    def floor():
        for p in files:
            with open(p, "rb", buffering=backfill.READ_BUFFER) as fh:
                for line in fh:
                    orjson.loads(line)

    def convert():
        for p in files:
            conv = Converter(str(p))
            with open(p, "rb", buffering=backfill.READ_BUFFER) as fh:
                for line in fh:
                    conv.feed(line)
            conv.finish(settled=True)

    def fresh() -> tuple[Path, object]:
        home = Path(tempfile.mkdtemp(prefix="spool-bench-phases-"))
        return home, db.open_db(home)

    held: list = []

    class Keep(backfill._Store):  # the rows a run would write, kept instead
        def flush(self):
            held.extend(self.rows)
            self.rows, self.held, self.events = [], 0, 0

    def timed(fn) -> tuple[float, float]:
        t, w = time.process_time(), time.perf_counter()
        fn()
        return time.process_time() - t, time.perf_counter() - w

    def run(dry_run: bool) -> tuple[float, float]:
        home, engine = fresh()
        spent = timed(lambda: backfill.run(engine, [data], now=time.time() + 10 ** 6,
                                           dry_run=dry_run))
        engine.dispose()
        shutil.rmtree(home)
        return spent

    def write_only() -> tuple[float, float]:
        home, engine = fresh()
        store = backfill._Store(engine, False, time.time())

        def write():
            i = 0
            while i < len(held):  # batches of FLUSH_BYTES, as the import makes them
                j, size = i, 0
                while j < len(held) and size < backfill.FLUSH_BYTES:
                    size += sum(len(x) for x in held[j] if isinstance(x, bytes))
                    j += 1
                store.rows = held[i:j]
                store.flush()
                i = j
            store.close()

        spent = timed(write)
        engine.dispose()
        shutil.rmtree(home)
        return spent

    home, engine = fresh()
    real, backfill._Store = backfill._Store, Keep
    try:
        backfill.run(engine, [data], now=time.time() + 10 ** 6)
    finally:
        backfill._Store = real
        engine.dispose()
        shutil.rmtree(home)
    # The held rows (hundreds of thousands of objects) are kept out of the garbage
    # collector's passes: a real import holds one batch, not all of them.
    gc.collect()
    gc.freeze()
    best: dict[str, list[float]] = {}
    for _ in range(5):
        for name, fn in (("read lines", lambda: timed(read)),
                         ("floor (read + orjson.loads)", lambda: timed(floor)),
                         ("conversion (Converter.feed)", lambda: timed(convert)),
                         ("dry run (conversion + rows)", lambda: run(True)),
                         ("full import", lambda: run(False)),
                         ("writing the rows alone", write_only)):
            got = fn()
            old = best.setdefault(name, [1e9, 1e9])
            best[name] = [min(old[0], got[0]), min(old[1], got[1])]
    cpu0, wall0 = best["floor (read + orjson.loads)"]
    print(f"phases, best of 5 ({data.name}, load {os.getloadavg()[0]:.1f}):"
          f"  CPU s (x floor)  wall s (x floor)")
    for name, (cpu, wall) in best.items():
        print(f"  {name:30s} {cpu:6.3f} ({cpu / cpu0:4.2f})  {wall:6.3f} ({wall / wall0:4.2f})")


def _spread(xs: list[float]) -> str:
    return f"median {statistics.median(xs):.3f} (min {min(xs):.3f}, max {max(xs):.3f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--sizes", default="50,200", help="MB, comma separated")
    ap.add_argument("--dir", type=Path, default=None, help="where data is generated (kept)")
    ap.add_argument("--phases", action="store_true",
                    help="CPU and wall per phase (the first of --sizes)")
    ap.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(_one(a.one[0], Path(a.one[1]), Path(a.one[2]))))
        return
    import rollout_gen

    base = a.dir or Path(tempfile.gettempdir()) / "spool-bench-import"
    if a.phases:
        mb = float(a.sizes.split(",")[0])
        data = base / f"rollouts-{mb:g}mb"
        if not data.exists():
            rollout_gen.generate_tree(data, int(mb * 1e6), seed=1)
        _phases(data)
        return
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpu(s),"
          f" load {os.getloadavg()[0]:.1f}")
    for mb in (float(x) for x in a.sizes.split(",")):
        data = base / f"rollouts-{mb:g}mb"
        if not data.exists():
            rollout_gen.generate_tree(data, int(mb * 1e6), seed=1)
        load_before = os.getloadavg()[0]
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
              f" {imp[0]['events']} events; {a.pairs} interleaved pairs;"
              f" load {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
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
