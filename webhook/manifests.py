"""Render Kubernetes objects from the policy, so configuration cannot drift from what is enforced.

The ValidatingWebhookConfiguration's rules come from the guard families that are not ``off`` and
its ``matchConditions`` from the policy's agent selector (``webhook.identity``): the apiserver then
never calls the guard for humans and controllers, and an outage of the guard cannot block them.
"""

from __future__ import annotations

from typing import Any

from webhook import guards, identity, policy

WEBHOOK_NAME = "validate.agent-guard.io"
CONFIGURATION_NAME = "agent-guard"
TIMEOUT_SECONDS = 5


def admission_rules(loaded: policy.Policy) -> list[dict[str, Any]]:
    """One rule per (api groups, operations), resources merged, for every guard that is not off."""
    merged: dict[tuple[tuple[str, ...], tuple[str, ...]], list[str]] = {}
    for family in guards.families():
        if loaded.mode_of(family.id) == "off":
            continue
        for rule in family.rules:
            key = (tuple(sorted(rule.api_groups)), tuple(sorted(rule.operations)))
            resources = merged.setdefault(key, [])
            resources.extend(r for r in rule.resources if r not in resources)
    return [
        {
            "apiGroups": list(groups),
            "apiVersions": ["*"],
            "operations": list(operations),
            "resources": sorted(resources),
            "scope": "*",
        }
        for (groups, operations), resources in sorted(merged.items())
    ]


def match_conditions(loaded: policy.Policy) -> list[dict[str, str]]:
    return [{"name": "agent-identity", "expression": identity.cel_expression(loaded.agents, "admission")}]


def validating_webhook_configuration(
    loaded: policy.Policy,
    ca_bundle: str,
    *,
    url: str | None = None,
    service: tuple[str, str] | None = None,
    service_port: int = 443,
    name: str = CONFIGURATION_NAME,
    timeout_seconds: int = TIMEOUT_SECONDS,
) -> dict[str, Any]:
    """The guard's ValidatingWebhookConfiguration: by ``url`` (out of cluster) or ``service`` (name, ns)."""
    if (url is None) == (service is None):
        raise ValueError("give exactly one of url or service")
    client: dict[str, Any] = {"caBundle": ca_bundle}
    if url is not None:
        client["url"] = url.rstrip("/") + "/validate"
    elif service is not None:
        client["service"] = {
            "name": service[0],
            "namespace": service[1],
            "path": "/validate",
            "port": service_port,
        }
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "agent-guard"}},
        "webhooks": [
            {
                "name": WEBHOOK_NAME,
                "admissionReviewVersions": ["v1"],
                "clientConfig": client,
                "rules": admission_rules(loaded),
                "matchConditions": match_conditions(loaded),
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "timeoutSeconds": timeout_seconds,
                "matchPolicy": "Equivalent",
            }
        ],
    }
