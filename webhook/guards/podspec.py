"""Where pod specs hide, so every family that judges pods judges all of them.

An agent rarely needs to create a Pod itself: a Deployment, Job, CronJob or even a PodTemplate makes
a controller create it later, under the controller's identity, where an identity-keyed guard can no
longer see the agent. So each pod template is judged at the agent's write. The paths below are the
complete list for the built-in workload APIs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from webhook import attributes

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
    current: Any = obj
    for key in path:
        if not isinstance(current, Mapping):
            return None
        current = current.get(key)
    return current if isinstance(current, Mapping) else None


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


def containers(pod: PodSpec) -> Iterator[Container]:
    """Every container of every kind, labelled for messages."""
    for list_name, label in CONTAINER_LISTS:
        items = pod.spec.get(list_name)
        if not isinstance(items, list):
            continue
        for index, item in enumerate(items):
            if isinstance(item, Mapping):
                name = item.get("name", f"#{index}")
                yield Container(f'{label} "{name}"', f"{pod.path}.{list_name}[{index}]", item)
