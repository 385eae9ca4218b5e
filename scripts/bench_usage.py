#!/usr/bin/env python
"""Benchmark: `spool usage --by day` against `ccusage codex daily --offline`, and
`spool usage` on a 1M-event spool against an empty one (issue 16).

1. Peer: ``--sessions`` (2,000) generated realistic Codex rollouts under a
   CODEX_HOME (scripts/rollout_gen.py's ``session_lines`` when that module is
   present, else the small generator below: same line kinds and sizes as the
   recorded 0.169.0 rollouts).  spool's side is the same sessions recorded
   through spool.usage.record_traces (one session-summary body per rollout,
   one model_request step per token_count line: what the aggregate writer
   stores), untimed.  Timed, in interleaved rounds, each a real subprocess:
   ``spool usage --by day --json`` and ``ccusage codex daily --json --offline``,
   the same two as tables, the floors (``python -c pass``; ``python -c "import
   re"``, which the pip-generated console script itself does) and the editable
   dev venv's spool; wall and CPU (user+sys) medians with min/max, and the
   per-round ratios.  The spool timed is the one users get: ``pip install .``
   into a virtualenv in the cache (``--bin DIR`` to time another).  The totals
   of both tools are printed and must agree (tokens equal).
2. Flatness: an empty spool against one with 1,000,000 raw events, 100,000
   traced model requests over 10,000 sessions and a year, and a third with only
   that year's usage_hours rows (what the report reads): ``spool usage --by
   day --json`` (CLI subprocess) and ``usage.report`` alone, interleaved.

    .venv/bin/python scripts/bench_usage.py [--sessions 2000] [--runs 7] [--rebuild] [--bin DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import string
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

T0 = datetime(2026, 6, 1, tzinfo=timezone.utc).timestamp()
MODEL = "gpt-5"


# --- rollouts ------------------------------------------------------------------------

def _ts(t: float) -> str:
    d = datetime.fromtimestamp(t, tz=timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


def _blob(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits, k=n))


def own_session_lines(rng: random.Random, sid: str, t0: float, turns: int, requests: int):
    """A Codex-0.169-shaped rollout: meta (24 KB instructions), per turn task_started,
    turn_context, per request reasoning + function_call + output + token_count."""
    t = t0
    total = {"input_tokens": 0, "cached_input_tokens": 0, "output_tokens": 0,
             "reasoning_output_tokens": 0, "total_tokens": 0}

    def line(kind, payload):
        return json.dumps({"timestamp": _ts(t), "type": kind, "payload": payload},
                          separators=(",", ":"))  # as Codex writes (ccusage matches on it)

    yield line("session_meta", {"id": sid, "timestamp": _ts(t), "cwd": "/home/dev/proj",
                                "originator": "codex_exec", "cli_version": "0.169.0",
                                "model_provider": "openai",
                                "base_instructions": {"text": _blob(rng, 24_000)}})
    context = 8000
    for _ in range(turns):
        turn = str(uuid.UUID(int=rng.getrandbits(128)))
        yield line("event_msg", {"type": "task_started", "turn_id": turn})
        yield line("turn_context", {"turn_id": turn, "cwd": "/home/dev/proj", "model": MODEL,
                                    "approval_policy": "never", "summary": "auto"})
        yield line("response_item", {"type": "message", "role": "user",
                                     "content": [{"type": "input_text", "text": _blob(rng, 300)}]})
        for _ in range(requests):
            t += rng.uniform(2, 20)
            inp = context + rng.randint(200, 3000)
            cached = int(inp * rng.uniform(0.3, 0.9))
            out = rng.randint(20, 1500)
            last = {"input_tokens": inp, "cached_input_tokens": cached, "output_tokens": out,
                    "reasoning_output_tokens": rng.randint(0, out), "total_tokens": inp + out}
            context = inp
            for k in total:
                total[k] += last[k]
            call = "call_" + _blob(rng, 20)
            yield line("response_item", {"type": "reasoning", "summary": [],
                                         "encrypted_content": _blob(rng, 2000)})
            yield line("response_item", {"type": "function_call", "name": "exec_command",
                                         "arguments": json.dumps({"cmd": "ls -1"}),
                                         "call_id": call})
            yield line("response_item", {"type": "function_call_output", "call_id": call,
                                         "output": _blob(rng, 1000)})
            yield line("event_msg", {"type": "token_count", "info": {
                "total_token_usage": dict(total), "last_token_usage": last,
                "model_context_window": 258400}})
        yield line("event_msg", {"type": "task_complete", "turn_id": turn,
                                 "last_agent_message": "done"})


def generate(codex_home: Path, sessions: int, seed: int = 16) -> list[Path]:
    try:
        from rollout_gen import session_lines  # the import helper's generator, when merged
        source = "scripts/rollout_gen.py"
    except ImportError:
        session_lines, source = own_session_lines, "bench_usage's own generator"
    rng = random.Random(seed)
    files = []
    for i in range(sessions):
        t0 = T0 + i * (180 * 86400 / sessions)  # half a year
        sid = str(uuid.UUID(int=rng.getrandbits(128)))
        d = datetime.fromtimestamp(t0, tz=timezone.utc)
        day = codex_home / "sessions" / d.strftime("%Y/%m/%d")
        day.mkdir(parents=True, exist_ok=True)
        f = day / f"rollout-{d.strftime('%Y-%m-%dT%H-%M-%S')}-{sid}.jsonl"
        lines = session_lines(rng, sid, t0, rng.randint(1, 4), rng.randint(2, 8))
        with open(f, "w") as out:
            for ln in lines:
                # rollout_gen's lines end with a newline already; the fallback's do not
                out.write((ln.decode() if isinstance(ln, bytes) else ln).rstrip("\n") + "\n")
        files.append(f)
    print(f"generated {len(files)} rollouts ({source}), "
          f"{sum(f.stat().st_size for f in files) / 1e6:.0f} MB")
    return files


def bodies_of_rollout(path: Path) -> dict:
    """One session-summary body from a rollout: a model_request step per token_count."""
    sid, model, turn, steps, project = None, MODEL, None, [], "/home/dev/proj"
    for raw in open(path, "rb"):
        o = json.loads(raw)
        p = o.get("payload") or {}
        if o["type"] == "session_meta":
            sid = p.get("id")
        elif o["type"] == "turn_context":
            model = p.get("model") or model
            turn = p.get("turn_id") or turn
        elif p.get("type") == "task_started":
            turn = p.get("turn_id") or (p.get("turn_attribution") or {}).get("turn_id") or turn
        elif p.get("type") == "token_count" and p.get("info"):
            u = p["info"]["last_token_usage"]
            at = datetime.strptime(o["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=timezone.utc).timestamp()
            steps.append({"action": "model_request", "turn_id": turn, "model": model,
                          "started_at": at, "usage": {
                              "input": u["input_tokens"], "cached": u["cached_input_tokens"],
                              "cache_write": u.get("cache_write_input_tokens", 0),
                              "output": u["output_tokens"],
                              "reasoning": u["reasoning_output_tokens"],
                              "total": u["total_tokens"]}})
    return {"kind": "session", "trace_id": f"bench-{sid}", "session_id": sid, "turn_id": None,
            "project": project, "started_at": steps[0]["started_at"] if steps else None,
            "environment": {"model": model}, "steps": steps, "turns": []}


def record(home: Path, bodies) -> None:
    from spool import db, paths, usage

    engine = db.open_db(home)
    engine.dispose()
    con = sqlite3.connect(paths.db_path(home), isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
    usage.record_traces(con, bodies)
    con.execute("COMMIT")
    con.close()


# --- the spool that is timed ------------------------------------------------------

def _source_stamp() -> str:
    import hashlib

    h = hashlib.sha256()
    for f in sorted([ROOT / "pyproject.toml", *(ROOT / "spool").rglob("*.py")]):
        h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def plain_venv(cache: Path) -> Path:
    """A virtualenv with spool installed as users get it (`pip install .`: no editable
    finder, compiled .pyc files), kept in the cache; spool itself is reinstalled
    (--no-deps) whenever its sources changed.  Returns its bin directory."""
    venv = cache / "venv-plain"
    stamp, want = venv / ".spool-source", _source_stamp()
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", str(ROOT)], check=True)
        stamp.write_text(want)
    if stamp.read_text() != want:
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall",
                        str(ROOT)], check=True)
        stamp.write_text(want)
    return venv / "bin"


# --- timing --------------------------------------------------------------------------

WALL: dict[str, list[float]] = {}  # label -> wall seconds of each run
CPU: dict[str, list[float]] = {}  # label -> CPU seconds (user + sys) of each child run


def _time(argv, env, label: str = "") -> tuple[float, str]:
    """Wall time of one subprocess run (its wall and CPU time kept under ``label``)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    dt = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    WALL.setdefault(label, []).append(dt)
    CPU.setdefault(label, []).append(after.ru_utime - before.ru_utime
                                     + after.ru_stime - before.ru_stime)
    if r.returncode != 0:
        raise SystemExit(f"{argv[0]} failed: {r.stderr[-2000:]}")
    return dt, r.stdout


