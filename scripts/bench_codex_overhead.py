"""Wall time of one real `codex exec` turn with and without spool's hooks.

The overhead users feel: the same scripted turn (3 tool calls, one failing, then
a final message: 4 model requests, 18 hook events) against the fake model server
(tests/support/fake_model.py), in three scratch projects sharing nothing but the Codex
binary - one without any hook ("no hooks"), one after `spool init
--no-interactive` ("installed hooks"), and one never inited where Codex is run
as `spool run --wait 0 -- codex exec ...` ("spool run": the hooks as -c
overrides, plus spool's own start, the run mark and the summary line).  Runs
alternate between them so machine noise hits all alike.  The worker is not
started (SPOOL_NO_AUTOSTART=1): this measures the hooks on Codex's critical path.

    .venv/bin/python scripts/bench_codex_overhead.py [--runs 7] [--no-unshare]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--no-unshare", action="store_true", help="plain loopback, no netns")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="spool-bench-codex-"))
    os.environ["SPOOL_HOME"] = str(root / "spool-home")
    os.environ["SPOOL_NO_AUTOSTART"] = "1"
    from support import codex as ce
    from support.fake_model import default_script
    from typer.testing import CliRunner

    from spool.cli import get_app

    binary = ce.codex_binary()
    script = [default_script()[0]]
    setups = {}
    spool_cli = str(Path(sys.executable).parent / "spool")
    wraps = {"spool run": [spool_cli, "run", "--wait", "0", "--"]}
    for name in ("no hooks", "installed hooks", "spool run"):
        d = root / name.replace(" ", "-")
        home = ce.make_codex_home(d)
        proj = ce.make_codex_project(d)
        if name == "installed hooks":
            r = CliRunner().invoke(get_app(), ["init", "--no-interactive", "--project", str(proj),
                                               "--codex-home", str(home), "--codex-bin",
                                               str(binary)])
            if r.exit_code != 0:
                print(r.output, file=sys.stderr)
                return 1
        setups[name] = (home, proj)

    isolate = False if args.no_unshare else None
    times: dict[str, list[float]] = {k: [] for k in setups}
    for i in range(args.runs + 1):  # the first round warms caches and is dropped
        for name, (home, proj) in setups.items():
            res = ce.run_session(proj, home, ["run the commands"], script=script,
                                 isolate=isolate, wrap=wraps.get(name)).check()
            if i:
                times[name].append(res.runs[0].seconds)
    from sqlalchemy import text

    from spool import db, ingest

    engine = db.open_db()
    ingest.ingest_all(engine)
    with db.read(engine) as conn:
        events = conn.execute(text("SELECT count(*) FROM raw_events")).scalar_one()
    engine.dispose()
    per_turn = events / (args.runs + 1) / 2  # two of the three setups record events

    print(f"codex exec, one turn (4 model requests, 3 tool calls), {args.runs} runs each, "
          f"network: {'unshare -n (loopback only)' if ce.unshare_prefix() and not args.no_unshare else 'loopback'}")
    for name, ts in times.items():
        print(f"  {name:15s} median {statistics.median(ts):.3f} s  mean {statistics.mean(ts):.3f} s"
              f"  min {min(ts):.3f} s  max {max(ts):.3f} s")
    base = statistics.median(times["no hooks"])
    for name in ("installed hooks", "spool run"):
        t = statistics.median(times[name])
        print(f"  {name}: {t - base:+.3f} s per turn (x{t / base:.2f}); {per_turn:.0f} hook "
              f"events per turn -> {(t - base) / per_turn * 1000:+.1f} ms per event")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
