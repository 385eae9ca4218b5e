"""Crash safety: a delivering worker process SIGKILLed at random points, round after round.

The worker is a small script (a real subprocess) calling ``Dispatcher.run_once`` in a loop;
the receiver runs in the test process.  Kill points: just before a send, after the server
answered but before the ack (the worker kills itself there), and at random moments while
responses are slow (killed by the test, usually mid-request).  In the end every trace was
accepted, and every duplicate carried the key (and payload) of its trace.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spool import db, paths
from spool.demo.receiver import Receiver

from support.delivery import SECRET, add_many, make_project, states
from support.waiting import wait_until

WORKER = r'''
import os, signal, sys, time
from spool import db, paths
from spool.deliver import Dispatcher
from spool.sinks.infinium import InfiniumSink

mode = os.environ["CRASH_MODE"]
after = int(os.environ.get("CRASH_AFTER", "0"))


class Crashy(InfiniumSink):
    count = 0

    def send(self, row, payload):
        Crashy.count += 1
        if mode == "before_send" and Crashy.count == after:
            os.kill(os.getpid(), signal.SIGKILL)
        out = super().send(row, payload)
        if mode == "after_answer" and Crashy.count == after:
            os.kill(os.getpid(), signal.SIGKILL)
        return out


engine = db.make_engine(paths.db_path())
print("ready", flush=True)
with Dispatcher(engine, sinks={"infinium": Crashy()}) as d:
    while True:
        r = d.run_once(limit=6)
        if r.claimed == 0:
            if mode == "finish":
                with db.read(engine) as conn:
                    left = conn.exec_driver_sql(
                        "SELECT COUNT(*) FROM outbox WHERE state != 'sent'").scalar()
                if left == 0:
                    break
            time.sleep(0.02)  # the child dispatcher's idle poll (its loop), not the test's sync
'''

N = 200
ROUNDS = 24


@pytest.mark.slow
def test_sigkill_at_random_points_loses_nothing(tmp_path, monkeypatch):
    rng = random.Random(4)
    engine = db.open_db()
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    ids = [f"trace-{i:03d}" for i in range(N)]
    with Receiver(slow_seconds=0.05) as rx:
        project = make_project(tmp_path, rx.url, timeout=2.0)
        add_many(engine, ids, project=project, now=time.time())
        env = dict(os.environ, INFINIUM_AGENT_SECRET=SECRET, SPOOL_LEASE_SECONDS="1",
                   SPOOL_RETRY_BASE="0.05", SPOOL_RETRY_CAP="0.2",
                   PYTHONPATH=str(Path(__file__).resolve().parent.parent))
        modes = ["before_send", "after_answer", "external"] * (ROUNDS // 3)
        rng.shuffle(modes)
        killed = {"before_send": 0, "after_answer": 0, "external": 0}
        for mode in modes:
            if mode == "external":
                rx.script(*rng.choices(["slow", "ok", "reset", 503], [6, 3, 1, 1], k=8))
            proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path,
                                    env=dict(env, CRASH_MODE=mode,
                                             CRASH_AFTER=str(rng.randint(1, 12))),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            assert proc.stdout.readline() == b"ready\n", proc.stderr.read()
            if mode == "external":
                time.sleep(rng.uniform(0.02, 0.3))  # a random kill point, not synchronisation
                proc.send_signal(signal.SIGKILL)
            try:
                rc = proc.wait(timeout=20)
            finally:
                proc.kill()
                proc.stdout.close()
                proc.stderr.close()
            assert rc == -signal.SIGKILL
            killed[mode] += 1
        assert min(killed.values()) >= ROUNDS // 3
        assert states(engine).get("sent", 0) < N  # the rounds left work to finish
        final = subprocess.run([sys.executable, str(script)], cwd=tmp_path, timeout=60,
                               env=dict(env, CRASH_MODE="finish"), capture_output=True)
        assert final.returncode == 0, final.stderr.decode()
        wait_until(lambda: states(engine) == {"sent": N}, timeout=5)
        reqs = rx.requests
        assert rx.accepted_keys() == set(ids)
        assert {r.key for r in reqs} <= set(ids)  # no request without a known key
        first_body = {}
        for r in reqs:  # every duplicate repeats its key's payload exactly
            assert first_body.setdefault(r.key, r.body) == r.body
        duplicates = len(reqs) - N
        print(f"\n{len(reqs)} requests for {N} traces ({duplicates} resends), kills {killed}")
        assert duplicates > 0  # the kills really interrupted deliveries
    with db.read(engine) as conn:
        attempts = conn.exec_driver_sql("SELECT COUNT(*) FROM delivery_attempts").scalar()
    assert N <= attempts <= len(reqs)
    engine.dispose()
    assert paths.db_path().exists()
