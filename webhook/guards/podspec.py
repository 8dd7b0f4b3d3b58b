"""Where pod specs hide, so every family that judges pods judges all of them.

An agent rarely needs to create a Pod itself: a Deployment, Job, CronJob or even a PodTemplate makes
a controller create it later, under the controller's identity, where an identity-keyed guard can no
longer see the agent. So each pod template is judged at the agent's write. The paths below are the
complete list for the built-in workload APIs.

Everything here reads through ``webhook.guards.safe``: a pod spec, template or container list of the
wrong JSON type is a ``Malformed`` finding of the guard that asked, never "no pod spec here".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from webhook import attributes
from webhook.guards import base, safe

# (group, resource) -> path of the pod spec inside the object
TEMPLATE_PATHS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "pods"): ("spec",),
    ("", "podtemplates"): ("template", "spec"),
    ("", "replicationcontrollers"): ("spec", "template", "spec"),
    ("apps", "deployments"): ("spec", "template", "spec"),
    ("apps", "replicasets"): ("spec", "template", "spec"),
    ("apps", "statefulsets"): ("spec", "template", "spec"),
    ("apps", "daemonsets"): ("spec", "template", "spec"),
    ("batch", "jobs"): ("spec", "template", "spec"),
    ("batch", "cronjobs"): ("spec", "jobTemplate", "spec", "template", "spec"),
}

# Subresources whose write carries a whole Pod that may add containers.
POD_SUBRESOURCES = frozenset({"", "ephemeralcontainers"})

CONTAINER_LISTS = (
    ("initContainers", "init container"),
    ("containers", "container"),
    ("ephemeralContainers", "ephemeral container"),
)


@dataclass(frozen=True, slots=True)
class PodSpec:
    """A pod spec found in an object, with the field path that leads to it (for messages)."""

    path: str  # e.g. "spec.template.spec"
    spec: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Container:
    label: str  # e.g. 'init container "setup"' - what a message should call it
    field: str  # e.g. "spec.template.spec.initContainers[0]"
    spec: Mapping[str, Any]


def _dig(obj: Mapping[str, Any], path: tuple[str, ...]) -> Mapping[str, Any] | None:
    """The object at ``path``; None where the path ends early (absent); Malformed on a wrong type."""
    current: Any = obj
    for depth, key in enumerate(path):
        current = current.get(key)
        if current is None:
            return None
        safe.mapping(current, ".".join(path[: depth + 1]))
    return current  # type: ignore[no-any-return]


def pod_spec(request: attributes.AdmissionRequest) -> PodSpec | None:
    """The pod spec a CREATE/UPDATE writes, wherever it sits; None for anything else."""
    if request.operation not in ("CREATE", "UPDATE") or request.object is None:
        return None
    key = (request.resource.group, request.resource.resource)
    path = TEMPLATE_PATHS.get(key)
    if path is None:
        return None
    allowed_sub = POD_SUBRESOURCES if key == ("", "pods") else frozenset({""})
    if request.sub_resource not in allowed_sub:
        return None
    spec = _dig(request.object, path)
    return PodSpec(".".join(path), spec) if spec is not None else None


@dataclass(frozen=True, slots=True)
class Volume:
    label: str  # e.g. 'volume "creds"'
    field: str  # e.g. "spec.template.spec.volumes[0]"
    spec: Mapping[str, Any]


def volumes(pod: PodSpec) -> Iterator[Volume]:
    """Every volume of the pod, labelled for messages (``safe``: wrong types and huge lists raise)."""
    field = f"{pod.path}.volumes"
    for index, item in safe.mappings(pod.spec.get("volumes"), field):
        name = safe.text(item.get("name"), f"{field}[{index}].name") or f"#{index}"
        yield Volume(f'volume "{name}"', f"{field}[{index}]", item)


def containers(pod: PodSpec) -> Iterator[Container]:
    """Every container of every kind, labelled for messages (``safe``: wrong types and huge lists raise)."""
    for list_name, label in CONTAINER_LISTS:
        field = f"{pod.path}.{list_name}"
        for index, item in safe.mappings(pod.spec.get(list_name), field):
            name = safe.text(item.get("name"), f"{field}[{index}].name") or f"#{index}"
            yield Container(f'{label} "{name}"', f"{field}[{index}]", item)


def previous(request: attributes.AdmissionRequest) -> PodSpec | None:
    """The pod spec the object had before an UPDATE; None on CREATE or without an old object."""
    if request.operation != "UPDATE" or request.old_object is None:
        return None
    return pod_spec(dataclasses.replace(request, object=request.old_object))


def spec_unchanged(request: attributes.AdmissionRequest) -> bool:
    """True when an UPDATE leaves the pod spec exactly as it was (scale, labels, rollout restart).

    Such a write cannot make the pods run other code, so what they already run as or read stays
    the responsibility of whoever wrote the spec.
    """
    old, new = previous(request), pod_spec(request)
    return old is not None and new is not None and old.spec == new.spec


def admission_rules(operations: tuple[str, ...] = ("CREATE", "UPDATE")) -> tuple[base.AdmissionRule, ...]:
    """Webhook rules that route every write carrying a pod spec (the resources above)."""
    by_group: dict[str, list[str]] = {}
    for group, resource in TEMPLATE_PATHS:
        by_group.setdefault(group, []).append(resource)
    by_group[""].extend(f"pods/{sub}" for sub in sorted(POD_SUBRESOURCES) if sub)
    return tuple(
        base.AdmissionRule(api_groups=(group,), resources=tuple(resources), operations=operations)
        for group, resources in sorted(by_group.items())
    )
