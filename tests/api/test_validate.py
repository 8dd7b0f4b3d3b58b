"""The AdmissionReview contract through the real FastAPI app (TestClient, no network)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import fastapi.testclient
import pytest

from tests import reviews
from webhook import app, engine, onewrite, policy


@pytest.fixture
def decisions() -> list[dict[str, Any]]:
    return []


def _client(
    judge: engine.Engine, decisions: list[dict[str, Any]], **kwargs: Any
) -> fastapi.testclient.TestClient:
    return fastapi.testclient.TestClient(
        app.create_app(app.State(judge, **kwargs), on_decision=decisions.append)
    )


@pytest.fixture
def client(
    shipped_engine: engine.Engine, decisions: list[dict[str, Any]]
) -> Iterator[fastapi.testclient.TestClient]:
    with _client(shipped_engine, decisions) as c:
        yield c


def test_agent_namespace_delete_is_denied(
    client: fastapi.testclient.TestClient, decisions: list[Any]
) -> None:
    payload = reviews.namespace_delete()
    answer = client.post("/validate", json=payload)
    assert answer.status_code == 200
    body = answer.json()
    assert body["apiVersion"] == "admission.k8s.io/v1" and body["kind"] == "AdmissionReview"
    response = body["response"]
    assert response["uid"] == payload["request"]["uid"]
    assert response["allowed"] is False
    assert response["status"]["code"] == 403 and response["status"]["reason"] == "Forbidden"
    assert response["status"]["message"].startswith('[namespace-delete] deleting namespace "prod"')
    assert response["auditAnnotations"] == {"decision": "deny", "guards": "namespace-delete"}
    [entry] = decisions
    assert entry["uid"] == payload["request"]["uid"] and entry["decision"] == "deny"
    assert entry["user"] == reviews.AGENT["username"] and entry["guards"] == ["namespace-delete"]
    assert {"time", "operation", "resource", "namespace", "name", "mode", "allowed"} <= entry.keys()


def test_admin_is_allowed_untouched(client: fastapi.testclient.TestClient, decisions: list[Any]) -> None:
    response = client.post("/validate", json=reviews.namespace_delete(user=reviews.ADMIN)).json()["response"]
    assert response["allowed"] is True
    assert "status" not in response and "warnings" not in response and "auditAnnotations" not in response
    assert decisions[0]["agent"] is False and decisions[0]["decision"] == "allow"


def test_benign_agent_request_is_allowed(client: fastapi.testclient.TestClient) -> None:
    request = reviews.admission_request("CREATE", "configmaps", namespace="a", obj={"kind": "ConfigMap"})
    response = client.post("/validate", json=reviews.review(request)).json()["response"]
    assert response["allowed"] is True
    assert response["auditAnnotations"] == {"decision": "allow", "guards": ""}


def test_dry_run_allows_with_warning_and_annotation(
    shipped_policy: policy.Policy, decisions: list[dict[str, Any]]
) -> None:
    with _client(engine.Engine(shipped_policy.with_mode("dry-run")), decisions) as client:
        response = client.post("/validate", json=reviews.namespace_delete()).json()["response"]
    assert response["allowed"] is True
    [warning] = response["warnings"]
    assert warning.startswith("[namespace-delete] would deny: ") and len(warning) <= 120
    assert response["auditAnnotations"] == {"decision": "would-deny", "guards": "namespace-delete"}
    assert decisions[0]["mode"] == "dry-run" and decisions[0]["decision"] == "would-deny"


def test_dry_run_request_field_is_honoured_and_logged(
    client: fastapi.testclient.TestClient, decisions: list[Any]
) -> None:
    payload = reviews.namespace_delete()
    payload["request"]["dryRun"] = True
    assert client.post("/validate", json=payload).json()["response"]["allowed"] is False
    assert decisions[0]["dryRun"] is True


def _without(path: str) -> dict[str, Any]:
    payload = reviews.namespace_delete()
    *parents, last = path.split(".")
    target = payload
    for part in parents:
        target = target[part]
    del target[last]
    return payload


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "empty body"),
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "(body)"),
        (
            json.dumps({**reviews.namespace_delete(), "apiVersion": "admission.k8s.io/v1beta1"}).encode(),
            "apiVersion",
        ),
        (json.dumps({**reviews.namespace_delete(), "kind": "Pod"}).encode(), "kind"),
        (json.dumps(_without("request")).encode(), "request: Field required"),
        (json.dumps(_without("request.uid")).encode(), "request.uid: Field required"),
        (json.dumps(_without("request.userInfo")).encode(), "request.userInfo"),
        (json.dumps(_without("request.resource")).encode(), "request.resource"),
        (json.dumps({**_without("request.operation")}).encode(), "request.operation"),
        (
            reviews.body(reviews.review({**reviews.namespace_delete()["request"], "operation": "PATCH"})),
            "operation",
        ),
        (
            reviews.body(reviews.review({**reviews.namespace_delete()["request"], "object": [1]})),
            "request.object",
        ),
        (reviews.body(reviews.review({**reviews.namespace_delete()["request"], "uid": ""})), "request.uid"),
    ],
)
def test_malformed_review_is_400_with_a_named_problem(
    client: fastapi.testclient.TestClient, content: bytes, needle: str
) -> None:
    answer = client.post("/validate", content=content, headers={"content-type": "application/json"})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error.startswith("malformed AdmissionReview: ") and needle in error, error
    assert client.post("/validate", json=reviews.namespace_delete()).status_code == 200  # still serving


def test_oversized_body_is_413_by_header_and_by_stream(
    shipped_engine: engine.Engine, decisions: list[dict[str, Any]]
) -> None:
    with _client(shipped_engine, decisions, max_body=1024) as client:
        big = b"x" * 2048
        answer = client.post("/validate", content=big)
        assert answer.status_code == 413 and "exceeds the limit of 1024 bytes" in answer.json()["error"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: must stop while reading
            yield from (b"y" * 512 for _ in range(4))

        streamed = client.post("/validate", content=chunks())
        assert streamed.status_code == 413
        assert client.post("/validate", json=reviews.namespace_delete()).status_code == 200


def test_engine_failure_fails_closed(shipped_engine: engine.Engine, decisions: list[dict[str, Any]]) -> None:
    class Broken(engine.Engine):
        def admit(self, request: Any) -> engine.Verdict:
            raise RuntimeError("boom")

    with _client(Broken(shipped_engine.policy), decisions) as client:
        response = client.post("/validate", json=reviews.namespace_delete()).json()["response"]
    assert response["allowed"] is False and response["status"]["message"].startswith("[internal-error]")
    assert "Traceback" not in response["status"]["message"]
    assert response["auditAnnotations"] == {"decision": "deny", "guards": "internal-error"}
    [entry] = decisions  # a fail-closed denial is logged like any other decision
    assert entry["decision"] == "deny" and entry["guards"] == ["internal-error"]


def test_health_and_readiness(client: fastapi.testclient.TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ok" and ready["policy"][0].endswith("rules/policy.yaml")
    wrong_method = client.get("/validate")
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert wrong_method.json()["error"] == "use POST with a JSON AdmissionReview body"


def test_the_decision_is_recorded_after_the_answer_is_written(shipped_engine: engine.Engine) -> None:
    """The apiserver waits on the answer only: behind webhook.onewrite the app hands its bookkeeping
    to the connection's after-flush hook, so the metrics and the decision line come after the write."""
    events: list[str] = []
    pending: list[Callable[[], None]] = []
    state = app.State(shipped_engine)
    guard = app.create_app(state, on_decision=lambda entry: events.append(f"decision {entry['decision']}"))
    body = reviews.body(reviews.namespace_delete())
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop()

    async def send(message: app.Message) -> None:
        events.append(message["type"])

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/validate",
        "headers": [(b"content-length", b"%d" % len(body))],
        "extensions": {onewrite.SCOPE_KEY: pending.append},
    }
    asyncio.run(guard(scope, receive, send))
    assert events == ["http.response.start", "http.response.body"] and len(pending) == 1
    assert "agent_guard_reviews_total{" not in state.metrics.exposition().decode()
    pending[0]()  # what webhook.onewrite runs once the answer is written
    assert events[-1] == "decision deny"
    assert "agent_guard_reviews_total{" in state.metrics.exposition().decode()
