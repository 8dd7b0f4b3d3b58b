"""``privileged-workload``: an agent's pods must meet the Pod Security Standards.

A privileged container, a hostPath mount of ``/`` or ``hostPID`` is a node escape: from there the
pod reads every Secret the kubelet holds and every other pod's data. Pod Security Admission enforces
the same standard per namespace, but namespaces are often left at ``privileged`` (kube-system,
monitoring, CI) and an agent bound to cluster-admin can relabel them; this guard applies the standard
to the agent's own writes, wherever the pod spec hides (``webhook.podspec``), whatever the
namespace says.

An UPDATE that changes the pod spec (or the AppArmor annotations in the pod's metadata) is judged on
the whole new spec: changing the image or command of an already-privileged workload is as good as
creating one. An UPDATE that leaves both as they were (labels, ``kubectl rollout restart``) cannot make
the pods run anything new and passes, as it does for the other pod-spec guards.

Three more routes to the node sit outside the standard: a ``gitRepo`` volume (deprecated; git runs on
the node, CVE-2024-10220), a PersistentVolume with a ``hostPath`` or ``local`` source (any clean pod
that mounts a claim bound to it gets the node's files), and a Service with ``externalIPs``, which
makes every node capture traffic for those addresses (CVE-2020-8554, the same interception a
``hostNetwork`` pod could do).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import pydantic

from webhook import attributes, podspec, pss, safe
from webhook.guards import base

_CAPABILITY = re.compile(r"^[A-Z][A-Z0-9_]*$")


class Settings(base.GuardSettings):
    """``level`` picks the standard; ``allowedCapabilities`` is the one principled escape hatch.

    Extra capabilities are allowed on top of the level's own set at either level, for tools that
    need them by design (e.g. ``kubectl debug --profile=netadmin`` adds NET_ADMIN and NET_RAW).
    """

    level: Literal["baseline", "restricted"] = "baseline"
    allowed_capabilities: tuple[str, ...] = ()

    @pydantic.field_validator("allowed_capabilities")
    @classmethod
    def _capability_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if name == "ALL":
                raise ValueError("'ALL' would allow every capability; list the ones needed")
            if not _CAPABILITY.match(name) or name.startswith("CAP_"):
                raise ValueError(
                    f"{name!r} is not a capability name as Kubernetes writes it (e.g. NET_ADMIN, no CAP_)"
                )
        return value

    def standard(self) -> pss.Standard:
        return pss.Standard(level=self.level, extra_capabilities=frozenset(self.allowed_capabilities))


def _metadata(obj: Mapping[str, Any], pod: podspec.PodSpec) -> tuple[Mapping[str, Any], str]:
    """The pod's metadata sits next to its spec (``spec`` -> ``metadata``, ``…template.spec`` ->
    ``…template.metadata``): AppArmor's legacy annotations live there."""
    if not pod.keys or pod.keys[-1] != "spec":
        return {}, ""  # a pod spec without a metadata sibling (custom kinds): no annotations to judge
    keys = (*pod.keys[:-1], "metadata")
    path = pod.path[: -len("spec")] + "metadata"
    return safe.mapping(podspec.dig(obj, keys), path), path


def _apparmor(metadata: Mapping[str, Any]) -> dict[str, Any]:
    annotations = safe.string_map(metadata.get("annotations"))
    return {
        k: v for k, v in annotations.items() if isinstance(k, str) and k.startswith(pss.APPARMOR_ANNOTATION)
    }


def _pod_findings(
    request: attributes.AdmissionRequest, pod: podspec.PodSpec, settings: Settings
) -> Iterator[str]:
    assert request.object is not None  # pod_specs found one in it
    metadata, metadata_path = _metadata(request.object, pod)
    if podspec.spec_unchanged(request, pod) and request.old_object is not None:
        old_pod = podspec.previous(request, pod)
        old_metadata = _metadata(request.old_object, old_pod)[0] if old_pod else {}
        if _apparmor(old_metadata) == _apparmor(metadata):
            return
    yield from pss.check(pod, metadata, metadata_path, settings.standard())
    yield from _deprecated_volumes(pod)


def _deprecated_volumes(pod: podspec.PodSpec) -> Iterator[str]:
    """``gitRepo`` runs ``git`` on the node as root with the agent's arguments (CVE-2024-10220)."""
    for volume in podspec.volumes(pod):
        if "gitRepo" in volume.spec:
            yield (
                f"{volume.label} uses {volume.field}.gitRepo, a deprecated volume type that runs git on the "
                "node with hooks from the repository (CVE-2024-10220: code execution as root on the node); "
                "clone the repository in an init container into an emptyDir volume instead"
            )


# Host-backed PersistentVolume sources: whatever pod mounts the claim gets the node's filesystem.
HOST_VOLUME_SOURCES = ("hostPath", "local")


def _persistent_volume(request: attributes.AdmissionRequest) -> Iterator[str]:
    spec = safe.mapping((request.object or {}).get("spec"), "spec")
    name = request.name or str(((request.object or {}).get("metadata") or {}).get("name", ""))
    for source in HOST_VOLUME_SOURCES:
        found = safe.mapping(spec.get(source), f"spec.{source}")
        if source in spec and spec[source] is not None:
            yield (
                f'PersistentVolume "{name}" sets spec.{source}.path="{found.get("path", "")}", a node '
                "directory: any pod that mounts a claim bound to it reads and writes the node's files, "
                "whatever the pod's own spec says; agents may not create or change host-backed "
                "PersistentVolumes: use a PersistentVolumeClaim with a StorageClass, or ask a human operator"
            )


def _service(request: attributes.AdmissionRequest) -> Iterator[str]:
    spec = safe.mapping((request.object or {}).get("spec"), "spec")
    ips = safe.items(spec.get("externalIPs"), "spec.externalIPs")
    if not ips:
        return
    old_spec = (request.old_object or {}).get("spec")
    old_ips = old_spec.get("externalIPs") if isinstance(old_spec, Mapping) else None
    if request.operation == "UPDATE" and old_ips == ips:
        return  # an update that leaves them as they were (labels, ports) adds no new capture
    shown = ", ".join(str(ip) for ip in ips)
    yield (
        f'Service "{request.name}" sets spec.externalIPs [{shown}]: every node then captures traffic to '
        "those addresses for this Service, from any namespace (CVE-2020-8554); agents may not set "
        "externalIPs: use a LoadBalancer or NodePort Service, or ask a human operator"
    )


def check(request: attributes.AdmissionRequest, settings: Settings, ctx: base.Context) -> Iterator[str]:
    if request.operation not in ("CREATE", "UPDATE") or request.object is None:
        return
    if request.resource.group == "" and not request.sub_resource:
        if request.resource.resource == "persistentvolumes":
            yield from _persistent_volume(request)
        elif request.resource.resource == "services":
            yield from _service(request)
    for pod in podspec.pod_specs(request, ctx):
        yield from _pod_findings(request, pod, settings)


FAMILY = base.Family(
    id="privileged-workload",
    summary=(
        "Applies the Pod Security Standards (baseline or restricted) to every pod spec an agent writes "
        "(built-in and custom kinds), and denies gitRepo volumes, host-backed PersistentVolumes and "
        "Service externalIPs."
    ),
    settings=Settings,
    admission=check,
    rules=(
        base.AdmissionRule(
            api_groups=("",), resources=("persistentvolumes", "services"), operations=("CREATE", "UPDATE")
        ),
    ),
    judges_pod_specs=True,
)
