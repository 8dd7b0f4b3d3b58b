"""``serve --client-ca``: reviews only from a client with the apiserver's certificate, probes still open.

The real server process, real TLS handshakes, client certificates issued by ``agent-guard
apiserver-client`` (the same tool an operator runs).
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import reviews, serving
from webhook import clientauth


def _issue(directory: Path, *extra: str) -> Path:
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "apiserver-client", "--out", str(directory), "--host", "*", *extra],
        capture_output=True,
        text=True,
        cwd=reviews.ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return directory


def _context(guard: serving.Guard, client: Path | None) -> ssl.SSLContext:
    context = guard.context()
    if client is not None:
        context.load_cert_chain(client / clientauth.CERT_FILE, client / clientauth.KEY_FILE)
    return context


def _delete(name: str) -> dict[str, Any]:
    request = reviews.admission_request(
        "DELETE", "configmaps", name=name, namespace="shop", old={"kind": "ConfigMap", "metadata": {}}
    )
    request["uid"] = str(uuid.uuid4())
    return reviews.review(request)


def _post(guard: serving.Guard, payload: dict[str, Any], client: Path | None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"{guard.url}/validate", data=reviews.body(payload), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, context=_context(guard, client), timeout=10) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clientauth")
    rules = root / "rules"
    rules.mkdir()
    text = (reviews.RULES / "policy.yaml").read_text()
    (rules / "policy.yaml").write_text(
        text.replace("limit: 20", "limit: 2").replace("window: 10m", "window: 1h")
    )
    return {
        "root": root,
        "rules": rules,
        "apiserver": _issue(root / "apiserver"),
        "stranger": _issue(root / "stranger"),  # a certificate from another CA
        "other-name": _issue(root / "other-name", "--name", "mallory"),
    }


@pytest.fixture(scope="module")
def guard(material: dict[str, Path]) -> Iterator[serving.Guard]:
    root = material["root"]
    client_ca = material["apiserver"] / clientauth.CA_FILE
    with serving.running(
        root, root / "certs", "--client-ca", str(client_ca), rules=material["rules"]
    ) as running:
        yield running


def test_probes_and_metrics_need_no_client_certificate(guard: serving.Guard) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        with urllib.request.urlopen(f"{guard.url}{path}", context=guard.context(), timeout=5) as answer:
            assert answer.status == 200


def test_review_without_client_certificate_is_refused_and_spends_nothing(
    guard: serving.Guard, material: dict[str, Path]
) -> None:
    for i in range(5):  # more than the budget: none of these may count
        status, body = _post(guard, _delete(f"forged-{i}"), None)
        assert status == 403
        assert "reviews are accepted only from the kube-apiserver" in body["error"]
    answers = [_post(guard, _delete(f"real-{i}"), material["apiserver"]) for i in range(3)]
    assert [status for status, _ in answers] == [200, 200, 200]
    assert [body["response"]["allowed"] for _, body in answers] == [True, True, False]
    assert answers[2][1]["response"]["status"]["message"].startswith("[delete-budget] ")
    with urllib.request.urlopen(f"{guard.url}/metrics", context=guard.context(), timeout=5) as answer:
        metrics = answer.read().decode()
    assert 'agent_guard_http_responses_total{code="403",endpoint="validate"} 5.0' in metrics
    assert "agent_guard_budget_charged_requests_total 2.0" in metrics


def test_certificate_from_another_ca_fails_the_handshake(
    guard: serving.Guard, material: dict[str, Path]
) -> None:
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        _post(guard, _delete("stranger"), material["stranger"])


def test_client_name_must_match_when_given(material: dict[str, Path]) -> None:
    root = material["root"]
    client_ca = material["other-name"] / clientauth.CA_FILE
    arguments = ("--client-ca", str(client_ca), "--client-name", "kube-apiserver")
    with serving.running(root, root / "certs", *arguments) as named:
        status, body = _post(named, reviews.namespace_delete(), material["other-name"])
    assert status == 403 and "'mallory' is not one of kube-apiserver" in body["error"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("--client-ca", "/nonexistent/ca.crt"), "cannot load the client CA /nonexistent/ca.crt"),
        (("--client-name", "kube-apiserver"), "--client-name needs --client-ca"),
        (("--kubeconfig", "/nonexistent"), "--kubeconfig is only used with --approvals"),
    ],
)
def test_bad_client_auth_arguments_exit_2(tmp_path: Path, arguments: tuple[str, ...], message: str) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "webhook",
            "serve",
            "--cert-dir",
            str(tmp_path),
            "--port",
            str(serving.free_port()),
            *arguments,
        ],
        capture_output=True,
        text=True,
        cwd=reviews.ROOT,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_apiserver_client_refuses_to_overwrite(material: dict[str, Path]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "apiserver-client", "--out", str(material["apiserver"])],
        capture_output=True,
        text=True,
        cwd=reviews.ROOT,
        check=False,
    )
    written = ", ".join(
        (clientauth.CA_FILE, clientauth.CERT_FILE, clientauth.KEY_FILE, *clientauth.CONFIG_FILES)
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        f"agent-guard apiserver-client: {material['apiserver']}: {written} already exist "
        "(use --force to replace)\n"
    )
