"""What the fixture folders cannot say about secret-access and workload-identity.

Malformed pod specs must not crash a guard (a crash fails closed with an unhelpful message), Secret
data must never reach a message, bad allow-lists are policy errors naming the field, and the
rendered webhook configuration must route CONNECT and ephemeral containers to the guard.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests import reviews
from webhook import attributes, engine, manifests, policy, review

BASE_POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "p", "namespace": "prod"},
    "spec": {"serviceAccountName": "deployer", "containers": [{"name": "app", "image": "busybox"}]},
}

# Shapes an apiserver would reject, but a guard sees before validation or through `check`.
GARBAGE: list[tuple[str, Any]] = [
    ("volumes", "not-a-list"),
    ("volumes", [None, 3, {"name": "v", "secret": "db-creds"}]),
    ("volumes", [{"name": "v", "projected": {"sources": "x"}}]),
    ("volumes", [{"name": "v", "projected": {"sources": [None, {"secret": None}]}}]),
    ("volumes", [{"name": "v", "csi": {"nodePublishSecretRef": "x"}}]),
    ("volumes", [{"secret": {"secretName": 7}}]),
    ("containers", [{"name": "app", "env": "x", "envFrom": [None]}]),
    ("containers", [{"name": "app", "env": [{"valueFrom": "x"}, {"valueFrom": {"secretKeyRef": 1}}]}]),
    ("serviceAccountName", ["list"]),
    ("automountServiceAccountToken", "false"),
]


def _pod_request(obj: dict[str, Any]) -> attributes.AdmissionRequest:
    raw = reviews.admission_request("CREATE", "pods", namespace="prod", obj=obj)
    return review.parse_admission(reviews.body(reviews.review(raw)))


@pytest.mark.parametrize(("field", "value"), GARBAGE, ids=[f"{f}-{i}" for i, (f, _) in enumerate(GARBAGE)])
def test_malformed_pod_specs_do_not_crash(field: str, value: Any, shipped_policy: policy.Policy) -> None:
    obj = copy.deepcopy(BASE_POD)
    obj["spec"][field] = value
    verdict = engine.Engine(shipped_policy).admit(_pod_request(obj))
    assert not any(f.error for f in verdict.findings), [f.message for f in verdict.findings]


def test_secret_without_name_is_still_denied(shipped_policy: policy.Policy) -> None:
    obj = copy.deepcopy(BASE_POD)
    obj["spec"]["serviceAccountName"] = "default"
    obj["spec"]["volumes"] = [{"name": "v", "secret": {"optional": True}}]
    verdict = engine.Engine(shipped_policy).admit(_pod_request(obj))
    assert verdict.guards == ("secret-access",)
    assert "references a Secret without a name" in verdict.findings[0].message


def test_secret_data_never_reaches_a_message(shipped_policy: policy.Policy) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db-creds", "namespace": "prod"},
        "type": "Opaque",
        "data": {"password": "aHVudGVyMg=="},
        "stringData": {"apiKey": "sk-live-0123456789"},
    }
    raw = reviews.admission_request(
        "UPDATE", "secrets", name="db-creds", namespace="prod", obj=secret, old=secret
    )
    verdict = engine.Engine(shipped_policy).admit(review.parse_admission(reviews.body(reviews.review(raw))))
    assert not verdict.allowed
    for finding in verdict.findings:
        assert "aHVudGVyMg" not in finding.message and "sk-live" not in finding.message


@pytest.mark.parametrize(
    "section",
    [
        "secret-access: {allowedSecrets: {prod: ['']}}",
        "secret-access: {allowedSecrets: {prod: db-creds}}",
        "workload-identity: {allowedServiceAccounts: {'': [builder]}}",
        "workload-identity: {allowWithoutToken: maybe}",
    ],
)
def test_bad_allow_lists_name_the_field(tmp_path: Path, section: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "apiVersion: agent-guard.io/v1alpha1\nkind: Policy\n"
        f"agents: {{serviceAccounts: ['mcp-system/*']}}\nguards:\n  {section}\n"
    )
    with pytest.raises(policy.PolicyError) as raised:
        policy.load(path)
    guard_id, _, rest = section.partition(":")
    key = rest.split("{", 2)[1].split(":")[0].strip()
    assert f"guards.{guard_id}.{key}" in str(raised.value)


def test_webhook_routes_connect_and_ephemeral_containers(shipped_policy: policy.Policy) -> None:
    rules = manifests.admission_rules(shipped_policy)
    routed = {(r, op) for rule in rules for r in rule["resources"] for op in rule["operations"]}
    connect = ("pods/exec", "pods/attach", "pods/portforward", "pods/proxy", "services/proxy", "nodes/proxy")
    for sub in connect:
        assert (sub, "CONNECT") in routed
    assert ("serviceaccounts/token", "CREATE") in routed
    assert ("pods/ephemeralcontainers", "UPDATE") in routed
    assert ("cronjobs", "UPDATE") in routed and ("secrets", "UPDATE") in routed
