"""Server mode's HTTP ingest: ``POST /hooks/codex`` with the hook's stdin as body.

For machines where Codex runs somewhere the hook cannot reach the spool's
SQLite file directly (a container, a VM): a tiny hook posts the payload here.
The request goes through the very same code path as the hook
(``spool.hook.handle``: one INSERT, overflow on any database problem), with
``source='http'``.

* A bearer token is generated at start (``secrets.token_urlsafe``) and
  required on every ingest request (constant-time compare); it lives in memory
  only.
* Bodies over the hook's cap (16 MiB) are refused with 413 before reading.
* ``GET /health`` answers ``{"ok": true}`` without the token (it reveals nothing).
* Binds 127.0.0.1 by default.
"""
from __future__ import annotations

import hmac
import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from . import hook, paths

MAX_BODY = hook.MAX_PAYLOAD
INGEST_PATH = "/hooks/codex"


class _Handler(BaseHTTPRequestHandler):
    server: "IngestServer"
    protocol_version = "HTTP/1.1"
    timeout = 30  # a stalled client never holds a thread for ever

    def log_message(self, fmt, *args):  # no request logging to stderr
        pass

    def _reply(self, status: int, obj: dict) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/health":
            self._reply(200, {"ok": True, "service": "spool"})
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self):
        if self.path != INGEST_PATH:
            self.close_connection = True
            return self._reply(404, {"error": "not found"})
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        if not hmac.compare_digest(token.encode(), self.server.token.encode()):
            self.close_connection = True
            return self._reply(401, {"error": "missing or wrong bearer token"})
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self.close_connection = True
            return self._reply(411, {"error": "Content-Length required"})
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            return self._reply(413, {"error": f"body over {MAX_BODY} bytes"})
        received_at = time.time()
        try:
            data = self.rfile.read(length)
        except OSError:  # timed out / reset mid-body
            data = b""
        if len(data) < length:
            self.close_connection = True
            return self._reply(400, {"error": "body shorter than Content-Length; nothing stored"})
        cwd = None
        try:
            obj = json.loads(data)
            if isinstance(obj, dict) and isinstance(obj.get("cwd"), str):
                cwd = obj["cwd"]
        except ValueError:
            pass  # kept anyway: the ingest step quarantines it with the reason
        try:
            where = hook.handle(data, len(data), 0, cwd, str(self.server.home), received_at,
                                source="http")
        except Exception as exc:  # both the database and overflow failed
            return self._reply(503, {"error": f"could not store the event: {type(exc).__name__}"})
        self._reply(202, {"stored": where})


class IngestServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, home: Path | None = None,
                 token: str | None = None) -> None:
        super().__init__((host, port), _Handler)
        self.home = home or paths.spool_home()
        self.token = token or secrets.token_urlsafe(32)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "IngestServer":
        self._thread = threading.Thread(target=self.serve_forever, name="spool-ingest", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread:
            self._thread.join(timeout=5)