def _stats(xs) -> str:
    return (f"median {statistics.median(xs) * 1000:8.1f} ms  "
            f"(min {min(xs) * 1000:.1f}, max {max(xs) * 1000:.1f}, n={len(xs)})")


def _ms(xs) -> str:
    return (f"{statistics.median(xs) * 1000:7.1f} ms ({min(xs) * 1000:.1f}"
            f"\u2013{max(xs) * 1000:.1f})")


def _pair_ratio(num: str, den: str, table: dict) -> str:
    """Median and spread of the per-pair ratios num/den (the runs of one round)."""
    r = [a / b for a, b in zip(table[num], table[den])]
    return f"{statistics.median(r):.2f}x ({min(r):.2f}\u2013{max(r):.2f})"


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def spool_cli(bin_dir: Path | None = None) -> str:
    return str((bin_dir or Path(sys.executable).parent) / "spool")


def bench_peer(work: Path, sessions: int, runs: int, rebuild: bool, bin_dir: Path) -> None:
    from install_npm import ensure

    cc = str(ensure("ccusage"))
    codex_home, home = work / "codex-home", work / "spool-home"
    if rebuild or not (work / "peer.ok").exists():
        shutil.rmtree(work, ignore_errors=True)
        files = generate(codex_home, sessions)
        record(home, (bodies_of_rollout(f) for f in files))
        (work / "peer.ok").write_text("ok")
    env = dict(os.environ, CODEX_HOME=str(codex_home), SPOOL_HOME=str(home),
               SPOOL_NO_AUTOSTART="1", TZ="UTC")
    # The editable dev venv under PYTHONDONTWRITEBYTECODE would compile spool's
    # modules on every run (no user sees that): give it its .pyc files.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "spool")],
                   check=True, stdout=subprocess.DEVNULL)
    py = str(bin_dir / "python")
    cases = {  # label -> argv; every round runs them all, in this order
        "floor: python -c pass": [py, "-c", "pass"],
        "floor: python -c 'import re'": [py, "-c", "import re"],  # the console script's own
        "spool json": [spool_cli(bin_dir), "usage", "--by", "day", "--json"],
        "ccusage json": [cc, "codex", "daily", "--json", "--offline", "--timezone", "UTC"],
        "spool table": [spool_cli(bin_dir), "usage", "--by", "day"],
        "ccusage table": [cc, "codex", "daily", "--offline", "--timezone", "UTC"],
        "spool json, editable dev venv": [spool_cli(), "usage", "--by", "day", "--json"],
    }
    load0 = _load()
    outs = {}
    for _ in range(runs):  # interleaved rounds
        for label, argv in cases.items():
            outs[label] = _time(argv, env, label)[1]
    load1 = _load()
    s = json.loads(outs["spool json"])["totals"]
    c = json.loads(outs["ccusage json"])["totals"]
    print(f"same {sessions} sessions: spool totals input {s['input']:,} output {s['output']:,} "
          f"total {s['total']:,} cost ${s['cost_usd']:.2f}; ccusage input+cached "
          f"{c['inputTokens'] + c['cacheReadTokens']:,} output {c['outputTokens']:,} total "
          f"{c['totalTokens']:,} cost ${c['costUSD']:.2f}")
    assert s["total"] == c["totalTokens"] and s["output"] == c["outputTokens"], (s, c)
    assert json.loads(outs["spool json, editable dev venv"])["totals"] == s
    days_s = len(json.loads(outs["spool json"])["rows"])
    days_c = len(json.loads(outs["ccusage json"])["daily"])
    print(f"rows: spool {days_s} days, ccusage {days_c} days; timed spool: {bin_dir}; "
          f"load average (1/5/15 min) {load0} before, {load1} after; {runs} rounds")
    print(f"| `--by day`, {sessions:,} sessions | wall median (min\u2013max) "
          f"| CPU median (min\u2013max) |")
    print("|---|---|---|")
    for label in cases:
        print(f"| {label} | {_ms(WALL[label])} | {_ms(CPU[label])} |")
    print("| ratio ccusage / spool, per round | wall | CPU |")
    for mode in ("json", "table"):
        print(f"| {mode} | **{_pair_ratio(f'ccusage {mode}', f'spool {mode}', WALL)}** "
              f"| **{_pair_ratio(f'ccusage {mode}', f'spool {mode}', CPU)}** |")
    floor = "floor: python -c 'import re'"
    for mode in ("json", "table"):
        over = [a - b for a, b in zip(CPU[f"spool {mode}"], CPU[floor])]
        print(f"spool {mode}: CPU over the `import re` floor, median "
              f"{statistics.median(over) * 1000:.1f} ms; ccusage {mode} / that floor "
              f"{_pair_ratio(f'ccusage {mode}', floor, CPU)} CPU, "
              f"{_pair_ratio(f'ccusage {mode}', floor, WALL)} wall")


