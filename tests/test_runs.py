"""Runs and dead Codex processes (issue 18): SPOOL_RUN_ID carried by the hook onto the
session, listed by `spool sessions --run`, exported; a killed Codex's session finalised by
the sweep within about a minute ("codex exited") rather than the 10-minute TTL."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from typer.testing import CliRunner

from spool import aggregate, db, ingest, otlp
from spool.cli import get_app
from spool.render import to_infinium

from conftest import codex_like_session, hook_cmd, run_hook


def _feed(events, env=None, cwd=None):
    for e in events:
        r = run_hook(json.dumps(e).encode(), env=env, cwd=cwd)
        assert r.returncode == 0, r


def test_two_sessions_of_one_run_are_listed_together_and_exported(tmp_path):
    engine = db.open_db()
    _feed(codex_like_session("run-s1", turns=1), env={"SPOOL_RUN_ID": "run-A"})
    _feed(codex_like_session("run-s2", turns=1), env={"SPOOL_RUN_ID": "run-A"})
    _feed(codex_like_session("other", turns=1))
    ingest.ingest_all(engine)
    aggregate.aggregate(engine, time.time() + 60)
    r = CliRunner().invoke(get_app(), ["sessions", "--run", "run-A", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert sorted(x["session_id"] for x in rows) == ["run-s1", "run-s2"]
    assert {x["run_id"] for x in rows} == {"run-A"}
    r = CliRunner().invoke(get_app(), ["sessions", "--json"])
    assert len(json.loads(r.output)) == 3
    with db.read(engine) as conn:
        bodies = [json.loads(b) for (b,) in conn.exec_driver_sql(
            "SELECT body FROM traces WHERE session_id = 'run-s1'")]
    assert bodies and all(b["environment"]["run_id"] == "run-A" for b in bodies)
    assert to_infinium(bodies[0])["environment"]["custom_tags"]["run_id"] == "run-A"
    root = otlp.spans_for(bodies[0], otlp.Options())[0]
    assert {a.key: a.value.string_value for a in root.attributes}["spool.run_id"] == "run-A"


STAND_IN = r"""
import json, subprocess, sys, time
cmd, events = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for e in events:
    subprocess.run(cmd, input=json.dumps(e).encode(), check=True)
print("sent", flush=True)
time.sleep(600)
"""


def test_killed_codex_is_finalised_as_codex_exited(tmp_path):
    """A stand-in for Codex runs the real hook as its children, mid-turn, then is killed."""
    engine = db.open_db()
    evs = [e for e in codex_like_session("killed", turns=1)
           if e["hook_event_name"] not in ("Stop", "SessionEnd", "PostToolUse")]
    codex = subprocess.Popen([sys.executable, "-c", STAND_IN, json.dumps(hook_cmd()),
                              json.dumps(evs)], stdout=subprocess.PIPE, env=dict(os.environ))
    try:
        assert codex.stdout.readline() == b"sent\n"
        ingest.ingest_all(engine)
        with db.read(engine) as conn:
            pids = {r[0] for r in conn.exec_driver_sql(
                "SELECT codex_pid FROM raw_events WHERE session_id = 'killed'")}
        assert pids == {codex.pid}
        later = time.time() + 30  # quiet for half a minute, far below the 600 s TTL
        assert aggregate.sweep(engine, later) == 0  # Codex still runs: nothing finalised
    finally:
        codex.send_signal(signal.SIGKILL)
        codex.wait(timeout=30)
    assert aggregate.sweep(engine, later) == 1
    with db.read(engine) as conn:
        bodies = {k: json.loads(b) for k, b in conn.exec_driver_sql(
            "SELECT kind, body FROM traces WHERE session_id = 'killed'")}
        state = conn.exec_driver_sql(
            "SELECT state FROM sessions WHERE session_id = 'killed'").scalar()
    assert state == "final"
    turn = bodies["turn"]
    assert turn["incomplete"] and "codex exited" in turn["notes"][0]


def test_server_mode_sessions_keep_the_ttl(tmp_path):
    """Events that did not come through the hook (no Codex pid) wait for the TTL."""
    engine = db.open_db()
    from spool import hook

    home = os.environ["SPOOL_HOME"]
    for e in codex_like_session("remote", turns=1)[:-2]:
        hook.handle(json.dumps(e).encode(), 10, 0, "/x", home, time.time(), source="http")
    ingest.ingest_all(engine)
    assert aggregate.sweep(engine, time.time() + 60) == 0
    assert aggregate.sweep(engine, time.time() + 700) == 1


def test_hook_run_through_a_shell_records_the_shell_parent(tmp_path):
    """Codex may run the hook command through `sh -c`: the pid is then the shell's parent."""
    import shlex

    engine = db.open_db()
    ev = dict(codex_like_session("via-sh", turns=1)[0])
    cmd = " ".join(shlex.quote(c) for c in hook_cmd()) + "; true"  # no exec: sh stays
    r = subprocess.run(["sh", "-c", cmd], input=json.dumps(ev).encode(), timeout=30)
    assert r.returncode == 0
    ingest.ingest_all(engine)
    with db.read(engine) as conn:
        pid, start = conn.exec_driver_sql(
            "SELECT codex_pid, codex_start FROM raw_events WHERE session_id = 'via-sh'").one()
    assert pid == os.getpid()
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    assert start == int(stat[stat.rindex(b")") + 2:].split()[19])
