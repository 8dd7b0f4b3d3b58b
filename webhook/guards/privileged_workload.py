"""``privileged-workload``: an agent's pods must meet the Pod Security Standards.

A privileged container, a hostPath mount of ``/`` or ``hostPID`` is a node escape: from there the
pod reads every Secret the kubelet holds and every other pod's data. Pod Security Admission enforces
the same standard per namespace, but namespaces are often left at ``privileged`` (kube-system,
monitoring, CI) and an agent bound to cluster-admin can relabel them; this guard applies the standard
to the agent's own writes, wherever the pod spec hides (``webhook.guards.podspec``), whatever the
namespace says.

An UPDATE that changes the pod spec (or the AppArmor annotations in the pod's metadata) is judged on
the whole new spec: changing the image or command of an already-privileged workload is as good as
creating one. An UPDATE that leaves both as they were (labels, ``kubectl rollout restart``) cannot make
the pods run anything new and passes, as it does for the other pod-spec guards.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import pydantic

from webhook import attributes
from webhook.guards import base, podspec, pss, safe

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
    path = [*pod.path.split(".")[:-1], "metadata"]
    current: Mapping[str, Any] = obj
    for depth, key in enumerate(path):
        current = safe.mapping(current.get(key), ".".join(path[: depth + 1]))
    return current, ".".join(path)


def _apparmor(metadata: Mapping[str, Any]) -> dict[str, Any]:
    annotations = safe.string_map(metadata.get("annotations"))
    return {
        k: v for k, v in annotations.items() if isinstance(k, str) and k.startswith(pss.APPARMOR_ANNOTATION)
    }


def check(request: attributes.AdmissionRequest, settings: Settings, ctx: base.Context) -> Iterator[str]:
    pod = podspec.pod_spec(request)
    if pod is None or request.object is None:
        return
    metadata, metadata_path = _metadata(request.object, pod)
    if podspec.spec_unchanged(request) and request.old_object is not None:
        old_pod = podspec.previous(request)
        old_metadata = _metadata(request.old_object, old_pod)[0] if old_pod else {}
        if _apparmor(old_metadata) == _apparmor(metadata):
            return
    yield from pss.check(pod, metadata, metadata_path, settings.standard())


FAMILY = base.Family(
    id="privileged-workload",
    summary="Applies the Pod Security Standards (baseline or restricted) to every pod spec an agent writes.",
    settings=Settings,
    admission=check,
    rules=podspec.admission_rules(),
)
