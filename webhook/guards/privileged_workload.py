"""``privileged-workload``: an agent's pods must meet the Pod Security Standards.

A privileged container, a hostPath mount of ``/`` or ``hostPID`` is a node escape: from there the
pod reads every Secret the kubelet holds and every other pod's data. Pod Security Admission enforces
the same standard per namespace, but namespaces are often left at ``privileged`` (kube-system,
monitoring, CI) and an agent bound to cluster-admin can relabel them; this guard applies the standard
to the agent's own writes, wherever the pod spec hides (``webhook.guards.podspec``), whatever the
namespace says.

UPDATEs are judged on the whole new object, not on what changed: changing the image or command of
an already-privileged workload is as good as creating one, so an agent cannot edit such a workload
at all (a human or its controller still can).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import pydantic

from webhook import attributes
from webhook.guards import base, podspec, pss

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
    current: Any = obj
    for key in path:
        current = current.get(key) if isinstance(current, Mapping) else None
    return (current if isinstance(current, Mapping) else {}), ".".join(path)


def check(request: attributes.AdmissionRequest, settings: Settings, ctx: base.Context) -> Iterator[str]:
    pod = podspec.pod_spec(request)
    if pod is None or request.object is None:
        return
    metadata, metadata_path = _metadata(request.object, pod)
    yield from pss.check(pod, metadata, metadata_path, settings.standard())


def _rules() -> tuple[base.AdmissionRule, ...]:
    """Every resource whose write carries a pod spec, from the same table the locator uses."""
    by_group: dict[str, list[str]] = {}
    for group, resource in podspec.TEMPLATE_PATHS:
        by_group.setdefault(group, []).append(resource)
    by_group[""].extend(f"pods/{sub}" for sub in sorted(podspec.POD_SUBRESOURCES) if sub)
    return tuple(
        base.AdmissionRule(api_groups=(group,), resources=tuple(resources), operations=("CREATE", "UPDATE"))
        for group, resources in sorted(by_group.items())
    )


FAMILY = base.Family(
    id="privileged-workload",
    summary="Applies the Pod Security Standards (baseline or restricted) to every pod spec an agent writes.",
    settings=Settings,
    admission=check,
    rules=_rules(),
)
