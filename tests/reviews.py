"""Builders for review bodies and identities shared by the test layers."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

AGENT = {
    "username": "system:serviceaccount:mcp-system:mcp-k8s-go",
    "uid": "7f1e0b6c-agent",
    "groups": ["system:serviceaccounts", "system:serviceaccounts:mcp-system", "system:authenticated"],
}
ADMIN = {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]}
CONTROLLER = {
    "username": "system:serviceaccount:kube-system:replicaset-controller",
    "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"],
}

_KINDS = {
    "namespaces": ("", "Namespace"),
    "pods": ("", "Pod"),
    "secrets": ("", "Secret"),
    "serviceaccounts": ("", "ServiceAccount"),
    "deployments": ("apps", "Deployment"),
}


def admission_request(
    operation: str,
    resource: str,
    *,
    group: str = "",
    version: str = "v1",
    name: str = "",
    namespace: str = "",
    user: dict[str, Any] | None = None,
    obj: dict[str, Any] | None = None,
    old: dict[str, Any] | None = None,
    sub_resource: str = "",
    kind: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An ``AdmissionReview.request`` as the apiserver would send it."""
    default_group, default_kind = _KINDS.get(resource, (group, resource.rstrip("s").capitalize()))
    request: dict[str, Any] = {
        "uid": str(uuid.uuid4()),
        "kind": {"group": group or default_group, "version": version, "kind": kind or default_kind},
        "resource": {"group": group or default_group, "version": version, "resource": resource},
        "name": name,
        "namespace": namespace,
        "operation": operation,
        "userInfo": user if user is not None else AGENT,
        "object": obj,
        "oldObject": old,
    }
    if sub_resource:
        request["subResource"] = sub_resource
    request.update(extra)
    return request


def review(request: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def namespace_delete(name: str = "prod", user: dict[str, Any] | None = None) -> dict[str, Any]:
    return review(
        admission_request(
            "DELETE",
            "namespaces",
            name=name,
            user=user,
            old={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )
    )


def body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()
