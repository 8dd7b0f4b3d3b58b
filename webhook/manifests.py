"""Render Kubernetes objects from the policy, so configuration cannot drift from what is enforced.

The ValidatingWebhookConfiguration's rules come from the guard families that are not ``off`` and
its ``matchConditions`` from the policy's agent selector (``webhook.identity``): the apiserver then
never calls the guard for humans and controllers, and an outage of the guard cannot block them.

The authorizer side (``/authorize``) is not an API object but two files the kube-apiserver reads at
start-up: an ``AuthorizationConfiguration`` (``--authorization-config``) that puts the guard between
the Node and RBAC authorizers, and the kubeconfig it names, which says where the guard listens and
which CA signed its certificate. Both are rendered here from the same selector.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import yaml

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


# --- The authorization webhook: AuthorizationConfiguration + kubeconfig ------------------------
# Field names and allowed values follow k8s.io/apiserver/pkg/apis/apiserver/v1 (types.go) and its
# validation (validation.go), which the apiserver decodes strictly: an unknown field is an error.

AUTHORIZATION_CONFIG_API_VERSION = "apiserver.config.k8s.io/v1"  # GA in Kubernetes 1.32
AUTHORIZER_NAME = "agent-guard"  # a DNS-1123 subdomain; shows up in apiserver metrics
AUTHZ_DIR = "/etc/kubernetes/agent-guard"  # where the kube-apiserver finds the files by default
CONFIG_FILE = "authorization-config.yaml"
KUBECONFIG_FILE = "authz-kubeconfig.yaml"
DEFAULT_KUBECONFIG_PATH = f"{AUTHZ_DIR}/{KUBECONFIG_FILE}"
DEFAULT_CA_FILE = f"{AUTHZ_DIR}/ca.crt"  # what the committed manifests/authz/ kubeconfig references
DEFAULT_AUTHZ_URL = "https://127.0.0.1:8443"  # the guard next to the apiserver (make run, e2e)
AUTHZ_TIMEOUT = "3s"  # the apiserver allows at most 30s; every agent request waits on us
# The guard never answers allowed: true, so only "unauthorized" answers (denied or no opinion) are
# cached. A short TTL bounds how long a policy change or a stopped guard takes to show.
AUTHORIZED_TTL = "5m"
UNAUTHORIZED_TTL = "10s"


def authorization_match_conditions(loaded: policy.Policy) -> list[dict[str, str]]:
    """The webhook is called only for agents (``WebhookMatchCondition`` has no ``name`` field)."""
    return [{"expression": identity.cel_expression(loaded.agents, "authorization")}]


def authorization_configuration(
    loaded: policy.Policy,
    *,
    kubeconfig_path: str = DEFAULT_KUBECONFIG_PATH,
    timeout: str = AUTHZ_TIMEOUT,
    unauthorized_ttl: str = UNAUTHORIZED_TTL,
) -> dict[str, Any]:
    """Node, then the guard (agents only, fail closed), then RBAC.

    The guard must sit before RBAC: its ``denied: true`` is final, while RBAC alone would allow an
    agent bound to cluster-admin. ``failurePolicy: Deny`` fails closed for agents only, because the
    match conditions keep everyone else from reaching the webhook at all.
    """
    if not PurePosixPath(kubeconfig_path).is_absolute():
        raise ValueError(
            f"the kubeconfig path must be absolute (the apiserver requires it): {kubeconfig_path}"
        )
    return {
        "apiVersion": AUTHORIZATION_CONFIG_API_VERSION,
        "kind": "AuthorizationConfiguration",
        "authorizers": [
            {"type": "Node", "name": "node"},
            {
                "type": "Webhook",
                "name": AUTHORIZER_NAME,
                "webhook": {
                    "timeout": timeout,
                    "authorizedTTL": AUTHORIZED_TTL,
                    "cacheAuthorizedRequests": False,  # never produced: the guard only subtracts
                    "unauthorizedTTL": unauthorized_ttl,
                    "cacheUnauthorizedRequests": True,
                    "subjectAccessReviewVersion": "v1",
                    "matchConditionSubjectAccessReviewVersion": "v1",
                    "failurePolicy": "Deny",
                    "connectionInfo": {"type": "KubeConfigFile", "kubeConfigFile": kubeconfig_path},
                    "matchConditions": authorization_match_conditions(loaded),
                },
            },
            {"type": "RBAC", "name": "rbac"},
        ],
    }


def authorization_kubeconfig(
    url: str, *, ca_bundle: str | None = None, ca_file: str | None = None
) -> dict[str, Any]:
    """How the apiserver reaches ``/authorize``: the server URL and the CA (inline or a file path)."""
    if (ca_bundle is None) == (ca_file is None):
        raise ValueError("give exactly one of ca_bundle or ca_file")
    if not url.startswith("https://"):
        raise ValueError(f"the guard serves TLS only: the URL must start with https://, got {url}")
    cluster: dict[str, str] = {"server": url.rstrip("/") + "/authorize"}
    if ca_bundle is not None:
        cluster["certificate-authority-data"] = ca_bundle
    elif ca_file is not None:
        cluster["certificate-authority"] = ca_file
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": AUTHORIZER_NAME, "cluster": cluster}],
        "users": [{"name": "kube-apiserver", "user": {}}],  # the guard does not authenticate callers
        "contexts": [
            {"name": AUTHORIZER_NAME, "context": {"cluster": AUTHORIZER_NAME, "user": "kube-apiserver"}}
        ],
        "current-context": AUTHORIZER_NAME,
    }


def _document(header: str, payload: dict[str, Any]) -> str:
    comments = "".join(f"# {line}\n" for line in header.splitlines())
    return comments + yaml.safe_dump(payload, sort_keys=False, width=1_000_000)


def authorization_files(
    loaded: policy.Policy,
    *,
    url: str = DEFAULT_AUTHZ_URL,
    ca_bundle: str | None = None,
    ca_file: str | None = None,
    kubeconfig_path: str = DEFAULT_KUBECONFIG_PATH,
) -> dict[str, str]:
    """``{file name: YAML text}`` for the authorizer: write both into one directory and start the
    kube-apiserver with ``--authorization-config=<dir>/authorization-config.yaml`` (the kubeconfig
    must then be at ``kubeconfig_path``)."""
    config = authorization_configuration(loaded, kubeconfig_path=kubeconfig_path)
    kubeconfig = authorization_kubeconfig(url, ca_bundle=ca_bundle, ca_file=ca_file)
    rendered = "rendered by `agent-guard manifests authz` from the policy: re-render, do not edit."
    return {
        CONFIG_FILE: _document(
            f"{CONFIG_FILE}, {rendered}\n"
            "Start the kube-apiserver with --authorization-config=<this file> (not --authorization-mode).",
            config,
        ),
        KUBECONFIG_FILE: _document(
            f"{KUBECONFIG_FILE}, {rendered}\n"
            f"How the kube-apiserver reaches the guard's /authorize; it must be at {kubeconfig_path}.",
            kubeconfig,
        ),
    }
