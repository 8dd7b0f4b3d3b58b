"""``--workers N``: N processes serve one port; SIGTERM stops them all gracefully."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests import reviews, serving


def _children(pid: int) -> list[int]:
    found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in found]


def test_two_workers_share_the_port_and_stop_together(tmp_path: Path) -> None:
    with serving.running(tmp_path, tmp_path / "certs", "--workers", "2") as guard:
        workers = _children(guard.process.pid)
        assert len(workers) == 2
        context = guard.context()

        def deny(index: int) -> bool:
            request = urllib.request.Request(
                f"{guard.url}/validate", data=reviews.body(reviews.namespace_delete(f"ns-{index}"))
            )
            with urllib.request.urlopen(request, context=context, timeout=10) as answer:
                return json.load(answer)["response"]["allowed"] is False

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            assert all(pool.map(deny, range(200)))
        assert guard.stop() == 0
    assert not any(Path(f"/proc/{worker}").exists() for worker in workers)  # reaped by the parent
    lines = [json.loads(line) for line in guard.output().splitlines() if line.startswith("{")]
    assert {entry["name"] for entry in lines} >= {f"ns-{i}" for i in range(200)}
    assert "started 2 workers" in guard.output()


def test_bad_worker_count_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "webhook", "serve", "--workers", "0"],
        capture_output=True,
        text=True,
        check=False,
        cwd=reviews.ROOT,
    )
    assert done.returncode == 2 and "must be a positive integer" in done.stderr


def test_a_dead_worker_is_logged_and_replaced(tmp_path: Path) -> None:
    with serving.running(tmp_path, tmp_path / "certs", "--workers", "2", "--reload-interval", "0") as guard:
        first = _children(guard.process.pid)
        assert len(first) == 2
        os.kill(first[0], signal.SIGKILL)  # as the OOM killer would
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            now = _children(guard.process.pid)
            if len(now) == 2 and first[0] not in now:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"workers after the kill: {_children(guard.process.pid)}")
        replacement = (set(now) - set(first)).pop()
        serving.wait_ready(guard)
        context = guard.context()
        for index in range(20):  # both workers serve (the kernel spreads new connections)
            request = urllib.request.Request(
                f"{guard.url}/validate", data=reviews.body(reviews.namespace_delete(f"ns-{index}"))
            )
            with urllib.request.urlopen(request, context=context, timeout=10) as answer:
                assert json.load(answer)["response"]["allowed"] is False
        assert guard.stop() == 0  # the replaced worker's death is not the exit code of a clean stop
    output = guard.output()
    assert f"worker {first[0]} was killed by signal SIGKILL while serving; starting a replacement" in output
    assert f"replacement worker {replacement} started (2 running)" in output
