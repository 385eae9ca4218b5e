"""A small Infinium-compatible HTTP receiver on 127.0.0.1, for the demo and tests.

``POST /agents/{id}/trace`` records every complete request (headers, body, the
Idempotency-Key, when; a body cut short by a dying sender is only counted in
``incomplete``) and answers from a script, then 200
``{"traceId": ...}`` by default.  A script entry is one of:

* an int status, or ``(status, headers, body)`` (body: bytes, str or a JSON-able
  object);
* ``"timeout"``: wait ``timeout_seconds`` (past the client's timeout) before a 200;
* ``"reset"``: read the request, then close the socket with a TCP reset;
* ``"slow"``: wait ``slow_seconds``, then the default 200;
* ``"ok"``: the default 200.

With ``secret=...`` a request whose ``x-agent-key`` differs gets a 401 (before
the script is consulted), so credential tests use a real check.
The standard library only (``http.server`` in a daemon thread); loopback only.

    with Receiver() as rx:
        rx.script(500, (429, {"Retry-After": "2"}, {"error": "slow down"}), "reset")
        ... POST to f"{rx.url}/agents/A/trace" ...
        rx.unique_keys()

``python -m spool.demo.receiver`` runs one in the foreground (``GET /_stats``: counts).
"""
from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_PATH = re.compile(r"^/agents/([^/]+)/trace/?$")


@dataclass
class Request:
    seq: int
    at: float
    path: str
    agent_id: str | None
    headers: dict[str, str] = field(repr=False)  # lower-cased names
    body: bytes = field(repr=False)
    action: str = ""  # what the receiver did: "200", "500", "timeout", "reset", ...
    status: int | None = None  # the status it answered (None: reset)

    @property
    def key(self) -> str | None:
        return self.headers.get("idempotency-key")

    def json(self) -> Any:
        return json.loads(self.body)


def reset(handler: BaseHTTPRequestHandler) -> None:
    """Drop the handler's connection with a TCP reset (SO_LINGER 0), as a crashed server would."""
    handler.close_connection = True
    try:
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    handler.connection.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format, *args):  # noqa: A002 - quiet
        pass

    def setup(self):
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def do_GET(self):  # noqa: N802
        rx = self.server.receiver
        if self.path.rstrip("/") != "/_stats":
            self.send_error(404)
            return
        data = json.dumps(rx.stats()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self._headers_buffer.append(b"\r\n" + data)
        self.flush_headers()

    def do_POST(self):  # noqa: N802
        rx = self.server.receiver
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            # The sender went away mid-body (e.g. a killed worker): a real server acts on
            # no such request, so it is counted, never recorded or answered.
            with rx._lock:
                rx.incomplete += 1
            self.close_connection = True
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        m = _PATH.match(self.path)
        req = rx._record(self.path, m.group(1) if m else None, headers, body)
        if not m:
            return self._answer(rx, req, 404, {}, {"error": f"no route {self.path}"})
        if rx.secret is not None and headers.get("x-agent-key") != rx.secret:
            return self._answer(rx, req, 401, {}, {"error": "invalid agent credentials"})
        entry = rx._next()
        if entry == "reset":
            req.action = "reset"
            reset(self)
            return
        if entry in ("timeout", "slow"):
            req.action = entry
            rx._stopping.wait(rx.timeout_seconds if entry == "timeout" else rx.slow_seconds)
            entry = "ok"
        if entry is None or entry == "ok":
            return self._answer(rx, req, 200, {}, {"traceId": f"tr-{req.seq}"})
        if isinstance(entry, int):
            return self._answer(rx, req, entry, {}, {"error": f"scripted {entry}"} if entry >= 300
                                else {"traceId": f"tr-{req.seq}"})
        status, hdrs, payload = entry
        return self._answer(rx, req, status, dict(hdrs or {}), payload)

    def _answer(self, rx, req, status, headers, payload):
        if isinstance(payload, bytes):
            data = payload
        elif isinstance(payload, str):
            data = payload.encode()
        else:
            data = json.dumps(payload).encode()
            headers.setdefault("Content-Type", "application/json")
        req.status = status
        if not req.action:
            req.action = str(status)
        try:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            # headers and body in one write: two small writes on a keep-alive
            # connection meet Nagle + delayed ACK (40 ms per request)
            self._headers_buffer.append(b"\r\n" + data)
            self.flush_headers()
        except OSError:
            self.close_connection = True  # the client gave up (timeout): fine


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    receiver: "Receiver"


class Receiver:
    """A scripted Infinium stand-in on 127.0.0.1 (port 0: a free one)."""

    def __init__(self, *, secret: str | None = None, timeout_seconds: float = 2.0,
                 slow_seconds: float = 0.2, port: int = 0) -> None:
        self.secret = secret
        self.timeout_seconds = timeout_seconds
        self.slow_seconds = slow_seconds
        self._port = port
        self._lock = threading.Lock()
        self._script: deque = deque()
        self._requests: list[Request] = []
        self.incomplete = 0  # requests whose body was cut short by the sender
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------
    def start(self) -> "Receiver":
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", self._port), _Handler)
        self._server.receiver = self
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="spool-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> "Receiver":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the receiver is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- scripting --------------------------------------------------------
    def script(self, *entries) -> None:
        """Queue responses for the next requests, in order."""
        for e in entries:
            if isinstance(e, str) and e not in ("timeout", "reset", "slow", "ok"):
                raise ValueError(f"unknown script entry {e!r}")
            with self._lock:
                self._script.append(e)

    def _next(self):
        with self._lock:
            return self._script.popleft() if self._script else None

    def _record(self, path, agent_id, headers, body) -> Request:
        with self._lock:
            req = Request(len(self._requests) + 1, time.time(), path, agent_id, headers, body)
            self._requests.append(req)
            return req

    # -- inspection -------------------------------------------------------
    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def requests_for(self, key: str) -> list[Request]:
        return [r for r in self.requests if r.key == key]

    def unique_keys(self) -> set[str]:
        """Idempotency keys seen (a receiver deduplicating by key stores one of each)."""
        return {r.key for r in self.requests if r.key}

    def accepted_keys(self) -> set[str]:
        """Keys of requests answered with a 2xx."""
        return {r.key for r in self.requests if r.key and r.status and 200 <= r.status < 300}

    def stats(self) -> dict:
        """Counts (also served as ``GET /_stats``): requests, unique and accepted keys."""
        reqs = self.requests
        return {"requests": len(reqs), "unique_keys": len({r.key for r in reqs if r.key}),
                "accepted_keys": len(self.accepted_keys())}

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._script.clear()


def main(argv: list[str] | None = None) -> None:
    """``python -m spool.demo.receiver [--port N] [--secret S]``: print the URL, serve until
    stdin closes (or Ctrl-C).  ``GET /_stats`` returns the counts."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m spool.demo.receiver", description=main.__doc__)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--secret", default=None)
    args = ap.parse_args(argv)
    with Receiver(port=args.port, secret=args.secret) as rx:
        print(rx.url, flush=True)
        try:
            sys.stdin.read()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
