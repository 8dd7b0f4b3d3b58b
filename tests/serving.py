"""Run the real ``agent-guard serve`` as a process, for TLS, end-to-end and benchmark tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tests import reviews


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Guard:
    process: subprocess.Popen[bytes]
    port: int
    cert_dir: Path
    log: Path

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert_dir / "ca.crt"))

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def wait_ready(guard: Guard, timeout: float = 30, path: str = "/readyz") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if guard.process.poll() is not None:
            raise RuntimeError(f"agent-guard serve exited with {guard.process.returncode}:\n{guard.output()}")
        if not (guard.cert_dir / "ca.crt").exists():  # the server may be creating dev certificates
            time.sleep(0.1)
            continue
        try:
            with urllib.request.urlopen(f"{guard.url}{path}", context=guard.context(), timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, ssl.SSLError, TimeoutError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"agent-guard serve: no 200 from {path} after {timeout}s:\n{guard.output()}")


@contextlib.contextmanager
def running(
    workdir: Path,
    cert_dir: Path,
    *extra: str,
    rules: Path = reviews.RULES,
    port: int | None = None,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    ready: bool = True,
    stdout: int | IO[bytes] | None = None,
) -> Iterator[Guard]:
    """Start ``agent-guard serve`` on 127.0.0.1 and an ephemeral port; stop it on exit.

    Returns once ``/readyz`` answers 200, or with ``ready=False`` once ``/healthz`` does (a guard whose
    RBAC view cannot sync serves, fail-closed for agents, but never turns ready).

    The output goes to ``log`` (default ``<workdir>/agent-guard-<port>.log``, overwritten): a caller
    that restarts a guard on the same port names each run's log. ``stdout`` sends the decision
    lines elsewhere (a pipe, /dev/full); the log then holds the diagnostics only.
    """
    port = port or free_port()
    log = log or workdir / f"agent-guard-{port}.log"
    command: Sequence[str] = [
        sys.executable,
        "-m",
        "webhook",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--cert-dir",
        str(cert_dir),
        "--rules",
        str(rules),
        *extra,
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command,
            stdout=sink if stdout is None else stdout,
            stderr=subprocess.STDOUT if stdout is None else sink,
            cwd=reviews.ROOT,
            env={**os.environ, **(env or {})},
        )
    guard = Guard(process, port, cert_dir, log)
    try:
        wait_ready(guard, path="/readyz" if ready else "/healthz")
        yield guard
    finally:
        guard.stop()
