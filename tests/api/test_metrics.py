"""``/metrics`` through the real app: counters move with reviews, buckets are the documented ones."""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Iterator
from typing import Any

import fastapi.testclient
import pytest
from prometheus_client import parser

from tests import reviews
from webhook import app, approvals, engine, metrics, policy

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: fastapi.testclient.TestClient) -> Samples:
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    found: Samples = {}
    for family in parser.text_string_to_metric_families(answer.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def state(shipped_engine: engine.Engine) -> app.State:
    return app.State(shipped_engine)


@pytest.fixture
def client(state: app.State) -> Iterator[fastapi.testclient.TestClient]:
    with fastapi.testclient.TestClient(app.create_app(state, on_decision=lambda _: None)) as c:
        yield c


def _validate(client: fastapi.testclient.TestClient, payload: dict[str, Any]) -> dict[str, Any]:
    answer = client.post("/validate", content=reviews.body(payload))
    assert answer.status_code == 200
    response: dict[str, Any] = answer.json()["response"]
    return response


def test_counters_move_with_reviews(client: fastapi.testclient.TestClient) -> None:
    before = scrape(client)
    assert not _validate(client, reviews.namespace_delete())["allowed"]
    assert _validate(client, reviews.namespace_delete(user=reviews.ADMIN))["allowed"]
    assert client.post("/validate", content=b"{not json").status_code == 400
    after = scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("agent_guard_reviews_total", endpoint="validate", decision="deny", mode="enforce") == 1
    assert moved("agent_guard_reviews_total", endpoint="validate", decision="allow", mode="enforce") == 1
    assert (
        moved(
            "agent_guard_guard_decisions_total",
            endpoint="validate",
            guard="namespace-delete",
            decision="deny",
            mode="enforce",
        )
        == 1
    )
    assert moved("agent_guard_http_responses_total", endpoint="validate", code="200") == 2
    assert moved("agent_guard_http_responses_total", endpoint="validate", code="400") == 1
    assert moved("agent_guard_review_duration_seconds_count", endpoint="validate") == 3
    assert moved("agent_guard_review_duration_seconds_sum", endpoint="validate") > 0
    assert moved("agent_guard_internal_errors_total", endpoint="validate") == 0


def test_health_and_scrapes_are_not_counted_as_reviews(client: fastapi.testclient.TestClient) -> None:
    client.get("/healthz")
    client.get("/readyz")
    samples = scrape(client)
    assert value(samples, "agent_guard_review_duration_seconds_count", endpoint="validate") == 0
    assert not any(name == "agent_guard_http_responses_total" for name, _ in samples)


def test_dry_run_counts_would_deny(shipped_policy: policy.Policy) -> None:
    state = app.State(engine.Engine(shipped_policy.with_mode("dry-run")))
    with fastapi.testclient.TestClient(app.create_app(state, on_decision=lambda _: None)) as client:
        assert _validate(client, reviews.namespace_delete())["allowed"]
        samples = scrape(client)
    labels = {"endpoint": "validate", "decision": "would-deny", "mode": "dry-run"}
    assert value(samples, "agent_guard_reviews_total", **labels) == 1
    assert value(samples, "agent_guard_guard_decisions_total", guard="namespace-delete", **labels) == 1


def test_engine_crash_is_counted_as_a_fail_closed_denial(shipped_engine: engine.Engine) -> None:
    class Broken(engine.Engine):
        def admit(self, request: Any) -> engine.Verdict:
            raise RuntimeError("boom")

    state = app.State(Broken(shipped_engine.policy))
    with fastapi.testclient.TestClient(app.create_app(state, on_decision=lambda _: None)) as client:
        assert not _validate(client, reviews.namespace_delete())["allowed"]
        samples = scrape(client)
    assert value(samples, "agent_guard_internal_errors_total", endpoint="validate") == 1
    assert (
        value(samples, "agent_guard_reviews_total", endpoint="validate", decision="deny", mode="enforce") == 1
    )


def test_latency_buckets_line_up_with_the_apiserver(client: fastapi.testclient.TestClient) -> None:
    _validate(client, reviews.namespace_delete())
    bounds = [
        float(dict(labels)["le"])
        for name, labels in scrape(client)
        if name == "agent_guard_review_duration_seconds_bucket" and dict(labels)["endpoint"] == "validate"
    ]
    assert bounds == [*metrics.LATENCY_BUCKETS, math.inf]
    # k8s.io/apiserver v0.34: pkg/admission/metrics (webhook_admission_duration_seconds) and
    # plugin/pkg/authorizer/webhook/metrics (webhook_duration_seconds, Prometheus' default buckets)
    assert {0.005, 0.025, 0.1, 0.5, 1.0, 2.5, 10.0, 25.0} <= set(bounds)
    assert {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0} <= set(bounds)
    assert bounds[0] == 0.001


def test_reload_and_certificate_metrics_are_exported(
    state: app.State, client: fastapi.testclient.TestClient
) -> None:
    samples = scrape(client)
    for result in ("ok", "failed"):
        assert value(samples, "agent_guard_policy_reloads_total", result=result) == 0
        assert value(samples, "agent_guard_certificate_reloads_total", result=result) == 0
    assert math.isnan(value(samples, "agent_guard_certificate_expiry_seconds"))
    state.metrics.certificate_in_use(datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=30))
    left = value(scrape(client), "agent_guard_certificate_expiry_seconds")
    assert 30 * 86400 - 60 < left <= 30 * 86400


