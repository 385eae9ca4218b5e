"""A small OTLP/HTTP trace receiver on 127.0.0.1 for tests and the benchmark.

``POST /v1/traces`` records each complete request (headers, raw body, the decoded
``ExportTraceServiceRequest``: gzip and both encodings understood) and answers from a script,
then 200 with an empty ``ExportTraceServiceResponse``.  Script entries:

* an int status, or ``(status, headers, body)`` (body: bytes or str);
* ``"partial"``: 200 with ``partial_success`` (1 rejected span, a message);
* ``"timeout"``: wait ``timeout_seconds`` before the 200; ``"reset"``: TCP reset.

``accept`` limits the Content-Types it takes (others get 415, as Phoenix answers JSON).
Spans are deduplicated by (trace id, span id) in ``spans`` like Phoenix stores them.
"""
from __future__ import annotations

import gzip
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from spool import otlp_wire
from spool.demo.receiver import reset


@dataclass
class Request:
    seq: int
    headers: dict[str, str] = field(repr=False)
    body: bytes = field(repr=False)  # as sent (maybe gzip)
    raw: bytes = field(repr=False)  # decompressed
    status: int | None = None
    action: str = ""

    def decoded(self):
        proto = "http/json" if "json" in self.headers.get("content-type", "") else "http/protobuf"
        return otlp_wire.decode_request(self.raw, proto)

    def spans(self) -> list:
        return [s for rs in self.decoded().resource_spans for ss in rs.scope_spans
                for s in ss.spans]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def do_POST(self):  # noqa: N802
        rx: OtlpReceiver = self.server.rx  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if len(body) < length:
            self.close_connection = True
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        raw = gzip.decompress(body) if headers.get("content-encoding") == "gzip" else body
        with rx.lock:
            req = Request(len(rx.requests) + 1, headers, body, raw)
            rx.requests.append(req if rx.keep_requests else None)
            entry = rx.queue.popleft() if rx.queue else "ok"
        if self.path != "/v1/traces":
            return self._answer(req, 404, {}, b"no route")
        ctype = headers.get("content-type", "")
        if rx.accept and ctype not in rx.accept:
            return self._answer(req, 415, {}, b"unsupported content type")
        if entry == "reset":
            req.action = "reset"
            reset(self)
            return
        if entry == "timeout":
            req.action = "timeout"
            rx.stopping.wait(rx.timeout_seconds)
            entry = "ok"
        if entry == "partial":
            resp = ExportTraceServiceResponse()
            resp.partial_success.rejected_spans = 1
            resp.partial_success.error_message = "span too old"
            return self._answer(req, 200, {"Content-Type": "application/x-protobuf"},
                                resp.SerializeToString(), store=True)
        if entry == "ok":
            return self._answer(req, 200, {"Content-Type": "application/x-protobuf"},
                                ExportTraceServiceResponse().SerializeToString(), store=True)
        if isinstance(entry, int):
            return self._answer(req, entry, {}, f"scripted {entry}".encode())
        status, hdrs, payload = entry
        return self._answer(req, status, dict(hdrs or {}),
                            payload if isinstance(payload, bytes) else str(payload).encode())

    def _answer(self, req: Request, status: int, headers: dict, data: bytes,
                store: bool = False) -> None:
        rx: OtlpReceiver = self.server.rx  # type: ignore[attr-defined]
        req.status = status
        req.action = req.action or str(status)
        if store:
            with rx.lock:
                for s in req.spans():
                    rx.spans.setdefault((s.trace_id, s.span_id), s)
        try:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self._headers_buffer.append(b"\r\n" + data)  # one write (no Nagle stall)
            self.flush_headers()
        except OSError:
            self.close_connection = True


class OtlpReceiver:
    def __init__(self, *, accept: tuple[str, ...] = (), timeout_seconds: float = 2.0) -> None:
        self.accept = accept
        self.timeout_seconds = timeout_seconds
        self.lock = threading.Lock()
        self.requests: list[Request] = []
        self.queue: deque = deque()
        self.spans: dict[tuple[bytes, bytes], object] = {}
        self.keep_requests = True
        self.stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    def __enter__(self) -> "OtlpReceiver":
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.rx = self  # type: ignore[attr-defined]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def script(self, *entries) -> None:
        with self.lock:
            self.queue.extend(entries)


def main() -> None:
    """``python tests/support/otlp_receiver.py``: serve until stdin closes; prints the URL first.
    ``GET /_stats`` answers {"requests": n, "spans": unique spans} (the benchmark's check)."""
    import json
    import sys

    def do_get(self):  # noqa: N802
        rx = self.server.rx
        with rx.lock:
            data = json.dumps({"requests": len(rx.requests), "spans": len(rx.spans)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self._headers_buffer.append(b"\r\n" + data)
        self.flush_headers()

    _Handler.do_GET = do_get
    with OtlpReceiver() as rx:
        rx.keep_requests = False
        print(rx.url, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
