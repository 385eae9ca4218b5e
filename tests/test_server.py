"""Server mode's HTTP ingest: token required, size capped, same path as the hook."""
from __future__ import annotations

import http.client
import json
import sqlite3

import pytest

from spool import db, ingest, paths
from spool.server import INGEST_PATH, MAX_BODY, IngestServer

from support.recorded import fixture_payloads
from support.rows import db_rows

RAW = "SELECT payload, source, cwd FROM raw_events"


@pytest.fixture
def server(spool_home):
    db.open_db().dispose()
    srv = IngestServer(token="t0ken-for-tests").start()
    yield srv
    srv.stop()


def _post(srv, body: bytes, headers: dict) -> tuple[int, dict]:
    host, port = srv.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("POST", INGEST_PATH, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def test_requests_without_the_token_are_rejected(server):
    payload = fixture_payloads()[1][1]
    assert _post(server, payload, {})[0] == 401
    assert _post(server, payload, {"Authorization": "Bearer wrong"})[0] == 401
    assert _post(server, payload, {"Authorization": "t0ken-for-tests"})[0] == 401
    assert db_rows(RAW) == []


def test_an_event_is_stored_like_the_hook_stores_it(server):
    payload = fixture_payloads()[1][1]
    status, body = _post(server, payload, {"Authorization": "Bearer t0ken-for-tests"})
    assert (status, body) == (202, {"stored": "db"})
    assert db_rows(RAW) == [(payload, "http", json.loads(payload)["cwd"])]
    engine = db.open_db()
    ingest.ingest_all(engine)
    engine.dispose()
    conn = sqlite3.connect(paths.db_path())
    assert conn.execute("SELECT event, status FROM raw_events").fetchall() == [("UserPromptSubmit", "ok")]


def test_bodies_over_the_cap_are_refused_unread(server):
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.putrequest("POST", INGEST_PATH)
    conn.putheader("Authorization", "Bearer t0ken-for-tests")
    conn.putheader("Content-Length", str(MAX_BODY + 1))
    conn.endheaders()
    conn.send(b"{" * 1024)  # a start only: the server must answer without waiting for the rest
    resp = conn.getresponse()
    assert resp.status == 413
    conn.close()
    assert db_rows(RAW) == []


def test_health_needs_no_token_and_says_nothing_secret(server):
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", "/health")
    resp = conn.getresponse()
    body = resp.read()
    assert resp.status == 200 and json.loads(body) == {"ok": True, "service": "spool"}
    assert b"t0ken" not in body


def test_a_body_cut_short_is_not_stored_as_an_event(server):
    import socket

    host, port = server.server_address[:2]
    sock = socket.create_connection((host, port), timeout=10)
    sock.sendall(b"POST /hooks/codex HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0ken-for-tests\r\n"
                 b"Content-Length: 500\r\n\r\n{\"session_id\": \"s\"")
    sock.shutdown(socket.SHUT_WR)  # the client goes away mid-body
    answer = sock.recv(4096)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 400")
    assert db_rows(RAW) == []
