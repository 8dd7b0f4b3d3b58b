"""The decision log under the real server: a stalled or broken stdout never stops or fails a review."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests import reviews, serving
from webhook import decisionlog

# More lines than the writer's queue and a pipe's 64 KiB buffer hold together.
REVIEWS = decisionlog.Writer.CAPACITY + 2000


def _deny(guard: serving.Guard, index: int) -> bool:
    request = urllib.request.Request(
        f"{guard.url}/validate", data=reviews.body(reviews.namespace_delete(f"ns-{index}"))
    )
    with urllib.request.urlopen(request, context=guard.context(), timeout=5) as answer:
        denied: bool = answer.status == 200 and json.load(answer)["response"]["allowed"] is False
        return denied


def _get(guard: serving.Guard, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"{guard.url}{path}", context=guard.context(), timeout=5) as answer:
        return answer.status, answer.read().decode()


def _eventually(guard: serving.Guard, path: str, text: str) -> tuple[int, str]:
    """GET ``path`` until its body mentions ``text`` (the writer thread reports a failure when it
    writes, a moment after the review was answered)."""
    deadline = time.monotonic() + 5
    while True:
        status, body = _get(guard, path)
        if text in body or time.monotonic() > deadline:
            return status, body
        time.sleep(0.02)


def _sample(guard: serving.Guard, name: str) -> float:
    for line in _get(guard, "/metrics")[1].splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def _answer_all(guard: serving.Guard, clients: int = 8) -> int:
    """Send REVIEWS reviews over ``clients`` kept-alive connections; how many were answered with a deny."""

    def client(first: int) -> int:
        connection = http.client.HTTPSConnection("localhost", guard.port, context=guard.context(), timeout=5)
        denied = 0
        for index in range(first, REVIEWS, clients):
            connection.request(
                "POST", "/validate", body=reviews.body(reviews.namespace_delete(f"ns-{index}"))
            )
            answer = connection.getresponse()
            denied += answer.status == 200 and json.load(answer)["response"]["allowed"] is False
        connection.close()
        return denied

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        return sum(pool.map(client, range(clients)))


def test_reviews_are_answered_while_the_log_reader_is_stalled(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    try:
        with serving.running(tmp_path, tmp_path / "certs", stdout=write_end) as guard:
            os.close(write_end)
            write_end = -1
            started = time.monotonic()
            answered = _answer_all(guard)  # nobody reads the pipe meanwhile
            seconds = time.monotonic() - started
            assert answered == REVIEWS, f"{answered} of {REVIEWS} reviews answered"
            assert _get(guard, "/healthz")[0] == 200
            dropped = _sample(guard, 'agent_guard_decision_log_dropped_lines_total{reason="queue-full"}')
            assert dropped > 0
            print(
                f"{answered} reviews in {seconds:.1f}s with the log reader stalled, "
                f"{dropped:.0f} lines dropped"
            )
            # The reader comes back: lines flow again, and the drop count says how many were lost.
            os.set_blocking(read_end, False)
            written = b""
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and written.count(b"\n") < REVIEWS - dropped:
                try:
                    written += os.read(read_end, 1 << 20)
                except BlockingIOError:
                    time.sleep(0.05)
            assert written.count(b"\n") == REVIEWS - dropped
            assert _deny(guard, REVIEWS)
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def test_full_disk_keeps_reviews_answered_and_shows_in_readiness(tmp_path: Path) -> None:
    with (
        Path("/dev/full").open("wb") as full,
        serving.running(tmp_path, tmp_path / "certs", stdout=full) as guard,
    ):
        assert sum(_deny(guard, i) for i in range(50)) == 50
        status, body = _eventually(guard, "/readyz", "decisionLogError")
        assert status == 200 and "No space left on device" in json.loads(body)["decisionLogError"]
        assert _sample(guard, "agent_guard_decision_log_failing") == 1
        assert _sample(guard, 'agent_guard_decision_log_dropped_lines_total{reason="write-error"}') == 50
    assert "Traceback" not in guard.output()


def test_broken_pipe_keeps_reviews_answered(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the log reader is gone
    try:
        with serving.running(tmp_path, tmp_path / "certs", stdout=write_end) as guard:
            assert sum(_deny(guard, i) for i in range(20)) == 20
            assert (
                "BrokenPipeError"
                in json.loads(_eventually(guard, "/readyz", "decisionLogError")[1])["decisionLogError"]
            )
    finally:
        os.close(write_end)


def test_start_without_stdout_is_a_clear_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "webhook",
            "serve",
            "--cert-dir",
            str(tmp_path / "certs"),
            "--port",
            str(serving.free_port()),
        ],
        stdout=None,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
        cwd=reviews.ROOT,
        timeout=60,
        preexec_fn=lambda: os.close(1),  # the child starts with stdout closed
    )
    assert done.returncode == 2, done.stderr
    assert "stdout, which is closed" in done.stderr
    assert "Traceback" not in done.stderr
