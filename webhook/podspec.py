"""Where pod specs hide, so every family that judges pods judges all of them.

An agent rarely needs to create a Pod itself: a Deployment, Job, CronJob or even a PodTemplate makes
a controller create it later, under the controller's identity, where an identity-keyed guard can no
longer see the agent. So each pod template is judged at the agent's write. ``TEMPLATE_PATHS`` lists
the built-in workload APIs (including ControllerRevisions, whose saved templates ``kubectl rollout
undo`` copies back) and the well-known custom kinds whose controllers run pod specs from their own
objects (Argo Rollouts and Workflows, Knative Serving, Tekton, JobSet). The policy's ``podTemplates``
section adds kinds (``kinds``) and may switch on a shape detector for kinds in no table
(``detect``): a ``containers`` list at one of the usual places (``spec.template.spec``, …).

Paths are dotted keys; ``[*]`` after a key means every item of that list (``spec.templates[*]``).
Some controllers keep a pod's parts apart (Tekton keeps the account in ``spec``, the pod template in
``spec.podTemplate`` and the containers in ``spec.taskSpec.steps``): every listed place is judged as a
pod spec of its own, and the container lists of those kinds (``steps``, ``sidecars``, Argo's single
``container``/``script``) count as containers.

The places of listed kinds are read through ``webhook.safe``: a pod spec, template, container
or volume list of the wrong JSON type is a ``Malformed`` finding of the guard that asked, never "no
pod spec here". The shape detector, which looks into kinds nobody described, only takes what has
the shape and reads nothing else as malformed.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from webhook import attributes, safe
from webhook.guards import base

T = TypeVar("T")

WORKLOAD_PATH = ("spec.template.spec",)
# (group, resource) -> paths of the pod specs inside the object
TEMPLATE_PATHS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "pods"): ("spec",),
    ("", "podtemplates"): ("template.spec",),
    ("", "replicationcontrollers"): WORKLOAD_PATH,
    ("apps", "deployments"): WORKLOAD_PATH,
    ("apps", "replicasets"): WORKLOAD_PATH,
    ("apps", "statefulsets"): WORKLOAD_PATH,
    ("apps", "daemonsets"): WORKLOAD_PATH,
    # A StatefulSet's or DaemonSet's saved revision: ``rollout undo`` copies it back into the workload.
    ("apps", "controllerrevisions"): ("data.spec.template.spec",),
    ("batch", "jobs"): WORKLOAD_PATH,
    ("batch", "cronjobs"): ("spec.jobTemplate.spec.template.spec",),
    # Well-known custom kinds (their controllers create the pods under their own identity).
    ("argoproj.io", "rollouts"): WORKLOAD_PATH,
    ("argoproj.io", "workflows"): ("spec", "spec.templates[*]", "spec.templates[*].containerSet"),
    ("argoproj.io", "workflowtemplates"): ("spec", "spec.templates[*]", "spec.templates[*].containerSet"),
    ("argoproj.io", "clusterworkflowtemplates"): (
        "spec",
        "spec.templates[*]",
        "spec.templates[*].containerSet",
    ),
    ("argoproj.io", "cronworkflows"): (
        "spec.workflowSpec",
        "spec.workflowSpec.templates[*]",
        "spec.workflowSpec.templates[*].containerSet",
    ),
    ("serving.knative.dev", "services"): WORKLOAD_PATH,
    ("serving.knative.dev", "configurations"): WORKLOAD_PATH,
    ("serving.knative.dev", "revisions"): ("spec",),
    ("tekton.dev", "tasks"): ("spec",),
    ("tekton.dev", "taskruns"): ("spec", "spec.podTemplate", "spec.taskSpec"),
    ("tekton.dev", "pipelines"): ("spec.tasks[*].taskSpec", "spec.finally[*].taskSpec"),
    ("tekton.dev", "pipelineruns"): (
        "spec",
        "spec.podTemplate",
        "spec.taskRunTemplate",
        "spec.taskRunTemplate.podTemplate",
        "spec.pipelineSpec.tasks[*].taskSpec",
        "spec.pipelineSpec.finally[*].taskSpec",
    ),
    ("jobset.x-k8s.io", "jobsets"): ("spec.replicatedJobs[*].template.spec.template.spec",),
}

# Where the opt-in shape detector looks in a kind no table knows; a place counts if it has containers.
DETECT_PATHS = (
    "spec.template.spec",
    "spec.jobTemplate.spec.template.spec",
    "spec.podTemplate.spec",
    "spec.podSpec",
    "spec",
)

# Subresources whose write carries a whole Pod that may add containers.
POD_SUBRESOURCES = frozenset({"", "ephemeralcontainers"})

CONTAINER_LISTS = (
    ("initContainers", "init container"),
    ("containers", "container"),
    ("ephemeralContainers", "ephemeral container"),
    ("sidecars", "sidecar"),  # Tekton, Argo Workflows
    ("steps", "step"),  # Tekton
)
# Fields that hold one container (Argo Workflows templates, Tekton's stepTemplate).
SINGLE_CONTAINERS = (("container", "container"), ("script", "script"), ("stepTemplate", "step template"))
# Lists that have the pod's own type wherever they appear: any other type is malformed (``safe``).
# The custom kinds' extras are read leniently, because the same names mean other things elsewhere
# (an Argo template's ``steps`` is a list of lists of steps, not containers).
STRICT_LISTS = frozenset({"initContainers", "containers", "ephemeralContainers", "volumes", "workspaces"})

_SEGMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\[\*\])?$")
EACH = "[*]"


@functools.lru_cache(maxsize=1024)  # a policy's paths are few and parsed on every pod-shaped review
def parse_path(path: str) -> tuple[str, ...]:
    """``"spec.templates[*]"`` -> ``("spec", "templates", "[*]")``; ValueError when malformed."""
    keys: list[str] = []
    for segment in path.split("."):
        if not _SEGMENT.match(segment):
            raise ValueError(
                f"{path!r}: segments are field names, optionally ending in [*] (e.g. spec.items[*])"
            )
        if segment.endswith(EACH):
            keys.extend((segment[: -len(EACH)], EACH))
        else:
            keys.append(segment)
    return tuple(keys)


@dataclass(frozen=True, slots=True)
class PodSpec:
    """A pod spec found in an object, with the field path that leads to it (for messages)."""

    path: str  # e.g. "spec.template.spec" or "spec.templates[2]"
    spec: Mapping[str, Any]
    keys: tuple[str | int, ...] = ()  # the same path as keys and list indexes (for the old object)
    strict: bool = True  # a listed kind (read through ``safe``); False: found by the shape detector
    # ``containers()`` and ``volumes()`` of this spec, kept once a walk reached the end: three
    # families walk them in every review. Only a finished walk is kept, so one stopped early or by a
    # malformed item leaves nothing, and the next walk meets the same items and the same error.
    walked: dict[str, tuple[Any, ...]] = dataclasses.field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Container:
    label: str  # e.g. 'init container "setup"' - what a message should call it
    field: str  # e.g. "spec.template.spec.initContainers[0]"
    spec: Mapping[str, Any]


def _show(keys: tuple[str | int, ...]) -> str:
    text = ""
    for key in keys:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else key)
    return text


def _find(
    obj: Any, pattern: tuple[str, ...], done: tuple[str | int, ...] = (), strict: bool = True
) -> Iterator[PodSpec]:
    """The pod specs at ``pattern``; ``strict``: a value of the wrong type on the way is Malformed."""
    if obj is None:
        return
    if not pattern:
        if isinstance(obj, Mapping):
            yield PodSpec(_show(done), obj, done, strict)
        elif strict:
            safe.mapping(obj, _show(done))
        return
    key, rest = pattern[0], pattern[1:]
    if key == EACH:
        if isinstance(obj, list):
            for index, item in enumerate(safe.items(obj, _show(done)) if strict else obj):
                yield from _find(item, rest, (*done, index), strict)
        elif strict:
            safe.items(obj, _show(done))
    elif isinstance(obj, Mapping):
        if key in obj:
            yield from _find(obj[key], rest, (*done, key), strict)
    elif strict:
        safe.mapping(obj, _show(done))


def dig(obj: Any, keys: tuple[str | int, ...]) -> Any:
    """The value at ``keys`` (dict keys and list indexes), or None if the path is not there."""
    for key in keys:
        if isinstance(key, int):
            obj = obj[key] if isinstance(obj, list) and key < len(obj) else None
        else:
            obj = obj.get(key) if isinstance(obj, Mapping) else None
    return obj


def template_paths(group: str, resource: str, ctx: base.Context) -> tuple[str, ...]:
    """The built-in paths of a kind plus the ones the policy adds."""
    return TEMPLATE_PATHS.get((group, resource), ()) + ctx.pod_templates.get((group, resource), ())


def _has_containers(spec: Mapping[str, Any]) -> bool:
    found = spec.get("containers")
    return isinstance(found, list) and all(isinstance(item, Mapping) for item in found)


def _at(obj: attributes.Object, paths: tuple[str, ...], strict: bool = True) -> Iterator[PodSpec]:
    for path in paths:
        yield from _find(obj, parse_path(path), strict=strict)


def pod_specs(request: attributes.AdmissionRequest, ctx: base.Context) -> tuple[PodSpec, ...]:
    """Every pod spec a CREATE/UPDATE writes, wherever it sits; empty for anything else.

    Three guard families ask for the same request in a row, so the last answer is kept (by identity
    of the request and context: both are immutable, and holding them keeps their ids unique).
    """
    last_request, last_ctx, last_found = _LAST[0]
    if last_request is request and last_ctx is ctx:
        return last_found
    found = _pod_specs(request, ctx)
    _LAST[0] = (request, ctx, found)  # one tuple, swapped whole: safe if two threads judge at once
    return found


_LAST: list[tuple[object, object, tuple[PodSpec, ...]]] = [(None, None, ())]


def _pod_specs(request: attributes.AdmissionRequest, ctx: base.Context) -> tuple[PodSpec, ...]:
    if request.operation not in ("CREATE", "UPDATE") or request.object is None:
        return ()
    group, resource = request.resource.group, request.resource.resource
    paths = template_paths(group, resource, ctx)
    if not paths:
        if not ctx.detect_pod_templates or request.sub_resource:
            return ()
        found = _at(request.object, DETECT_PATHS, strict=False)
        return tuple(pod for pod in found if _has_containers(pod.spec))
    allowed_sub = POD_SUBRESOURCES if (group, resource) == ("", "pods") else frozenset({""})
    if request.sub_resource not in allowed_sub:
        return ()
    return tuple(_at(request.object, paths))


@dataclass(frozen=True, slots=True)
class Volume:
    label: str  # e.g. 'volume "creds"'
    field: str  # e.g. "spec.template.spec.volumes[0]"
    spec: Mapping[str, Any]


# Lists of volume-shaped sources: Tekton's workspace bindings take ``secret``, ``projected``, ``csi``…
VOLUME_LISTS = (("volumes", "volume"), ("workspaces", "workspace"))


def _items(pod: PodSpec, list_name: str) -> Iterator[tuple[str, int, Mapping[str, Any], str]]:
    """``(field, index, item, name)`` of a list in the pod spec: ``safe`` for STRICT_LISTS (wrong
    types and huge lists raise), the rest skip what is not an object."""
    field = f"{pod.path}.{list_name}"
    if pod.strict and list_name in STRICT_LISTS:
        for index, item in safe.mappings(pod.spec.get(list_name), field):
            yield field, index, item, safe.text(item.get("name"), f"{field}[{index}].name") or f"#{index}"
        return
    found = pod.spec.get(list_name)
    for index, item in enumerate(found if isinstance(found, list) else ()):
        if isinstance(item, Mapping):
            yield field, index, item, str(item.get("name", f"#{index}"))


def _remembered(pod: PodSpec, what: str, walk: Callable[[PodSpec], Iterator[T]]) -> Iterator[T]:
    done = pod.walked.get(what)
    if done is not None:
        yield from done
        return
    seen = []
    for item in walk(pod):
        seen.append(item)
        yield item
    pod.walked[what] = tuple(seen)


def volumes(pod: PodSpec) -> Iterator[Volume]:
    """Every volume of the pod, labelled for messages."""
    return _remembered(pod, "volumes", _volumes)


def containers(pod: PodSpec) -> Iterator[Container]:
    """Every container of every kind, labelled for messages."""
    return _remembered(pod, "containers", _containers)


def _volumes(pod: PodSpec) -> Iterator[Volume]:
    for list_name, label in VOLUME_LISTS:
        for field, index, item, name in _items(pod, list_name):
            yield Volume(f'{label} "{name}"', f"{field}[{index}]", item)


def _containers(pod: PodSpec) -> Iterator[Container]:
    for list_name, label in CONTAINER_LISTS:
        for field, index, item, name in _items(pod, list_name):
            yield Container(f'{label} "{name}"', f"{field}[{index}]", item)
    for key, label in SINGLE_CONTAINERS:
        single: Any = pod.spec.get(key)
        if pod.strict and single is not None:
            single = safe.mapping(single, f"{pod.path}.{key}")
        if isinstance(single, Mapping):
            yield Container(f'{label} "{single.get("name", key)}"', f"{pod.path}.{key}", single)


def previous(request: attributes.AdmissionRequest, pod: PodSpec) -> PodSpec | None:
    """The same place in the object before an UPDATE; None on CREATE, without an old object, or
    when the old object had no pod spec there."""
    if request.operation != "UPDATE" or request.old_object is None:
        return None
    old = dig(request.old_object, pod.keys)
    return PodSpec(pod.path, old, pod.keys, pod.strict) if isinstance(old, Mapping) else None


def spec_unchanged(request: attributes.AdmissionRequest, pod: PodSpec) -> bool:
    """True when an UPDATE leaves this pod spec exactly as it was (scale, labels, rollout restart).

    Such a write cannot make the pods run other code, so what they already run as or read stays
    the responsibility of whoever wrote the spec.
    """
    old = previous(request, pod)
    return old is not None and old.spec == pod.spec


RESOURCE_FIELDS = ("resources", "resizePolicy")


def _without_resources(spec: Mapping[str, Any]) -> dict[str, Any]:
    stripped = {k: v for k, v in spec.items() if k not in RESOURCE_FIELDS}
    for list_name, _ in CONTAINER_LISTS:
        items = spec.get(list_name)
        if isinstance(items, list):
            stripped[list_name] = [
                {k: v for k, v in item.items() if k not in RESOURCE_FIELDS}
                if isinstance(item, Mapping)
                else item
                for item in items
            ]
    return stripped


def only_resources_changed(request: attributes.AdmissionRequest, pod: PodSpec) -> bool:
    """True when an UPDATE changes at most requests/limits (``kubectl set resources``) in this spec.

    More memory for an OOM-killed workload runs no new code and changes no identity; images,
    commands, args, env, volumes and the account are all still compared.
    """
    old = previous(request, pod)
    return old is not None and _without_resources(old.spec) == _without_resources(pod.spec)


def admission_rules(
    extra: Mapping[tuple[str, str], tuple[str, ...]] | None = None,
    detect: bool = False,
    operations: tuple[str, ...] = ("CREATE", "UPDATE"),
) -> tuple[base.AdmissionRule, ...]:
    """Webhook rules that route every write carrying a pod spec: the table above, the policy's
    kinds, or every resource when the shape detector is on (it must see kinds no table knows)."""
    if detect:
        core = [rule for rule in admission_rules(extra, False, operations) if rule.api_groups == ("",)]
        return (base.AdmissionRule(api_groups=("*",), resources=("*",), operations=operations), *core)
    by_group: dict[str, list[str]] = {}
    for group, resource in (*TEMPLATE_PATHS, *(extra or {})):
        resources = by_group.setdefault(group, [])
        if resource not in resources:
            resources.append(resource)
    by_group[""].extend(f"pods/{sub}" for sub in sorted(POD_SUBRESOURCES) if sub)
    return tuple(
        base.AdmissionRule(api_groups=(group,), resources=tuple(resources), operations=operations)
        for group, resources in sorted(by_group.items())
    )
