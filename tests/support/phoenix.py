"""A real Arize Phoenix (scripts/install_phoenix.py: its own cached virtualenv) as a subprocess
on a free loopback port, offline, with its working directory in a temp dir; and small readers
of its REST API.  Used by the session-scoped ``phoenix`` fixture in tests/conftest.py."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from support.waiting import wait_until

SCRIPTS = Path(__file__).resolve().parent.parent.parent / "scripts"
READY_DEADLINE = 240.0  # ~20 s idle; much more with both cores busy


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _phoenix_binary() -> Path:
    sys.path.insert(0, str(SCRIPTS))
    try:
        import install_phoenix
    finally:
        sys.path.remove(str(SCRIPTS))
    return install_phoenix.ensure_phoenix()


class Phoenix:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "phoenix.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Phoenix":
        binary = _phoenix_binary()
        env = dict(os.environ, PHOENIX_WORKING_DIR=str(self.workdir / "wd"),
                   PHOENIX_PORT=str(self.port), PHOENIX_GRPC_PORT=str(_free_port()),
                   PHOENIX_HOST="127.0.0.1", PHOENIX_ALLOW_EXTERNAL_RESOURCES="false",
                   PHOENIX_ENABLE_MCP_SERVER="false", PHOENIX_TELEMETRY_ENABLED="false")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([str(binary), "serve"], env=env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"phoenix exited {self.proc.returncode}:\n{self.tail()}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_until(ready, READY_DEADLINE, 0.5, what="phoenix to be ready")
        except AssertionError:
            self.stop()
            raise RuntimeError(f"phoenix not ready in {READY_DEADLINE:.0f} s:\n{self.tail()}")
        return self

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    # --- REST readers ---------------------------------------------------------------
    def spans(self, project: str) -> list[dict]:
        out: list[dict] = []
        cursor = None
        while True:
            params = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
            r = httpx.get(f"{self.url}/v1/projects/{project}/spans", params=params, timeout=10)
            if r.status_code == 404:
                return []
            r.raise_for_status()
            data = r.json()
            out += data["data"]
            cursor = data.get("next_cursor")
            if not cursor:
                return out

    def wait_spans(self, project: str, predicate, deadline_s: float = 60.0) -> list[dict]:
        """Spans of ``project`` once ``predicate(spans)`` holds (ingestion is asynchronous)."""
        spans: list[dict] = []

        def matched() -> bool:
            spans[:] = self.spans(project)
            return bool(predicate(spans))

        try:
            wait_until(matched, deadline_s, 0.3, what=f"phoenix spans of {project!r}")
        except AssertionError:
            raise AssertionError(
                f"phoenix spans of {project!r} never matched: {len(spans)} spans") from None
        return spans
