"""Wall time of one real `codex exec` turn: no hooks, spool's hooks, NeMo Relay.

The overhead users feel: the same scripted turn (3 tool calls, one failing, then
a final message: 4 model requests, 18 hook events) against the fake model server
(tests/support/fake_model.py), in three scratch projects sharing nothing but the Codex
binary - one without any hook ("no hooks"), one after `spool init
--no-interactive` ("installed hooks"), and one never inited where Codex is run
as `spool run --wait 0 -- codex exec ...` ("spool run": the hooks as -c
overrides, plus spool's own start, the run mark and the summary line), and
one run through NeMo Relay, the peer (`nemo-relay run --agent codex
--openai-base-url <fake server> -- exec ...`: its gateway between Codex and
the fake server, its hooks as -c overrides; PyPI nemo-relay-cli-bin==0.10.4,
`--nemo PATH` to its binary).  Runs alternate between them so machine noise
hits all alike.  The worker is not started (SPOOL_NO_AUTOSTART=1): this
measures the hooks on Codex's critical path.  Codex's own telemetry is off in
every configuration ([analytics] enabled = false, [otel] exporters "none"),
else its ~5 s offline exit stall hides the hooks' cost.  ``--load N`` keeps N
busy processes spinning during the runs (the "both cores loaded" condition).

    .venv/bin/python scripts/bench_codex_overhead.py [--runs 7] [--load 2]
        [--nemo .nemo/bin/nemo-relay] [--no-unshare]
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import shlex
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))


TELEMETRY_OFF = """
[analytics]
enabled = false

[otel]
exporter = "none"
trace_exporter = "none"
metrics_exporter = "none"
"""


def nemo_wrapper(root: Path, nemo: str, codex_bin: Path) -> Path:
    """`<wrapper> CODEX -c model_providers.fake.base_url="URL" exec ARGS` -> NeMo Relay
    running `codex exec ARGS` (codex on PATH) with its gateway forwarding to URL."""
    w = root / "nemo-relay-codex"
    w.write_text(f"""#!/bin/sh
shift 2
url=${{1#*=}}; url=${{url#\\"}}; url=${{url%\\"}}
shift
export PATH={shlex.quote(str(codex_bin.parent))}:$PATH OPENAI_API_KEY=dummy-offline-key
exec {shlex.quote(nemo)} run --agent codex --openai-base-url "$url" -- "$@"
""")
    w.chmod(0o755)
    return w


def spin() -> None:
    while True:
        pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--load", type=int, default=0, help="busy processes during the runs")
    ap.add_argument("--nemo", default=str(REPO / ".nemo" / "bin" / "nemo-relay"),
                    help="the nemo-relay binary ('' to leave NeMo Relay out)")
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
    names = ["no hooks", "installed hooks", "spool run"]
    if args.nemo and shutil.which(args.nemo):
        names.append("nemo relay")
        wraps["nemo relay"] = [str(nemo_wrapper(root, args.nemo, binary))]
    elif args.nemo:
        print(f"no NeMo Relay at {args.nemo}: pip install nemo-relay-cli-bin==0.10.4 "
              "in a venv and pass --nemo", file=sys.stderr)
        return 2
    for name in names:
        d = root / name.replace(" ", "-")
        home = ce.make_codex_home(d)
        with open(home / "config.toml", "a") as f:
            f.write(TELEMETRY_OFF)
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
    spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.load)]
    for p in spinners:
        p.start()
    loads = [os.getloadavg()[0]]
    try:
        for i in range(args.runs + 1):  # the first round warms caches and is dropped
            for name, (home, proj) in setups.items():
                res = ce.run_session(proj, home, ["run the commands"], script=script,
                                     isolate=isolate, wrap=wraps.get(name)).check()
                if i:
                    times[name].append(res.runs[0].seconds)
            loads.append(os.getloadavg()[0])
    finally:
        for p in spinners:
            p.terminate()
    from sqlalchemy import text

    from spool import db, ingest

    engine = db.open_db()
    ingest.ingest_all(engine)
    with db.read(engine) as conn:
        events = conn.execute(text("SELECT count(*) FROM raw_events")).scalar_one()
    engine.dispose()
    per_turn = events / (args.runs + 1) / 2  # two of the three setups record events

    print(f"codex exec, one turn (4 model requests, 3 tool calls), {args.runs} rounds, "
          f"{args.load} busy process(es), load average (1 min) {min(loads):.1f}-{max(loads):.1f}"
          f" (median {statistics.median(loads):.1f}), network: "
          f"{'unshare -n (loopback only)' if ce.unshare_prefix() and not args.no_unshare else 'loopback'}")
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=4) if len(ts) > 1 else [ts[0]] * 3
        print(f"  {name:15s} median {statistics.median(ts):.3f} s  IQR {q[0]:.3f}-{q[2]:.3f} s"
              f"  min {min(ts):.3f} s  max {max(ts):.3f} s")
    base = times["no hooks"]
    for name in names[1:]:
        t = statistics.median(times[name])
        # added time per round (same round, paired), then its median and spread
        added = sorted(a - b for a, b in zip(times[name], base))
        q = statistics.quantiles(added, n=4) if len(added) > 1 else [added[0]] * 3
        line = (f"  {name}: {t - statistics.median(base):+.3f} s per turn (medians, "
                f"x{t / statistics.median(base):.2f}); paired per round: median "
                f"{statistics.median(added):+.3f} s, IQR {q[0]:+.3f}..{q[2]:+.3f} s")
        if name in ("installed hooks", "spool run"):
            line += f"; {per_turn:.0f} spool hook events per turn"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
