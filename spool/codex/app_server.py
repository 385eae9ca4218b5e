"""A small JSON-RPC client for ``codex app-server`` (stdio, one JSON object per
line each way, with timeouts): ``hooks/list`` and ``config/batchWrite``, the
calls Codex's own review screen makes to trust a project and its hooks."""
from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
from collections import deque
from pathlib import Path
from typing import Any

from ..errors import SpoolError
from .binary import INSTALL_HINT


class AppServerError(SpoolError):
    pass


class AppServer:
    """``codex app-server`` as a child process; one JSON object per line each way."""

    def __init__(self, binary: Path, codex_home: Path | None = None, timeout: float = 60,
                 cwd: Path | None = None) -> None:
        self.binary = Path(binary)
        self.timeout = timeout
        env = dict(os.environ)
        if codex_home is not None:
            env["CODEX_HOME"] = str(codex_home)
        env.setdefault("RUST_LOG", "error")
        self._next_id = 0
        self._lines: queue.Queue = queue.Queue()
        self._stderr: deque[str] = deque(maxlen=50)
        try:
            self.proc = subprocess.Popen(
                [str(self.binary), "app-server"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=env, cwd=str(cwd) if cwd else None)
        except OSError as exc:
            raise AppServerError(f"cannot start `{binary} app-server`: {exc}.", INSTALL_HINT) from None
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line.decode("utf-8", "replace").rstrip())

    def _send(self, obj: dict) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(obj) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._died() from None

    def _died(self) -> AppServerError:
        tail = " | ".join(list(self._stderr)[-3:])
        return AppServerError(f"`codex app-server` stopped unexpectedly{': ' + tail if tail else ''}.",
                              "Run `codex app-server` by hand to see why, or check --codex-bin.")

    def notify(self, method: str, params: dict | None = None) -> None:
        msg: dict[str, Any] = {"method": method}
        if params is not None:
            msg["params"] = params
        self._send(msg)

    def request(self, method: str, params: dict | None = None, timeout: float | None = None) -> Any:
        """Send a request and wait (with a deadline) for its response's result."""
        import time

        self._next_id += 1
        rid = self._next_id
        msg: dict[str, Any] = {"id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        self._send(msg)
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AppServerError(f"`codex app-server` did not answer {method} in time.",
                                     "Try again; if it persists run `codex app-server` by hand.")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise self._died()
            try:
                m = json.loads(line)
            except ValueError:
                continue
            if not isinstance(m, dict):
                continue
            if "method" in m and "id" in m:  # a request from the server: we support none
                self._send({"id": m["id"], "error": {"code": -32601, "message": "not supported"}})
                continue
            if m.get("id") != rid:
                continue  # a notification, or a stale response
            if "error" in m:
                err = m["error"] or {}
                raise AppServerError(f"`codex app-server` refused {method}: "
                                     f"{err.get('message', err)}.",
                                     "Check the Codex version (`codex --version`) and config.toml.")
            return m.get("result")

    def initialize(self) -> dict:
        from .. import __version__

        result = self.request("initialize", {"clientInfo": {"name": "spool", "title": "spool",
                                                            "version": __version__}})
        self.notify("initialized")
        return result

    def close(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "AppServer":
        try:
            self.initialize()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- the calls spool makes -----------------------------------------------------

    def list_hooks(self, project: Path) -> dict:
        """hooks/list for one project: {"hooks": [...], "warnings": [...], "errors": [...]}."""
        result = self.request("hooks/list", {"cwds": [str(project)]}) or {}
        for entry in result.get("data", []):
            return entry
        return {"hooks": [], "warnings": [], "errors": []}

    def batch_write(self, edits: list[dict]) -> dict:
        return self.request("config/batchWrite", {"edits": edits}) or {}

    def trust_project(self, project: Path) -> None:
        self.batch_write([{"keyPath": "projects", "mergeStrategy": "upsert",
                           "value": {str(project): {"trust_level": "trusted"}}}])

    def trust_hooks(self, entries: dict[str, str]) -> None:
        """Upsert ``hooks.state`` {key: {trusted_hash: hash}} for these keys only."""
        if entries:
            self.batch_write([{"keyPath": "hooks.state", "mergeStrategy": "upsert",
                               "value": {k: {"trusted_hash": h} for k, h in entries.items()}}])
