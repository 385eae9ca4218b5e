"""The I/O of `spool ui`: read from SQLite, render with spool.ui.pages, serve on loopback.

``http.server.ThreadingHTTPServer`` on 127.0.0.1.  Every URL starts with a per-start
random token (``/<token>/...``); anything else gets 403, so another local user who finds
the port cannot read traces.  Pages only read (``db.read``).  Responses forbid caching,
referrers (the token is in the URL), framing and any resource from elsewhere.
"""
from __future__ import annotations

import hmac
import json
import secrets
import threading
from datetime import date, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, unquote, urlsplit

from sqlalchemy import Engine

from . import pages

PAGE_SIZE = 50
USAGE_DAYS = 30
_CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
        "img-src data:; form-action 'self'; base-uri 'self'; frame-ancestors 'none'")


class NotFound(Exception):
    pass


class Views:
    """Page name + query -> HTML, read from one engine (thread-safe: one connection per call)."""

    def __init__(self, engine: Engine, base: str, today: Callable[[], date] = date.today):
        self.engine, self.base, self.today = engine, base, today

    def sessions(self, q: dict[str, str]) -> str:
        from .. import db, queries, usage

        after = None
        if q.get("after"):
            try:
                at, row = q["after"].split(":", 1)
                after = (float(at), int(row))
            except ValueError:
                raise NotFound("a malformed 'after' cursor") from None
        since = until = None
        if q.get("date"):
            try:
                day = date.fromisoformat(q["date"])
            except ValueError:
                raise NotFound("a malformed date (use YYYY-MM-DD)") from None
            since = datetime.combine(day, datetime.min.time()).timestamp()
            until = since + 86400
        with db.read(self.engine) as conn:
            rows = queries.session_page(conn, PAGE_SIZE + 1, after=after,
                                        project=q.get("project") or None,
                                        state=q.get("state") or None, since=since, until=until)
            more = len(rows) > PAGE_SIZE
            rows = rows[:PAGE_SIZE]
            costs = usage.session_costs(conn, [r["session_id"] for r in rows])
        nxt = f"{rows[-1]['last_event_at']!r}:{rows[-1]['row']}" if more else None
        filters = {k: q.get(k, "") for k in ("project", "date", "state")}
        return pages.sessions_page(rows, costs, filters, nxt, base=self.base)

    def session(self, session_id: str) -> str:
        from .. import db, export, queries

        with db.read(self.engine) as conn:
            info = queries.session_info(conn, session_id)
            if info is None:
                raise NotFound(f"no session {session_id}")
            bodies = export.latest_traces(conn, session_id)
        return pages.session_page(info, bodies, base=self.base)

    def turn(self, trace_id: str) -> str:
        from .. import db, queries

        with db.read(self.engine) as conn:
            row = queries.get_trace(conn, trace_id)
        if row is None:
            raise NotFound(f"no trace {trace_id}")
        try:
            body = json.loads(row["body"])
        except ValueError:
            raise NotFound(f"trace {trace_id} has an unreadable body") from None
        return pages.turn_page(body, row["outbox"], base=self.base)

    def usage(self) -> str:
        from .. import db, usage

        since = self.today() - timedelta(days=USAGE_DAYS - 1)
        with db.read(self.engine) as conn:
            raw = conn.connection.driver_connection
            by_day = usage.report(raw, "day", since=since)
            by_model = usage.report(raw, "model", since=since)
        return pages.usage_page(by_day, by_model, since.isoformat(), base=self.base)

    def delivery(self) -> str:
        from .. import db, outbox, queries

        with db.read(self.engine) as conn:
            states = outbox.undelivered_by_state(conn)
            errors = queries.errors(conn, 30)
            history = queries.history(conn, 30)
        return pages.delivery_page(states, errors, history, base=self.base)

    def render(self, path: str, q: dict[str, str]) -> str:
        """The page at ``path`` (the part after the token, without leading '/')."""
        parts = [unquote(p) for p in path.split("/") if p]
        if not parts:
            return self.sessions(q)
        if len(parts) == 2 and parts[0] == "session":
            return self.session(parts[1])
        if len(parts) == 2 and parts[0] == "turn":
            return self.turn(parts[1])
        if parts == ["usage"]:
            return self.usage()
        if parts == ["delivery"]:
            return self.delivery()
        raise NotFound(f"no page {path}")


class _Handler(BaseHTTPRequestHandler):
    server: "UIServer"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - no access log (token)
        pass

    def _send(self, status: HTTPStatus, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", _CSP)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        token, _, rest = url.path.lstrip("/").partition("/")
        if not hmac.compare_digest(token.encode(), self.server.token.encode()):
            self._send(HTTPStatus.FORBIDDEN, pages.message_page(
                "Forbidden", "This page needs the URL `spool ui` printed.", base=None))
            return
        if not url.path.startswith(f"/{token}/"):  # /<token> -> /<token>/ so links resolve
            self.send_response(HTTPStatus.MOVED_PERMANENTLY)
            self.send_header("Location", f"/{token}/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            self._send(HTTPStatus.OK, self.server.views.render(rest, q))
        except NotFound as exc:
            self._send(HTTPStatus.NOT_FOUND, pages.message_page(
                "Not found", str(exc), base=self.server.base))

    do_HEAD = do_GET


class UIServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, engine: Engine, port: int = 0, token: str | None = None,
                 today: Callable[[], date] = date.today):
        self.token = token or secrets.token_urlsafe(24)
        self.base = f"/{self.token}/"
        self.views = Views(engine, self.base, today)
        super().__init__(("127.0.0.1", port), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{self.base}"

    def start_background(self) -> threading.Thread:
        """Serve on a daemon thread (tests, scripts); ``shutdown()`` stops it."""
        t = threading.Thread(target=self.serve_forever, name="spool-ui", daemon=True)
        t.start()
        return t
