"""Realistic request bodies for the benchmark, built from the guard fixtures.

Fixture objects are minimal; objects the apiserver really sends carry ``managedFields`` and often a
``kubectl.kubernetes.io/last-applied-configuration`` annotation, which is what makes real
AdmissionReviews 2-20 KB. Bodies are inflated the same way so parsing cost is realistic.
"""

from __future__ import annotations

import copy
import json
import random
import uuid
from pathlib import Path
from typing import Any

import yaml

from tests import reviews

AGENT_SHARE = 0.7  # with matchConditions only agents arrive; some clusters cannot use them


def _managed_fields(obj: dict[str, Any], rng: random.Random) -> list[dict[str, Any]]:
    entries = []
    for manager in ("kubectl-client-side-apply", "kube-controller-manager", "mcp-k8s-go")[
        : rng.randint(1, 3)
    ]:
        fields: dict[str, Any] = {f"f:{key}": {} for key in obj.get("spec", {}) or {}}
        fields.update({f"f:label-{i}": {} for i in range(rng.randint(5, 60))})
        entries.append(
            {
                "manager": manager,
                "operation": "Update",
                "apiVersion": obj.get("apiVersion", "v1"),
                "time": "2026-11-24T08:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": fields}, "f:spec": {k: {} for k in fields}},
            }
        )
    return entries


def inflate(obj: dict[str, Any] | None, rng: random.Random) -> dict[str, Any] | None:
    if not isinstance(obj, dict):
        return obj
    obj = copy.deepcopy(obj)
    metadata = obj.setdefault("metadata", {})
    labels = metadata.setdefault("labels", {}) or {}
    for i in range(rng.randint(2, 12)):
        labels[f"app.kubernetes.io/part-{i}"] = f"value-{rng.randint(0, 10**6)}"
    metadata["labels"] = labels
    annotations = metadata.setdefault("annotations", {}) or {}
    annotations["kubectl.kubernetes.io/last-applied-configuration"] = json.dumps(obj)
    metadata["annotations"] = annotations
    metadata["managedFields"] = _managed_fields(obj, rng)
    metadata.setdefault("uid", str(uuid.UUID(int=rng.getrandbits(128))))
    metadata.setdefault("resourceVersion", str(rng.randint(1, 10**7)))
    return obj


def _fixtures(key: str) -> list[dict[str, Any]]:
    """The ``request`` (admission) or ``access`` (authorization) part of every plain fixture."""
    found = []
    for path in sorted(reviews.FIXTURES.glob("*/*.yaml")):
        data = yaml.safe_load(path.read_text())
        if isinstance(data, dict) and key in data and not data.get("settings"):
            found.append(data[key])
    return found


def admission_bodies(count: int = 400, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    requests = _fixtures("request")
    bodies = []
    for i in range(count):
        request = copy.deepcopy(requests[i % len(requests)])
        request["uid"] = str(uuid.UUID(int=rng.getrandbits(128)))
        request["userInfo"] = reviews.AGENT if rng.random() < AGENT_SHARE else reviews.CONTROLLER
        request.setdefault("kind", {"group": "", "version": "v1", "kind": "Unknown"})
        for key in ("object", "oldObject"):
            request[key] = inflate(request.get(key), rng)
        bodies.append(json.dumps(reviews.review(request), separators=(",", ":")).encode())
    return bodies


SAR_DEFAULTS: list[dict[str, Any]] = [
    {"verb": "get", "resource": "secrets", "namespace": "default", "name": "db"},
    {"verb": "list", "resource": "pods", "namespace": "default"},
    {"verb": "watch", "resource": "configmaps", "namespace": "web"},
    {"verb": "create", "group": "apps", "resource": "deployments", "namespace": "web"},
]


def access_bodies(count: int = 400, seed: int = 11) -> list[bytes]:
    rng = random.Random(seed)
    specs = _fixtures("access") or SAR_DEFAULTS
    bodies = []
    for i in range(count):
        spec = specs[i % len(specs)]
        user = reviews.AGENT if rng.random() < AGENT_SHARE else reviews.CONTROLLER
        resource = {
            "namespace": spec.get("namespace", ""),
            "verb": spec.get("verb", "get"),
            "group": spec.get("group", ""),
            "version": spec.get("version", "v1"),
            "resource": spec.get("resource", ""),
            "subresource": spec.get("sub_resource", ""),
            "name": spec.get("name", ""),
        }
        body: dict[str, Any] = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {"user": user["username"], "groups": user["groups"], "uid": user.get("uid", "")},
        }
        if spec.get("path"):
            body["spec"]["nonResourceAttributes"] = {"path": spec["path"], "verb": resource["verb"]}
        else:
            body["spec"]["resourceAttributes"] = resource
        bodies.append(json.dumps(body, separators=(",", ":")).encode())
    return bodies


def write(path: Path, bodies: list[bytes]) -> dict[str, int]:
    path.write_bytes(b"\n".join(bodies) + b"\n")
    sizes = sorted(len(b) for b in bodies)
    return {"count": len(sizes), "min": sizes[0], "median": sizes[len(sizes) // 2], "max": sizes[-1]}
