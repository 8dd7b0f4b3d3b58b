"""The rendered ValidatingWebhookConfiguration follows the policy (rules, modes, identities)."""

from __future__ import annotations

import dataclasses

import pytest

from webhook import guards, identity, manifests, policy


def test_rules_cover_every_active_guard(shipped_policy: policy.Policy) -> None:
    rendered = manifests.validating_webhook_configuration(
        shipped_policy, "Q0E=", url="https://127.0.0.1:9443/"
    )
    [hook] = rendered["webhooks"]
    assert hook["clientConfig"] == {"caBundle": "Q0E=", "url": "https://127.0.0.1:9443/validate"}
    assert hook["failurePolicy"] == "Fail" and hook["sideEffects"] == "None"
    assert hook["admissionReviewVersions"] == ["v1"]
    covered = {
        (g, r, op)
        for rule in hook["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for op in rule["operations"]
    }
    for family in guards.families():
        for rule in family.rules:
            for group in rule.api_groups:
                for resource in rule.resources:
                    for operation in rule.operations:
                        assert (group, resource, operation) in covered, (family.id, resource, operation)
    assert hook["matchConditions"] == [
        {"name": "agent-identity", "expression": identity.cel_expression(shipped_policy.agents, "admission")}
    ]


def test_off_guards_are_not_routed(shipped_policy: policy.Policy) -> None:
    settings = {guard_id: family.settings(mode="off") for guard_id, family in guards.by_id().items()}
    loaded = dataclasses.replace(shipped_policy, guards=settings)
    rendered = manifests.validating_webhook_configuration(loaded, "Q0E=", service=("s", "n"))
    assert rendered["webhooks"][0]["rules"] == []
    assert rendered["webhooks"][0]["clientConfig"]["service"] == {
        "name": "s",
        "namespace": "n",
        "path": "/validate",
        "port": 443,
    }


def test_exactly_one_client_target(shipped_policy: policy.Policy) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        manifests.validating_webhook_configuration(shipped_policy, "x")
