"""Load: 8 concurrent Codex-like sessions for 60 s with the worker running."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "load_hooks.py"


@pytest.mark.slow
def test_eight_sessions_for_a_minute_lose_nothing():
    duration = os.environ.get("SPOOL_LOAD_SECONDS", "60")
    res = subprocess.run([sys.executable, str(SCRIPT), "--sessions", "8", "--duration", duration,
                          "--json"], capture_output=True, text=True, timeout=float(duration) + 240)
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    print("load summary:", summary)  # the latency distribution, shown with -s / in CI logs
    assert summary["events_sent"] > 8 * 20
    assert summary["hook_failures"] == 0
    assert summary["lost"] == 0
    assert summary["turn_traces"] == summary["turns"]
    assert res.returncode == 0