def build_big(home: Path) -> None:
    """1M raw events (as bench_cli) + 100,000 model requests over 10,000 sessions."""
    from spool import db, paths

    home.mkdir(parents=True, exist_ok=True)
    path = paths.db_path(home)
    db.upgrade(path)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA synchronous=OFF")
    con.execute("BEGIN IMMEDIATE")
    payload = b'{"hook_event_name":"PostToolUse","tool_input":{"command":"ls"}}'
    step = 365 * 86400 / 1_000_000
    con.executemany(
        "INSERT INTO raw_events (received_at, source, cwd, payload, size, status, session_id,"
        " turn_id, event) VALUES (?, 'hook', '/p', ?, ?, 'ok', ?, ?, 'PostToolUse')",
        ((T0 + i * step, payload, len(payload), f"s{i // 100:06d}", f"t{i // 10}")
         for i in range(1_000_000)))
    con.execute("COMMIT")
    rng = random.Random(7)
    bodies = []
    for s in range(10_000):
        t0 = T0 + s * 365 * 86400 / 10_000
        steps = []
        for r in range(10):
            inp = rng.randint(2000, 60000)
            out = rng.randint(20, 1500)
            steps.append({"action": "model_request", "turn_id": f"t{s}-{r // 3}", "model": MODEL,
                          "started_at": t0 + 30 * r, "usage": {
                              "input": inp, "cached": inp // 2, "cache_write": 0, "output": out,
                              "reasoning": out // 3, "total": inp + out}})
        bodies.append({"kind": "session", "trace_id": f"big-{s}", "session_id": f"s{s:06d}",
                       "turn_id": None, "project": "/p", "started_at": t0,
                       "environment": {"model": MODEL}, "steps": steps, "turns": []})
    con.execute("BEGIN IMMEDIATE")
    from spool import usage

    usage.record_traces(con, bodies)
    con.execute("COMMIT")
    con.execute("ANALYZE")
    con.close()


def build_year(big: Path, home: Path) -> None:
    """The big spool's usage_hours and usage_days rows alone: no raw events, traces or
    requests."""
    from spool import db, paths

    home.mkdir(parents=True, exist_ok=True)
    db.upgrade(paths.db_path(home))
    con = sqlite3.connect(paths.db_path(home), isolation_level=None)
    con.execute("ATTACH ? AS big", (str(paths.db_path(big)),))
    con.execute("INSERT INTO usage_hours SELECT * FROM big.usage_hours")
    con.execute("INSERT INTO usage_days SELECT * FROM big.usage_days")
    con.execute("INSERT OR REPLACE INTO kv SELECT * FROM big.kv WHERE key = 'usage_days:zone'")
    con.execute("DETACH big")
    con.execute("ANALYZE")
    con.close()


def bench_flat(work: Path, runs: int, rebuild: bool, bin_dir: Path) -> None:
    """empty: a new spool; year: a year of usage_hours rows and nothing else; big: the
    same usage rows with the 1M raw events and 100,000 model requests behind them."""
    from spool import db, paths, usage

    empty, year, big = work / "empty", work / "year", work / "big"
    if rebuild or not (work / "big.ok").exists():
        shutil.rmtree(work, ignore_errors=True)
        t = time.perf_counter()
        build_big(big)
        print(f"built the 1M-event spool in {time.perf_counter() - t:.0f} s")
        (work / "big.ok").write_text("ok")
    if not (work / "year.ok").exists():
        shutil.rmtree(year, ignore_errors=True)
        build_year(big, year)
        (work / "year.ok").write_text("ok")
    db.open_db(empty).dispose()
    homes = {"empty": empty, "year": year, "big": big}
    argv = [spool_cli(bin_dir), "usage", "--by", "day", "--json"]
    query: dict[str, list[float]] = {k: [] for k in homes}
    cons = {k: sqlite3.connect(paths.db_path(p)) for k, p in homes.items()}
    load0 = _load()
    for _ in range(runs):
        for k, p in homes.items():
            env = dict(os.environ, SPOOL_HOME=str(p), SPOOL_NO_AUTOSTART="1", TZ="UTC")
            _time(argv, env, f"cli {k}")
            for _ in range(5):
                t = time.process_time()
                rep = usage.report(cons[k], "day")
                query[k].append(time.process_time() - t)
    one = lambda sql: cons["big"].execute(sql).fetchone()[0]  # noqa: E731
    n_req, n_hours = one("SELECT count(*) FROM model_requests"), one("SELECT count(*) FROM usage_hours")
    n_ev = one("SELECT count(*) FROM raw_events")
    for c in cons.values():
        c.close()
    print(f"big spool: {n_ev:,} raw events, {n_req:,} model requests, {n_hours:,} usage_hours "
          f"rows (year: the same usage_hours rows only); spool usage --by day returns "
          f"{len(rep['rows'])} days; load average {load0} before, {_load()} after; {runs} rounds")
    print("| `spool usage --by day --json` | wall median (min\u2013max) | CPU median (min\u2013max) "
          "| `usage.report` alone, CPU median (min\u2013max) |")
    print("|---|---|---|---|")
    for k in homes:
        print(f"| {k} | {_ms(WALL[f'cli {k}'])} | {_ms(CPU[f'cli {k}'])} | {_ms(query[k])} |")
    for a, b in (("big", "empty"), ("big", "year")):
        print(f"| {a}/{b}, per round | **{_pair_ratio(f'cli {a}', f'cli {b}', WALL)}** "
              f"| **{_pair_ratio(f'cli {a}', f'cli {b}', CPU)}** | |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--cache", type=Path,
                    default=Path(tempfile.gettempdir()) / "spool-bench-usage")
    ap.add_argument("--only", choices=("peer", "flat"))
    ap.add_argument("--bin", type=Path, default=None,
                    help="the bin directory whose `spool` is timed (default: a virtualenv with"
                         " `pip install .` in the cache, as users install it)")
    a = ap.parse_args()
    bin_dir = a.bin or plain_venv(a.cache)
    if a.only in (None, "peer"):
        bench_peer(a.cache / f"peer-{a.sessions}", a.sessions, a.runs, a.rebuild, bin_dir)
    if a.only in (None, "flat"):
        bench_flat(a.cache / "flat", a.runs, a.rebuild, bin_dir)


if __name__ == "__main__":
    main()
