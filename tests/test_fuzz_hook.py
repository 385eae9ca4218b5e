"""Fuzzed hook input: whatever arrives, the hook exits 0 silently and loses nothing.

Every input is accounted for afterwards: an event (raw_events, status ok), or
kept in quarantine with its bytes - never dropped.
"""
from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spool import db, hook, ingest, paths

from support.hookproc import hook_cmd
from support.recorded import fixture_payloads

pytestmark = pytest.mark.slow

REAL = [json.loads(p) for _, p in fixture_payloads()]
EVENTS = ["SessionStart", "UserPromptSubmit", "PreModelRequest", "PostModelRequest", "PreToolUse",
          "PostToolUse", "Stop", "SessionEnd", "PreCompact", "PostCompact", "SubagentStart",
          "SubagentStop", "PermissionRequest", "Interrupt", "NotAnEvent", ""]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@st.composite
def mutated_payload(draw) -> bytes:
    base = dict(draw(st.sampled_from(REAL)))
    for key in draw(st.lists(st.sampled_from(sorted({k for p in REAL for k in p})), max_size=3)):
        choice = draw(st.integers(0, 2))
        if choice == 0:
            base.pop(key, None)
        else:
            base[key] = draw(json_values)  # wrong types for every field
    if draw(st.booleans()):
        base["hook_event_name"] = draw(st.sampled_from(EVENTS))
    text = json.dumps(base, ensure_ascii=draw(st.booleans()))
    return text.encode("utf-8", "surrogatepass")


def deep(n: int) -> bytes:
    return ("[" * n + "]" * n).encode()


inputs = st.one_of(
    st.binary(max_size=300),                                              # random bytes
    mutated_payload(),                                                    # wrong types, unknown events
    mutated_payload().map(lambda b: b[: len(b) // 2]),                    # truncated JSON
    st.integers(1, 5000).map(deep),                                       # deep nesting
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),  # surrogates, NULs
    st.sampled_from(REAL).map(lambda p: json.dumps({**p, "prompt": "\x00" * 50 + "\ud800"}).encode(
        "utf-8", "surrogatepass")),
    st.integers(10_000, 200_000).map(lambda n: json.dumps({**REAL[1], "prompt": "y" * n}).encode()),
)


def _account(engine, n_inputs: int) -> tuple[int, int]:
    ingest.ingest_all(engine)
    conn = sqlite3.connect(paths.db_path())
    try:
        ok = conn.execute("SELECT count(*) FROM raw_events WHERE status = 'ok'").fetchone()[0]
        new = conn.execute("SELECT count(*) FROM raw_events WHERE status != 'ok'").fetchone()[0]
        q = conn.execute("SELECT count(*) FROM quarantine").fetchone()[0]
    finally:
        conn.close()
    assert new == 0
    assert ok + q == n_inputs
    return ok, q


def test_ten_thousand_inputs_through_the_hook_function(spool_home, tmp_path):
    engine = db.open_db()
    seen: list[bytes] = []

    @settings(max_examples=10_000, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(inputs)
    def run(data: bytes):
        kept = data[: hook.MAX_PAYLOAD]
        where = hook.handle(kept, len(data), int(len(data) > hook.MAX_PAYLOAD), str(tmp_path),
                            str(spool_home), time.time())
        assert where == "db"
        seen.append(data)

    run()
    assert len(seen) >= 10_000
    ok, q = _account(engine, len(seen))
    assert ok > 0 and q > 0  # both kinds really occurred
    assert not list(spool_home.glob("overflow-*.jsonl"))
    engine.dispose()


def test_hundreds_of_inputs_through_the_real_process(spool_home, tmp_path):
    engine = db.open_db()
    rnd = random.Random(1234)
    samples: list[bytes] = [rnd.randbytes(rnd.randint(0, 400)) for _ in range(100)]

    @settings(max_examples=200, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(inputs)
    def collect(data: bytes):
        samples.append(data)

    collect()

    def one(data: bytes):
        return subprocess.run(hook_cmd(), input=data, capture_output=True, cwd=tmp_path, timeout=60)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, samples))
    assert [r.returncode for r in results] == [0] * len(samples)  # never 2, never 1
    assert [r.stdout for r in results] == [b""] * len(samples)    # nothing injected into Codex
    _account(engine, len(samples))
    engine.dispose()
