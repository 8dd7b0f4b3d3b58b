"""rbac-escalation and guard-tamper beyond the fixtures: settings errors, routing, the guard namespace."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tests import reviews
from webhook import attributes, engine, manifests, policy, review

RBAC = "guards.rbac-escalation"
HEADER = "apiVersion: agent-guard.io/v1alpha1\nkind: Policy\nagents:\n  serviceAccounts: ['mcp-system/*']\n"


@pytest.mark.parametrize(
    ("section", "field", "needle"),
    [
        ("rbac-escalation: {powerfulRoles: ['a/b/c']}", f"{RBAC}.powerfulRoles", "namespace/"),
        ("rbac-escalation: {powerfulRoles: ['/admin']}", f"{RBAC}.powerfulRoles", "namespace/"),
        ("rbac-escalation: {powerfulRoles: ['a*b']}", f"{RBAC}.powerfulRoles", "only allowed"),
        ("guard-tamper: {protectedLabels: ['a*b']}", "guards.guard-tamper.protectedLabels", "prefix"),
        ("guard-tamper: {protectedAnnotations: ['']}", "guards.guard-tamper.protectedAnnotations", "prefix"),
        ("guard-tamper: {clusterRole: [x]}", "guards.guard-tamper.clusterRole", "unknown field"),
    ],
)
def test_bad_settings_name_the_field(tmp_path: Path, section: str, field: str, needle: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(HEADER + "guards:\n  " + section + "\n")
    with pytest.raises(policy.PolicyError) as caught:
        policy.load(path)
    [problem] = caught.value.problems
    assert problem.startswith(f"{path}: {field}"), problem
    assert needle in problem, problem


def _scale_to_zero(namespace: str) -> attributes.AdmissionRequest:
    scale = {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "agent-guard"}}
    request = reviews.admission_request(
        "UPDATE",
        "deployments",
        group="apps",
        name="agent-guard",
        namespace=namespace,
        sub_resource="scale",
        obj={**scale, "spec": {"replicas": 0}},
        old={**scale, "spec": {"replicas": 2}},
    )
    return review.parse_admission(reviews.body(reviews.review(request)))


def test_guard_namespace_comes_from_the_policy(shipped_policy: policy.Policy) -> None:
    moved = engine.Engine(dataclasses.replace(shipped_policy, guard_namespace="security"))
    denied = moved.admit(_scale_to_zero("security"))
    assert denied.guards == ("guard-tamper",) and not denied.allowed
    assert 'namespace "security"' in denied.findings[0].message
    assert moved.admit(_scale_to_zero("agent-guard-system")).allowed
    access = attributes.AccessRequest(
        user=attributes.UserInfo("system:serviceaccount:mcp-system:mcp-k8s-go", ("system:authenticated",)),
        verb="delete",
        resource="configmaps",
        namespace="security",
        name="agent-guard-policy",
    )
    assert moved.authorize(access).guards == ("guard-tamper",)


def test_dry_run_allows_but_reports(shipped_policy: policy.Policy) -> None:
    judge = engine.Engine(shipped_policy.with_mode("dry-run"))
    verdict = judge.admit(_scale_to_zero("agent-guard-system"))
    assert verdict.allowed and verdict.decision == "would-deny"
    assert verdict.guards == ("guard-tamper",)


def test_rendered_webhook_routes_rbac_csr_and_every_write(shipped_policy: policy.Policy) -> None:
    [hook] = manifests.validating_webhook_configuration(shipped_policy, "Q0E=", url="https://h")["webhooks"]
    rules = {(tuple(r["apiGroups"]), tuple(r["operations"])): r["resources"] for r in hook["rules"]}
    assert rules[(("*",), ("CONNECT", "CREATE", "DELETE", "UPDATE"))] == ["*/*"]
    assert rules[(("rbac.authorization.k8s.io",), ("CREATE", "UPDATE"))] == [
        "clusterrolebindings",
        "clusterroles",
        "rolebindings",
        "roles",
    ]
    csr = rules[(("certificates.k8s.io",), ("CREATE", "UPDATE"))]
    assert csr == ["certificatesigningrequests", "certificatesigningrequests/approval"]
    # The apiserver never sends these to webhooks; routing them would be a lie in the manifest.
    assert not any("admissionregistration.k8s.io" in groups for groups, _ in rules)