def test_draining_answers_ask_clients_to_reconnect(
    state: app.State, client: fastapi.testclient.TestClient
) -> None:
    assert "close" not in client.get("/healthz").headers.get("connection", "")
    state.ready = False
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.headers["connection"] == "close"
    answer = client.post("/validate", content=reviews.body(reviews.namespace_delete()))
    assert answer.status_code == 200 and answer.headers["connection"] == "close"


def test_readyz_reports_a_refused_policy_reload(
    state: app.State, client: fastapi.testclient.TestClient
) -> None:
    state.policy_error = "rules/policy.yaml: guards.namespace-delete.mood: unknown field"
    answer = client.get("/readyz")
    assert answer.status_code == 200  # the last good policy still serves
    assert answer.json()["policyReloadError"] == state.policy_error


def test_each_app_has_its_own_registry(shipped_engine: engine.Engine) -> None:
    first, second = app.State(shipped_engine), app.State(shipped_engine)
    assert first.metrics.registry is not second.metrics.registry


def test_unexpected_errors_are_timed_and_counted_as_500(
    shipped_engine: engine.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_answer(*_: Any) -> dict[str, Any]:
        raise OSError("out of memory")

    monkeypatch.setitem(app.ENDPOINTS, "/validate", dataclasses.replace(app.VALIDATE, respond=broken_answer))
    state = app.State(shipped_engine)
    client = fastapi.testclient.TestClient(
        app.create_app(state, on_decision=lambda _: None), raise_server_exceptions=False
    )
    with client:
        answer = client.post("/validate", content=reviews.body(reviews.namespace_delete()))
        assert answer.status_code == 500 and "Traceback" not in answer.text
        samples = scrape(client)
    assert value(samples, "agent_guard_http_responses_total", endpoint="validate", code="500") == 1
    assert value(samples, "agent_guard_review_duration_seconds_count", endpoint="validate") == 1


def test_a_decision_log_that_fails_does_not_change_the_answer(
    shipped_engine: engine.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """The line is recorded after the answer has left (webhook.app): a sink that raises is logged and
    the decision, already sent, stands; the review is still counted."""

    def broken_log(_: dict[str, Any]) -> None:
        raise OSError("disk full")

    state = app.State(shipped_engine)
    with fastapi.testclient.TestClient(app.create_app(state, on_decision=broken_log)) as client:
        answer = client.post("/validate", content=reviews.body(reviews.namespace_delete()))
        samples = scrape(client)
    assert answer.status_code == 200 and answer.json()["response"]["allowed"] is False
    assert value(samples, "agent_guard_http_responses_total", endpoint="validate", code="200") == 1
    assert any("OSError while recording a /validate decision" in r.getMessage() for r in caplog.records)


def test_budget_denials_and_ledger_are_exported(shipped_policy: policy.Policy) -> None:
    guards = dict(shipped_policy.guards)
    guards["delete-budget"] = guards["delete-budget"].model_copy(update={"limit": 2})
    state = app.State(engine.Engine(dataclasses.replace(shipped_policy, guards=guards)))
    delete = reviews.review(
        reviews.admission_request(
            "DELETE", "configmaps", name="cm", namespace="shop", old={"kind": "ConfigMap", "metadata": {}}
        )
    )
    with fastapi.testclient.TestClient(app.create_app(state, on_decision=lambda _: None)) as client:
        assert scrape(client)[("agent_guard_budget_tracked_keys", ())] == 0
        answers = [
            _validate(client, {**delete, "request": {**delete["request"], "uid": f"u{i}"}}) for i in range(3)
        ]
        samples = scrape(client)
    assert [a["allowed"] for a in answers] == [True, True, False]
    assert answers[2]["status"]["message"].startswith("[delete-budget] ")
    labels = {"endpoint": "validate", "decision": "deny", "mode": "enforce"}
    assert value(samples, "agent_guard_guard_decisions_total", guard="delete-budget", **labels) == 1
    assert value(samples, "agent_guard_budget_charged_requests_total") == 2
    assert value(samples, "agent_guard_budget_tracked_keys") == 1
    assert value(samples, "agent_guard_budget_tracked_requests") == 2


def test_approvals_offered_and_used_are_exported(shipped_policy: policy.Policy) -> None:
    guards = dict(shipped_policy.guards)
    guards["delete-budget"] = guards["delete-budget"].model_copy(update={"limit": 0})
    rules = (approvals.Rule(guard="delete-budget"),)
    store = approvals.Store()
    store.enabled = True
    state = app.State(
        engine.Engine(dataclasses.replace(shipped_policy, guards=guards, approvals=rules), approved=store)
    )
    request = reviews.admission_request(
        "DELETE", "configmaps", name="cm", namespace="shop", old={"kind": "ConfigMap", "metadata": {}}
    )
    target = approvals.Target(str(reviews.AGENT["username"]), "DELETE", "", "configmaps", "shop", "cm")
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=5)
    obj = approvals.manifest(target, "alice", "ok", later, "agent-guard-system")
    obj["metadata"]["name"] = "a-1"
    with fastapi.testclient.TestClient(app.create_app(state, on_decision=lambda _: None)) as client:
        assert "Approval id" in _validate(client, reviews.review(request))["status"]["message"]
        store.put(approvals.Approval.from_object(obj))
        assert _validate(client, reviews.review({**request, "uid": "retry"}))["allowed"]
        samples = scrape(client)
    assert value(samples, "agent_guard_approvals_offered_total") == 1
    assert value(samples, "agent_guard_approvals_used_total") == 1
    assert value(samples, "agent_guard_approvals_known") == 1
    assert value(samples, "agent_guard_approvals_watching") == 1


def test_every_review_endpoint_is_timed_from_the_start(client: fastapi.testclient.TestClient) -> None:
    """The endpoint names come from ``app.ENDPOINTS`` alone: a new endpoint is exported at zero."""
    samples = scrape(client)
    timed = {
        dict(labels)["endpoint"]
        for name, labels in samples
        if name == "agent_guard_review_duration_seconds_count"
    }
    assert timed == {endpoint.name for endpoint in app.ENDPOINTS.values()} == {"validate", "authorize"}
