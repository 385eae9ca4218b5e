"""`spool demo`: the whole flow, for real, on one machine, with no network.

1. A temporary spool home and project (granularity ``both``), and an embedded
   loopback receiver speaking the Infinium API (``spool.demo.receiver``) that checks
   the agent key.
2. The bundled real Codex 0.169.0 session (20 hook payloads, two turns, one
   ``echo hello`` per turn) replayed through real ``hook.py`` processes, exactly
   as hooks.json runs them.
3. The hooks start the worker by themselves (as they do for a user); it
   ingests, aggregates and delivers.
4. Wait until the receiver holds every expected trace, then print
   ``spool history``.  Exit 0 only if the receiver got every trace.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Callable

EXPECTED_TRACES = 3  # two turns + one session summary


def _session_files() -> tuple[list[Path], Path]:
    base = Path(str(resources.files("spool") / "demo_session"))
    return sorted(base.glob("0*.json")), base / "rollout.jsonl"


def _hook_cmd() -> list[str]:
    return [sys.executable, "-I", "-S", str(Path(__file__).parent.parent / "hook.py")]


def _stop_worker(home: Path) -> None:
    try:
        pid = int((home / "worker.lock").read_text().strip() or 0)
    except (OSError, ValueError):
        return
    if pid <= 0:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def run(echo: Callable[[str], None] = print, *, keep: bool = False, timeout: float = 90.0) -> int:
    from .receiver import Receiver

    root = Path(tempfile.mkdtemp(prefix="spool-demo-"))
    home, project = root / "home", root / "project"
    project.mkdir()
    secret = secrets.token_urlsafe(16)  # in env and memory only, never argv or disk
    payloads, rollout_src = _session_files()
    rollout = root / "rollout.jsonl"
    shutil.copyfile(rollout_src, rollout)
    receiver = Receiver(secret=secret).start()
    env = dict(os.environ)
    for var in ("SPOOL_NO_AUTOSTART", "INFINIUM_BASE_URL", "SPOOL_SINKS", "SPOOL_GRANULARITY",
                "CONNECTOR_FLUSH_ON_STOP", "CONNECTOR_FLUSH_ON_SESSION_END"):
        env.pop(var, None)
    env.update(SPOOL_HOME=str(home), INFINIUM_AGENT_ID="demo-agent", INFINIUM_AGENT_SECRET=secret,
               SPOOL_SESSION_END_GRACE="1", SPOOL_WORKER_IDLE_EXIT="5")
    from .. import config

    config.write_file(project, {"agent_id": "demo-agent", "base_url": receiver.url,
                                "granularity": "both"})
    from .. import credentials  # as `spool init --base-url` would: approve the demo receiver

    credentials.approve_base_url(home, project, receiver.url)
    code = 1
    try:
        echo(f"spool demo: home {home}")
        echo(f"receiver (Infinium API) on {receiver.url}")
        started = time.monotonic()
        for path in payloads:
            obj = json.loads(path.read_bytes())
            obj["cwd"] = str(project)
            obj["transcript_path"] = str(rollout)
            res = subprocess.run(_hook_cmd(), input=json.dumps(obj).encode(), cwd=project,
                                 env=env, capture_output=True, timeout=30)
            if res.returncode != 0 or res.stdout:
                echo(f"hook failed on {path.name}: exit {res.returncode}")
                return 1
        echo(f"replayed {len(payloads)} real Codex hook events through hook.py "
             f"in {time.monotonic() - started:.2f} s; the hooks started the worker")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(receiver.accepted_keys()) < EXPECTED_TRACES:
            time.sleep(0.1)
        got = receiver.accepted_keys()
        echo(f"receiver accepted {len(got)}/{EXPECTED_TRACES} traces "
             f"({len(receiver.requests)} requests) in {time.monotonic() - started:.2f} s")
        _stop_worker(home)
        history = subprocess.run([sys.executable, "-m", "spool", "history"], env=env,
                                 capture_output=True, text=True, timeout=60)
        echo(history.stdout.rstrip())
        if history.returncode != 0:
            echo(history.stderr.rstrip())
        code = 0 if len(got) == EXPECTED_TRACES else 1
        if code:
            echo("demo FAILED: not every trace reached the receiver; see "
                 f"{home / 'worker.log'}")
            keep = True
        return code
    finally:
        receiver.stop()
        _stop_worker(home)
        if keep:
            echo(f"kept {root}; look around with: SPOOL_HOME={home} {spool_command()} show "
                 "<trace id>")
        else:
            shutil.rmtree(root, ignore_errors=True)
            echo(f"removed the demo's temporary home {home} (`spool demo --keep` keeps it). "
                 f"Next: `{spool_command()} init` in a project of yours, then use Codex as "
                 "usual.")


def spool_command() -> str:
    """How the user runs this spool: `spool` when that is the one on PATH, else the path of
    its script (scripts/demo.sh installs into .venv, which is not on PATH)."""
    script = Path(sys.executable).parent / "spool"
    found = shutil.which("spool")
    if not script.exists() or (found and Path(found).resolve() == script.resolve()):
        return "spool"
    return str(script)  # absolute: the next step runs in another directory
