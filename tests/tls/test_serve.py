"""The real server over TLS: certificates created on first use, chain and hostname verified."""

from __future__ import annotations

import json
import socket
import ssl
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import reviews, serving
from webhook import server


def _post(guard: serving.Guard, payload: dict[str, object], context: ssl.SSLContext) -> dict[str, object]:
    request = urllib.request.Request(
        f"{guard.url}/validate", data=reviews.body(payload), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as answer:
        assert answer.status == 200
        result: dict[str, object] = json.load(answer)
        return result


@pytest.fixture(scope="module")
def guard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[serving.Guard]:
    workdir = tmp_path_factory.mktemp("tls")
    with serving.running(workdir, workdir / "certs") as running:
        yield running


def test_dev_certificates_created_on_first_use(guard: serving.Guard) -> None:
    for name in ("ca.crt", "tls.crt", "tls.key"):
        assert (guard.cert_dir / name).is_file()
    assert "generated development certificates" in guard.output()


def test_admission_round_trip_verifies_chain_and_hostname(guard: serving.Guard) -> None:
    context = guard.context()
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    payload = reviews.namespace_delete()
    response = _post(guard, payload, context)["response"]
    assert isinstance(response, dict)
    assert response["uid"] == payload["request"]["uid"] and response["allowed"] is False
    assert response["status"]["message"].startswith("[namespace-delete]")
    admin = _post(guard, reviews.namespace_delete(user=reviews.ADMIN), context)["response"]
    assert isinstance(admin, dict) and admin["allowed"] is True


def test_decision_is_logged_as_one_json_line(guard: serving.Guard) -> None:
    _post(guard, reviews.namespace_delete(name="logged"), guard.context())
    deadline = time.monotonic() + 5  # lines are written by the decision log's own thread
    while True:
        lines = [json.loads(line) for line in guard.output().splitlines() if line.startswith("{")]
        if any(entry["name"] == "logged" and entry["decision"] == "deny" for entry in lines):
            break
        assert time.monotonic() < deadline, "no decision line"
        time.sleep(0.02)


def test_untrusted_client_cannot_connect(guard: serving.Guard) -> None:
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(f"{guard.url}/healthz", context=ssl.create_default_context(), timeout=5)


def test_server_context_requires_tls_1_2(guard: serving.Guard) -> None:
    context = server.tls_context(guard.cert_dir / "tls.crt", guard.cert_dir / "tls.key")
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_1_2_and_1_3_clients_connect(guard: serving.Guard, version: ssl.TLSVersion) -> None:
    context = guard.context()
    context.minimum_version = context.maximum_version = version
    with urllib.request.urlopen(f"{guard.url}/healthz", context=context, timeout=5) as answer:
        assert answer.status == 200


def test_plain_http_is_not_served(guard: serving.Guard) -> None:
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://127.0.0.1:{guard.port}/healthz", timeout=5).read()


def test_dry_run_mode_flag(tmp_path: Path) -> None:
    with serving.running(tmp_path, tmp_path / "certs", "--mode", "dry-run") as guard:
        response = _post(guard, reviews.namespace_delete(), guard.context())["response"]
    assert isinstance(response, dict)
    assert response["allowed"] is True and response["warnings"][0].startswith("[namespace-delete] would deny")


def test_bad_policy_fails_at_start_with_a_clear_error(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "p.yaml").write_text(
        "apiVersion: agent-guard.io/v1alpha1\nkind: Policy\nagents: {groups: [a]}\nmood: x\n"
    )
    with (
        pytest.raises(RuntimeError, match="exited with 2") as caught,
        serving.running(tmp_path, tmp_path / "certs", rules=rules),
    ):
        pass
    assert f"{rules / 'p.yaml'}: mood: unknown field" in str(caught.value)
    assert "Traceback" not in str(caught.value)


def _raw_review(guard: serving.Guard, connection: ssl.SSLSocket, payload: dict[str, object]) -> bytes:
    body = reviews.body(payload)
    head = (
        f"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    connection.sendall(head.encode() + body)
    # One recv returns at most one TLS record: the whole answer must be in it (webhook.onewrite).
    return connection.recv(65536)


def test_answer_leaves_in_one_tls_record_and_the_connection_stays_open(guard: serving.Guard) -> None:
    with (
        socket.create_connection(("127.0.0.1", guard.port), timeout=10) as plain,
        guard.context().wrap_socket(plain, server_hostname="localhost") as connection,
    ):
        for name in ("first", "second"):  # the same kept-alive connection answers again
            payload = reviews.namespace_delete(name=name)
            answer = _raw_review(guard, connection, payload)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), answer
            assert b"\r\ndate:" not in head.lower() and b"\r\nserver:" not in head.lower()  # nothing unread
            length = int(
                next(
                    v
                    for k, _, v in (h.partition(b": ") for h in head.split(b"\r\n"))
                    if k == b"content-length"
                )
            )
            assert len(body) == length, f"head and body arrived apart: {answer!r}"
            assert json.loads(body)["response"]["uid"] == payload["request"]["uid"]
