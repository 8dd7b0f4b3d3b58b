"""Graceful shutdown of the real server: SIGTERM -> not ready -> listener closed -> requests finish -> 0."""

from __future__ import annotations

import json
import signal
import socket
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests import reviews, serving


def _connect(guard: serving.Guard) -> ssl.SSLSocket:
    raw = socket.create_connection(("localhost", guard.port), timeout=15)
    return guard.context().wrap_socket(raw, server_hostname="localhost")


def _read_response(sock: ssl.SSLSocket) -> tuple[str, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the middle of the body"
        body += chunk
    return status, headers, body


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_request_in_flight_at_sigterm_completes_and_exit_is_0(tmp_path: Path) -> None:
    with serving.running(
        tmp_path, tmp_path / "certs", "--shutdown-delay", "3", "--shutdown-timeout", "20"
    ) as guard:
        payload = reviews.namespace_delete(name="in-flight")
        body = reviews.body(payload)
        sock = _connect(guard)
        head = (
            f"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        sock.sendall(head + body[: len(body) // 2])  # the review is now in flight, half sent

        guard.process.send_signal(signal.SIGTERM)
        # During the delay the server still answers, but says it is not ready and asks to reconnect.
        deadline = time.monotonic() + 2.5
        while True:
            try:
                urllib.request.urlopen(f"{guard.url}/readyz", context=guard.context(), timeout=5)
            except urllib.error.HTTPError as exc:
                assert exc.code == 503 and exc.headers["connection"] == "close"
                break
            assert time.monotonic() < deadline, "/readyz did not turn red after SIGTERM"
            time.sleep(0.05)

        started = time.monotonic()
        while _listening(guard.port):  # after the delay the listener closes ...
            assert time.monotonic() - started < 10, "the listener never closed"
            time.sleep(0.05)
        assert guard.process.poll() is None  # ... but the process waits for the review in flight

        sock.sendall(body[len(body) // 2 :])
        status, headers, answer = _read_response(sock)
        sock.close()
        assert status == "HTTP/1.1 200 OK" and headers["connection"] == "close"
        response = json.loads(answer)["response"]
        assert response["uid"] == payload["request"]["uid"] and response["allowed"] is False

        assert guard.process.wait(15) == 0
    output = guard.output()
    assert "SIGTERM: not ready any more" in output
    assert "Traceback" not in output


def test_idle_keep_alive_connections_do_not_hold_up_the_exit(tmp_path: Path) -> None:
    with serving.running(tmp_path, tmp_path / "certs", "--shutdown-timeout", "20") as guard:
        idle = _connect(guard)
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        status, _, _ = _read_response(idle)
        assert status == "HTTP/1.1 200 OK"
        started = time.monotonic()
        guard.process.send_signal(signal.SIGTERM)
        assert idle.recv(1) == b"", "the server closes an idle keep-alive connection (TLS close_notify)"
        assert time.monotonic() - started < 3
        idle.close()
        assert guard.process.wait(15) == 0
        assert time.monotonic() - started < 5, "an idle keep-alive connection must be closed, not waited for"


def test_plain_stop_exits_0(tmp_path: Path) -> None:
    with serving.running(tmp_path, tmp_path / "certs") as guard:
        pass
    assert guard.process.returncode == 0


def test_request_still_in_flight_at_the_shutdown_timeout_gets_a_503_that_says_why(tmp_path: Path) -> None:
    with serving.running(
        tmp_path, tmp_path / "certs", "--shutdown-timeout", "1", "--read-timeout", "60"
    ) as guard:
        body = reviews.body(reviews.namespace_delete(name="too-slow"))
        sock = _connect(guard)
        head = f"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n\r\n"
        sock.sendall(head.encode() + body[:10])  # and the rest never comes
        time.sleep(0.2)
        guard.process.send_signal(signal.SIGTERM)
        status, headers, answer = _read_response(sock)
        sock.close()
        assert status == "HTTP/1.1 503 Service Unavailable"
        assert headers["content-type"] == "application/json" and headers["connection"] == "close"
        assert "shut down before this review was complete" in json.loads(answer)["error"]
        assert guard.process.wait(10) == 0
    assert "Traceback" not in guard.output()
