"""Crash safety of batched OTLP delivery: a delivering worker process SIGKILLed before a send
or after the receiver answered (before the ack), round after round.  In the end every trace's
spans arrived, and every copy of a span that arrived more than once is byte-identical (so a
backend dropping exact duplicates stores each once)."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from spool import config, db, otlp

from support.delivery import states
from support.otlp_receiver import OtlpReceiver
from support.waiting import wait_until

pytestmark = pytest.mark.slow

BODIES = json.loads((Path(__file__).parent / "fixtures" / "otlp" / "bodies.json").read_text())

WORKER = r'''
import os, signal
from spool import db, paths
from spool.deliver import Dispatcher
from spool.sinks.otlp import OtlpSink

mode, after = os.environ["CRASH_MODE"], int(os.environ["CRASH_AFTER"])


class Crashy(OtlpSink):
    count = 0

    def send_batch(self, rows, payload):
        Crashy.count += 1
        if mode == "before_send" and Crashy.count == after:
            os.kill(os.getpid(), signal.SIGKILL)
        out = super().send_batch(rows, payload)
        if mode == "after_answer" and Crashy.count == after:
            os.kill(os.getpid(), signal.SIGKILL)
        return out


engine = db.make_engine(paths.db_path())
with Dispatcher(engine, sinks={"otlp": Crashy()}) as d:
    while d.run_once(limit=7).claimed:
        pass
'''


def _leases_expired(engine) -> bool:
    """The killed worker's leases (SPOOL_LEASE_SECONDS=1) have run out: its rows are due."""
    import time

    from sqlalchemy import text

    with db.read(engine) as conn:
        latest = conn.execute(text("SELECT MAX(lease_until) FROM outbox "
                                   "WHERE state = 'in_flight'")).scalar()
    return latest is None or time.time() > latest


def test_sigkill_rounds_lose_nothing_and_resends_are_identical(engine, tmp_path, monkeypatch):
    from sqlalchemy import text

    proj = tmp_path / "proj"
    proj.mkdir()
    config.write_file(proj, {"sinks": ["otlp"]})
    n = 40
    ids = [f"crash-{i:03d}" for i in range(n)]
    with db.write(engine) as conn:
        for i, tid in enumerate(ids):
            b = copy.deepcopy(BODIES["turn"][i % 2])
            b["trace_id"] = tid
            conn.execute(text("INSERT INTO traces (trace_id, kind, project, name, created_at, "
                              "body) VALUES (:t, 'turn', :p, 'c', 1.0, :b)"),
                         {"t": tid, "p": str(proj), "b": json.dumps(b)})
            conn.execute(text("INSERT INTO outbox (trace_id, sink, created_at, next_attempt_at)"
                              " VALUES (:t, 'otlp', 1.0, 1.0)"), {"t": tid})
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    kills = 0
    with OtlpReceiver() as rx:
        env = dict(os.environ, OTEL_EXPORTER_OTLP_ENDPOINT=rx.url, SPOOL_LEASE_SECONDS="1",
                   PYTHONPATH=str(Path(__file__).resolve().parent.parent))
        plan = [("after_answer", 1), ("before_send", 2), ("after_answer", 2),
                ("before_send", 1), ("after_answer", 3), ("finish", 0)]
        for mode, after in plan:
            r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                               timeout=120, env={**env, "CRASH_MODE": mode,
                                                 "CRASH_AFTER": str(after)})
            if r.returncode == -9:
                kills += 1
                wait_until(lambda: _leases_expired(engine), 10, what="the dead worker's leases")
            else:
                assert r.returncode == 0, r.stderr
        # the last round ran until nothing was due; leased rows of killed rounds included
        assert states(engine) == {"sent": n}, states(engine)
        assert kills >= 4
        copies = defaultdict(set)
        for req in rx.requests:
            if req.status == 200:
                for s in req.spans():
                    copies[(s.trace_id, s.span_id)].add(s.SerializeToString())
    assert {k[0] for k in copies} == {otlp.otel_trace_id(t) for t in ids}
    assert len(copies) == n * 4
    assert all(len(v) == 1 for v in copies.values())  # every resend identical
    resent = sum(1 for r in rx.requests if r.status == 200) - (n + 6) // 7
    assert resent > 0  # the after_answer kills really caused resends
