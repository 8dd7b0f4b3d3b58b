"""Server-side apply of arbitrary objects through discovery, the way ``kubectl apply --server-side`` does.

``kubectl`` is not on every machine (and on some it is a wrapper), so the suite speaks the protocol
itself: discovery (``/api/v1``, ``/apis/<group>/<version>``) maps an object's ``apiVersion`` and
``kind`` to its resource path, and the apply is a ``PATCH`` with ``application/apply-patch+yaml``
(JSON is YAML), a ``fieldManager`` and, for a check that changes nothing, ``dryRun=All``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.e2e import kube

APPLY_PATCH = "application/apply-patch+yaml"
FIELD_MANAGER = "agent-guard-e2e"


@dataclass(frozen=True)
class Resource:
    api_version: str
    name: str  # plural, e.g. "deployments"
    namespaced: bool

    def path(self, obj: Mapping[str, Any]) -> str:
        prefix = f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"
        metadata = obj.get("metadata") or {}
        if self.namespaced:
            namespace = metadata.get("namespace")
            if not namespace:
                raise AssertionError(f"{obj.get('kind')} {metadata.get('name')!r} has no metadata.namespace")
            prefix += f"/namespaces/{namespace}"
        return f"{prefix}/{self.name}/{metadata['name']}"


@dataclass
class Discovery:
    """What the cluster serves, per ``apiVersion``, asked once each."""

    client: kube.Client
    served: dict[str, dict[str, Resource] | None] = field(default_factory=dict)

    def resources(self, api_version: str) -> dict[str, Resource] | None:
        """Kind -> resource for ``api_version``; None when the cluster does not serve it (no CRD)."""
        if api_version not in self.served:
            path = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
            reply = self.client.request(kube.Request("GET", path))
            if reply.status == 404:
                self.served[api_version] = None
            elif reply.status != 200:
                raise AssertionError(f"discovery of {api_version} failed: {reply}")
            else:
                self.served[api_version] = {
                    item["kind"]: Resource(api_version, item["name"], bool(item["namespaced"]))
                    for item in reply.body.get("resources", [])
                    if "/" not in item["name"]  # subresources
                }
        return self.served[api_version]

    def resource(self, obj: Mapping[str, Any]) -> Resource | None:
        served = self.resources(str(obj["apiVersion"]))
        if served is None:
            return None
        if obj["kind"] not in served:
            raise AssertionError(f"{obj['apiVersion']} is served but has no kind {obj['kind']}")
        return served[obj["kind"]]


def apply(
    resource: Resource, obj: Mapping[str, Any], *, dry_run: bool = True, force: bool = True
) -> kube.Request:
    """The server-side apply request for ``obj`` (``force`` = ``kubectl apply --force-conflicts``)."""
    query = [("fieldManager", FIELD_MANAGER)]
    if force:
        query.append(("force", "true"))
    request = kube.Request("PATCH", resource.path(obj), obj, tuple(query), content_type=APPLY_PATCH)
    return request.dry_run() if dry_run else request
