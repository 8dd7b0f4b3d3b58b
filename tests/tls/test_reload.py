"""Hot reload under the real server: policy and certificate change while requests keep flowing.

Files are updated the way the kubelet updates mounted ConfigMaps and Secrets (``tests.mounts``).
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests import mounts, reviews, serving
from webhook import certs

POLICY = (reviews.RULES / "policy.yaml").read_bytes()
OFF = POLICY.replace(b"namespace-delete: {}", b"namespace-delete: {mode: 'off'}")
BROKEN = POLICY.replace(b"namespace-delete: {}", b"namespace-delete: {mood: angry}")
TLS_FILES = (certs.CA_FILE, certs.CERT_FILE, certs.KEY_FILE)
FAST = ("--reload-interval", "0.2")


def _eventually(check: Callable[[], bool], timeout: float = 15, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout}s")


def _allowed(guard: serving.Guard, context: ssl.SSLContext | None = None) -> bool:
    request = urllib.request.Request(f"{guard.url}/validate", data=reviews.body(reviews.namespace_delete()))
    with urllib.request.urlopen(request, context=context or guard.context(), timeout=10) as answer:
        allowed: bool = json.load(answer)["response"]["allowed"]
        return allowed


def _get(guard: serving.Guard, path: str, context: ssl.SSLContext | None = None) -> str:
    with urllib.request.urlopen(
        f"{guard.url}{path}", context=context or guard.context(), timeout=10
    ) as answer:
        text: str = answer.read().decode()
        return text


def _sample(guard: serving.Guard, line_start: str, context: ssl.SSLContext | None = None) -> float:
    for line in _get(guard, "/metrics", context).splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_start} not in /metrics")


def _served_certificate(port: int, context: ssl.SSLContext) -> bytes:
    """The certificate a new connection is served (DER)."""
    with (
        socket.create_connection(("localhost", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        der = sock.getpeercert(binary_form=True)
        assert der is not None
        return der


def _der(cert_file: Path) -> bytes:
    return x509.load_pem_x509_certificate(cert_file.read_bytes()).public_bytes(serialization.Encoding.DER)


def test_policy_change_applies_without_restart_and_a_broken_one_is_refused(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    mounts.publish(rules, {"policy.yaml": POLICY})
    with serving.running(tmp_path, tmp_path / "certs", *FAST, rules=rules) as guard:
        pid = guard.process.pid
        assert _allowed(guard) is False

        mounts.publish(rules, {"policy.yaml": OFF})
        _eventually(lambda: _allowed(guard), what="the new policy (namespace-delete off)")
        assert _sample(guard, 'agent_guard_policy_reloads_total{result="ok"}') == 1

        mounts.publish(rules, {"policy.yaml": BROKEN})
        _eventually(
            lambda: _sample(guard, 'agent_guard_policy_reloads_total{result="failed"}') == 1,
            what="the refused reload",
        )
        assert _allowed(guard) is True, "the last good policy (off) must stay in force"
        problem = f"{rules / 'policy.yaml'}: guards.namespace-delete.mood: unknown field"
        assert problem in guard.output() and "last good policy stays in force" in guard.output()
        assert problem in json.loads(_get(guard, "/readyz"))["policyReloadError"]

        mounts.publish(rules, {"policy.yaml": POLICY})
        _eventually(lambda: not _allowed(guard), what="the original policy again")
        assert "policyReloadError" not in json.loads(_get(guard, "/readyz"))
        assert guard.process.pid == pid and guard.process.poll() is None


class Traffic:
    """Admission reviews in a loop, each on a new connection, counting failures. Bounded."""

    def __init__(self, guard: serving.Guard, context: ssl.SSLContext, limit: int = 2000) -> None:
        self.guard = guard
        self.context = context
        self.limit = limit
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set() and self.ok + len(self.failures) < self.limit:
            try:
                if _allowed(self.guard, self.context) is False:
                    self.ok += 1
                else:
                    self.failures.append("allowed")
            except Exception as exc:  # every failure is the test's business
                self.failures.append(repr(exc))

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.mark.parametrize("style", ["kubelet", "in-place"])
def test_rotated_certificate_is_served_to_new_connections_without_failures(
    tmp_path: Path, style: str
) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    certs.generate(old)
    certs.generate(new, days=30)
    served = tmp_path / "tls"
    if style == "kubelet":
        mounts.publish(served, mounts.contents(old, *TLS_FILES))
    else:
        served.mkdir()
        for name in TLS_FILES:
            (served / name).write_bytes((old / name).read_bytes())
    client = ssl.create_default_context(cafile=str(old / certs.CA_FILE))
    client.load_verify_locations(cafile=str(new / certs.CA_FILE))  # the caBundle would carry both

    with serving.running(tmp_path, served, *FAST) as guard:
        assert _served_certificate(guard.port, client) == _der(old / certs.CERT_FILE)
        kept = http.client.HTTPSConnection("localhost", guard.port, context=client, timeout=10)
        kept.request("GET", "/healthz")
        assert kept.getresponse().read()

        with Traffic(guard, client) as traffic:
            _eventually(lambda: traffic.ok >= 5, what="traffic before the rotation")
            if style == "kubelet":
                mounts.publish(served, mounts.contents(new, *TLS_FILES))
            else:  # like `agent-guard certs --force`: file by file, key before certificate
                for name in (certs.KEY_FILE, certs.CA_FILE, certs.CERT_FILE):
                    staged = served / f".{name}.tmp"
                    staged.write_bytes((new / name).read_bytes())
                    os.replace(staged, served / name)
            _eventually(
                lambda: _served_certificate(guard.port, client) == _der(new / certs.CERT_FILE),
                what="the new certificate on new connections",
            )
            rotated_at = traffic.ok
            _eventually(lambda: traffic.ok >= rotated_at + 5, what="traffic after the rotation")
        assert traffic.failures == [], traffic.failures[:5]

        kept.request("GET", "/healthz")  # a connection from before the rotation still works
        assert kept.getresponse().status == 200
        sock = kept.sock
        assert isinstance(sock, ssl.SSLSocket)
        assert sock.getpeercert(binary_form=True) == _der(old / certs.CERT_FILE)
        kept.close()

        assert _sample(guard, 'agent_guard_certificate_reloads_total{result="ok"}', client) >= 1
        left = _sample(guard, "agent_guard_certificate_expiry_seconds", client)
        assert 29 * 86400 < left <= 30 * 86400, "the gauge follows the certificate in use"
        assert "serving certificate reloaded" in guard.output()


def test_mismatched_certificate_is_refused_and_the_old_one_kept(tmp_path: Path) -> None:
    old, other = tmp_path / "old", tmp_path / "other"
    certs.generate(old)
    certs.generate(other)
    served = tmp_path / "tls"
    mounts.publish(served, mounts.contents(old, *TLS_FILES))
    with serving.running(tmp_path, served, *FAST) as guard:
        broken = mounts.contents(old, *TLS_FILES) | {certs.KEY_FILE: (other / certs.KEY_FILE).read_bytes()}
        mounts.publish(served, broken)
        _eventually(
            lambda: _sample(guard, 'agent_guard_certificate_reloads_total{result="failed"}') == 1,
            what="the refused certificate",
        )
        assert "certificate reload refused" in guard.output()
        assert _allowed(guard) is False  # still serving, with the old pair, on new connections
        assert _served_certificate(guard.port, guard.context()) == _der(old / certs.CERT_FILE)


def test_rotation_between_key_types_serves_the_new_certificate_to_every_client(tmp_path: Path) -> None:
    """ECDSA -> RSA -> ECDSA: one SSLContext holds a certificate per key type, so loading the RSA pair
    into the live context would leave ECDSA-capable clients on the old certificate. A client that
    offers both key types (the default) must get each new certificate, and so must one limited to
    the new key type."""
    pairs = {name: tmp_path / name for name in ("ecdsa-1", "rsa", "ecdsa-2")}
    for name, directory in pairs.items():
        certs.generate(directory, key_type="rsa" if name == "rsa" else "ecdsa")
    served = tmp_path / "tls"
    mounts.publish(served, mounts.contents(pairs["ecdsa-1"], *TLS_FILES))

    def client(*names: str, ciphers: str | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context()
        for name in names:
            context.load_verify_locations(cafile=str(pairs[name] / certs.CA_FILE))
        if ciphers:  # TLS 1.2 with only this signature algorithm family
            context.maximum_version = ssl.TLSVersion.TLSv1_2
            context.set_ciphers(ciphers)
        return context

    anyone = client(*pairs)
    with serving.running(tmp_path, served, *FAST) as guard:
        assert _served_certificate(guard.port, client("ecdsa-1")) == _der(pairs["ecdsa-1"] / certs.CERT_FILE)
        for step, name in enumerate(("rsa", "ecdsa-2"), start=1):
            mounts.publish(served, mounts.contents(pairs[name], *TLS_FILES))
            reloads = functools.partial(
                _sample, guard, 'agent_guard_certificate_reloads_total{result="ok"}', anyone
            )
            _eventually(lambda: reloads() >= step, what=f"the {name} certificate")  # noqa: B023
            expected = _der(pairs[name] / certs.CERT_FILE)
            assert _served_certificate(guard.port, client(name)) == expected
            family = "aRSA" if name == "rsa" else "aECDSA"
            assert _served_certificate(guard.port, client(name, ciphers=f"ECDHE+{family}")) == expected
            assert _allowed(guard, client(name)) is False
