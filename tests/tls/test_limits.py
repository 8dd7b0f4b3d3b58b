"""Connection limits of the real server: one slow or hostile client must not hold the guard.

Each test runs ``agent-guard serve`` with a short ``--read-timeout`` so it takes seconds; the
production default (10 s) only changes the numbers.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests import reviews, serving
from webhook import server

READ_TIMEOUT = 1.0
FAST = ("--read-timeout", str(READ_TIMEOUT), "--reload-interval", "0")


def _tls(guard: serving.Guard) -> ssl.SSLSocket:
    raw = socket.create_connection(("localhost", guard.port), timeout=10)
    return guard.context().wrap_socket(raw, server_hostname="localhost")


def _closed_after(sock: socket.socket, limit: float) -> tuple[float, bytes]:
    """Seconds until the server closes ``sock`` (reading whatever it sends), at most ``limit``."""
    started = time.monotonic()
    sock.settimeout(limit)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except (ConnectionResetError, ssl.SSLError):
        pass
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for {limit}s")
    return time.monotonic() - started, received


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _healthy(guard: serving.Guard, context: ssl.SSLContext) -> bool:
    try:
        with urllib.request.urlopen(f"{guard.url}/healthz", context=context, timeout=2) as answer:
            ok: bool = answer.status == 200
            return ok
    except OSError:
        return False


def test_header_flood_is_cut_off_and_health_probes_keep_being_answered(tmp_path: Path) -> None:
    with serving.running(tmp_path, tmp_path / "certs", *FAST) as guard:
        context = guard.context()
        rss_before = _rss_kib(guard.process.pid)
        flood_error: list[BaseException] = []
        flood_seconds = 0.0

        def flood() -> None:
            nonlocal flood_seconds
            started = time.monotonic()
            with _tls(guard) as sock:
                sock.sendall(b"POST /validate HTTP/1.1\r\nHost: x\r\nX-Flood: ")
                try:
                    while time.monotonic() - started < 20:
                        sock.sendall(b"a" * 65536)
                except OSError as exc:  # the server cut the connection: expected
                    flood_error.append(exc)
            flood_seconds = time.monotonic() - started

        flooder = threading.Thread(target=flood, daemon=True)
        flooder.start()
        probes = answered = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            probes += 1
            answered += _healthy(guard, context)
        flooder.join(25)
        assert flood_error, "the server kept reading an endless request head for 20s"
        # 431 after 16 KiB, then at most the TLS close deadline (the read timeout) to stop sending.
        assert flood_seconds < READ_TIMEOUT + 2
        assert probes > 10 and answered == probes, f"{answered} of {probes} health probes answered"
        print(f"header flood cut after {flood_seconds:.2f}s; {answered}/{probes} health probes answered")
        assert _rss_kib(guard.process.pid) - rss_before < 20 * 1024


def test_long_head_gets_431_not_a_read_of_everything(tmp_path: Path) -> None:
    with serving.running(tmp_path, tmp_path / "certs", *FAST) as guard, _tls(guard) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (server.MAX_HEAD_BYTES + 1))
        _, answer = _closed_after(sock, 5)
        assert answer.startswith(b"HTTP/1.1 431 ")


def test_connection_that_never_handshakes_is_closed(tmp_path: Path) -> None:
    with (
        serving.running(tmp_path, tmp_path / "certs", *FAST) as guard,
        socket.create_connection(("127.0.0.1", guard.port)) as raw,
    ):
        seconds, _ = _closed_after(raw, READ_TIMEOUT + 5)
        assert seconds < READ_TIMEOUT + 2


@pytest.mark.parametrize(
    "partial",
    [
        b"",  # a TLS connection that never sends a request
        b"POST /validate HTTP/1.1\r\nHost: x\r\n",  # a half-sent head
        b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{",  # a stalled body
    ],
    ids=["idle", "half-head", "stalled-body"],
)
def test_slow_or_idle_request_is_closed_at_the_read_deadline(tmp_path: Path, partial: bytes) -> None:
    with serving.running(tmp_path, tmp_path / "certs", *FAST) as guard, _tls(guard) as sock:
        sock.sendall(partial)
        seconds, _ = _closed_after(sock, READ_TIMEOUT + 5)
        print(f"closed after {seconds:.2f}s (read timeout {READ_TIMEOUT}s)")
        assert READ_TIMEOUT - 0.2 < seconds < READ_TIMEOUT + 2


def test_body_trickled_slower_than_the_deadline_is_cut_off(tmp_path: Path) -> None:
    body = reviews.body(reviews.namespace_delete())
    with serving.running(tmp_path, tmp_path / "certs", *FAST) as guard, _tls(guard) as sock:
        sock.sendall(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
        started = time.monotonic()
        with pytest.raises(OSError):
            for byte in body:  # 20 B/s: each byte keeps the connection "active"
                sock.sendall(bytes([byte]))
                time.sleep(0.05)
                if time.monotonic() - started > READ_TIMEOUT + 5:
                    pytest.fail("the server still reads a body trickled at 20 B/s")
            pytest.fail("the whole body got through")
        assert time.monotonic() - started < READ_TIMEOUT + 2


def test_keep_alive_connection_serves_requests_and_the_deadline_does_not_cut_it(tmp_path: Path) -> None:
    """The deadline is per request: a kept-alive connection idle between requests stays open."""
    body = reviews.body(reviews.namespace_delete())
    with serving.running(tmp_path, tmp_path / "certs", *FAST) as guard:
        connection = http.client.HTTPSConnection("localhost", guard.port, context=guard.context(), timeout=5)
        for _ in range(3):
            connection.request("POST", "/validate", body=body)
            answer = connection.getresponse()
            assert answer.status == 200 and b'"allowed":false' in answer.read()
            time.sleep(READ_TIMEOUT * 1.5)
        connection.close()


def test_connections_beyond_the_cap_are_closed(tmp_path: Path) -> None:
    with serving.running(tmp_path, tmp_path / "certs", *FAST, "--max-connections", "4") as guard:
        held = [_tls(guard) for _ in range(4)]
        try:
            extra = _tls(guard)
            _, answer = _closed_after(extra, 3)
            assert answer == b""
            extra.close()
        finally:
            for sock in held:
                sock.close()
        time.sleep(0.2)
        assert _healthy(guard, guard.context())
