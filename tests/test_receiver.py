"""The embedded Infinium-compatible receiver (spool/demo/receiver.py), over real loopback HTTP."""
from __future__ import annotations

import socket

import httpx
import pytest

from spool.demo.receiver import Receiver


def post(rx, key="k1", *, agent="A", secret="x" * 8, timeout=5.0):
    return httpx.post(f"{rx.url}/agents/{agent}/trace", json={"name": key}, timeout=timeout,
                      headers={"Idempotency-Key": key, "x-agent-id": agent, "x-agent-key": secret})


def test_default_answer_records_request():
    with Receiver() as rx:
        assert rx.url.startswith("http://127.0.0.1:")
        r = post(rx, "k1")
        assert r.status_code == 200 and r.json() == {"traceId": "tr-1"}
        (req,) = rx.requests
        assert req.key == "k1" and req.agent_id == "A" and req.json() == {"name": "k1"}
        assert req.headers["x-agent-key"] == "x" * 8 and req.status == 200


def test_script_in_order_then_default():
    with Receiver() as rx:
        rx.script(500, (429, {"Retry-After": "2"}, {"error": "slow down"}), (201, {}, b"raw"))
        a, b, c, d = (post(rx, "k") for _ in range(4))
        assert [a.status_code, b.status_code, c.status_code, d.status_code] == [500, 429, 201, 200]
        assert b.headers["Retry-After"] == "2" and b.json() == {"error": "slow down"}
        assert c.content == b"raw"
        assert [r.status for r in rx.requests] == [500, 429, 201, 200]
        assert rx.unique_keys() == {"k"} and rx.accepted_keys() == {"k"}
        assert len(rx.requests_for("k")) == 4


def test_reset_and_timeout_entries():
    with Receiver(timeout_seconds=1.0) as rx:
        rx.script("reset", "timeout")
        with pytest.raises(httpx.TransportError):
            post(rx, "r")
        with pytest.raises(httpx.TimeoutException):
            post(rx, "t", timeout=0.2)
        assert [r.action for r in rx.requests] == ["reset", "timeout"]
        assert rx.requests[0].status is None
        assert post(rx, "ok").status_code == 200
        assert rx.accepted_keys() == {"ok"} and rx.unique_keys() == {"r", "t", "ok"}


def test_secret_check_and_unknown_path():
    with Receiver(secret="right-secret") as rx:
        assert post(rx, secret="wrong-secret").status_code == 401
        assert post(rx, secret="right-secret").status_code == 200
        assert httpx.post(f"{rx.url}/nope", content=b"{}").status_code == 404


def test_stop_closes_the_port_and_bad_script_rejected():
    rx = Receiver().start()
    port = int(rx.url.rsplit(":", 1)[1])
    rx.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    with pytest.raises(RuntimeError):
        rx.url
    with pytest.raises(ValueError):
        rx.script("explode")


def test_module_entry_point_serves_until_stdin_closes():
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "spool.demo.receiver"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert httpx.post(f"{url}/agents/A/trace", content=b"{}",
                          headers={"Idempotency-Key": "k"}).json() == {"traceId": "tr-1"}
        assert httpx.get(f"{url}/_stats").json() == {"requests": 1, "unique_keys": 1,
                                                     "accepted_keys": 1}
    finally:
        proc.stdin.close()
        assert proc.wait(10) == 0
        proc.stdout.close()


def test_a_body_cut_short_is_counted_not_recorded():
    # A sender killed between its headers and its body (the crash tests SIGKILL workers
    # mid-request): no server acts on such a request, so it must not look like one.
    with Receiver() as rx:
        host, port = rx.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b"POST /agents/A/trace HTTP/1.1\r\nHost: x\r\nIdempotency-Key: k\r\n"
                      b"Content-Length: 100\r\n\r\n{\"name\"")
            s.shutdown(socket.SHUT_WR)
            assert s.recv(100) == b""  # closed without an answer
        assert post(rx, "k2").status_code == 200
        assert [r.key for r in rx.requests] == ["k2"] and rx.incomplete == 1
