"""``guard-tamper``: an agent may not switch the guard off or weaken the controls it relies on.

The cheapest way around any guard is to remove it: scale its Deployment to zero, delete its Service
or TLS Secret, edit its policy ConfigMap, delete the namespace it runs in, strip its RBAC, delete its
ValidatingWebhookConfiguration, or relabel a namespace so Pod Security admission stops enforcing.

Admission sees the first group: anything in the guard's namespace (``guardNamespace`` in the policy),
the Namespace object itself, the guard's ClusterRole/ClusterRoleBinding, and Namespace labels and
annotations that are security controls (``pod-security.kubernetes.io/*`` always, plus the ones the
policy names). The apiserver never sends admissionregistration.k8s.io objects (webhook
configurations, admission policies and their bindings) to webhooks, so those are judged on the
authorization side only, together with the same namespace and RBAC objects as defence in depth.

Two pieces of cluster machinery can switch the guard off or read what it protects without touching
either: an ``APIService`` (apiregistration.k8s.io) routes a whole API group to a backend, so
repointing ``v1.admissionregistration.k8s.io`` at an agent's Service feeds the apiserver an empty
webhook list, and repointing ``v1.`` reads every core write; any agent write to APIServices is denied
at admission (which does see them) and at ``/authorize``. A CustomResourceDefinition's conversion
webhook receives every stored object of the kind at a URL its author chose, so an agent may not
create a CRD with one or add or change one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pydantic

from webhook import attributes, safe
from webhook.guards import base

RBAC_GROUP = "rbac.authorization.k8s.io"
ADMISSION_GROUP = "admissionregistration.k8s.io"
AGGREGATION_GROUP = "apiregistration.k8s.io"
APIEXTENSIONS_GROUP = "apiextensions.k8s.io"
# Access reviews (LocalSubjectAccessReview) only ask a question; they change nothing.
READ_ONLY_GROUPS = frozenset({"authorization.k8s.io"})

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
# Subresources that open a stream into a pod or service (exec reads files, kills processes).
CONNECT_SUBRESOURCES = frozenset(
    {"pods/exec", "pods/attach", "pods/portforward", "pods/proxy", "services/proxy"}
)

PSA_PREFIX = "pod-security.kubernetes.io/"
PSA_MODES = ("enforce", "audit", "warn")
PSA_WEAKEST = "privileged"

ACTIONS = {"CREATE": "creating", "UPDATE": "changing", "DELETE": "deleting", "CONNECT": "connecting to"}
ASK = "ask a human operator to change the guard"
RUNS_THERE = "kube-agent-guard runs there, and changing anything in it can switch the guard off"


def _patterns(value: tuple[str, ...]) -> tuple[str, ...]:
    for item in value:
        if not item or "*" in item[:-1]:
            raise ValueError(f"{item!r}: a key, or a prefix ending in '*' (e.g. 'example.com/*')")
    return value


class Settings(base.GuardSettings):
    """The guard's cluster-scoped RBAC object names and the Namespace keys that are security controls.

    ``protectedLabels`` / ``protectedAnnotations`` entries are exact keys or prefixes ending in ``*``;
    ``pod-security.kubernetes.io/*`` labels are always protected.
    """

    cluster_roles: tuple[str, ...] = ("agent-guard",)
    cluster_role_bindings: tuple[str, ...] = ("agent-guard",)
    protected_labels: tuple[str, ...] = ()
    protected_annotations: tuple[str, ...] = ()

    @pydantic.field_validator("protected_labels", "protected_annotations")
    @classmethod
    def _prefix_patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _patterns(value)


def _matches(patterns: tuple[str, ...], key: str) -> bool:
    return any(key.startswith(p[:-1]) if p.endswith("*") else key == p for p in patterns)


def _metadata_map(obj: attributes.Object | None, field: str) -> Mapping[str, Any]:
    metadata = safe.mapping(obj.get("metadata") if obj is not None else None, "metadata")
    return safe.string_map(metadata.get(field), f"metadata.{field}")


def _name(request: attributes.AdmissionRequest) -> str:
    """``request.name``, or the object's own name (a CREATE may carry it only in the object)."""
    if request.name:
        return request.name
    target = request.target
    metadata = safe.mapping(target.get("metadata") if target is not None else None, "metadata")
    return safe.text(metadata.get("name"), "metadata.name")


# --- the guard's namespace and RBAC ------------------------------------------------------------------


def _in_guard_namespace(request: attributes.AdmissionRequest, ctx: base.Context) -> bool:
    if request.resource.group in READ_ONLY_GROUPS:
        return False
    if request.resource.group == "" and request.resource.resource == "namespaces":
        return _name(request) == ctx.guard_namespace
    return request.namespace == ctx.guard_namespace


def _guard_rbac_names(settings: Settings, group: str, resource: str) -> tuple[str, ...]:
    """The guard's own object names for an RBAC resource (empty for every other resource)."""
    if group != RBAC_GROUP:
        return ()
    if resource == "clusterroles":
        return settings.cluster_roles
    if resource == "clusterrolebindings":
        return settings.cluster_role_bindings
    return ()


def _guard_rbac_object(request: attributes.AdmissionRequest, settings: Settings) -> bool:
    names = _guard_rbac_names(settings, request.resource.group, request.resource.resource)
    return _name(request) in names


def _what(request: attributes.AdmissionRequest) -> str:
    kind = request.kind or request.resource.resource
    sub = f" ({request.sub_resource})" if request.sub_resource else ""
    return f'{kind} "{_name(request)}"{sub}'


# --- Namespace security labels and annotations -----------------------------------------------------


def _weak_psa_labels(labels: Mapping[str, Any]) -> Iterator[str]:
    for mode in PSA_MODES:
        key = f"{PSA_PREFIX}{mode}"
        if str(labels.get(key, "")).lower() == PSA_WEAKEST:
            yield key


def _key_findings(
    request: attributes.AdmissionRequest, field: str, patterns: tuple[str, ...], creating: bool
) -> Iterator[str]:
    new = _metadata_map(request.object, field)
    namespace = f'Namespace "{_name(request)}"'
    if creating:
        for key in sorted(str(k) for k in new if _matches(patterns, str(k))):
            yield (
                f'{namespace} sets metadata.{field}["{key}"]="{new[key]}", which the policy names as a '
                f"security control; agents may not set it, create the namespace without it or {ASK}"
            )
        return
    old = _metadata_map(request.old_object, field)
    for key in sorted({str(k) for k in (*old, *new)}):
        if not _matches(patterns, key) or old.get(key) == new.get(key):
            continue
        if key not in new:
            change = f'removes metadata.{field}["{key}"] (was "{old[key]}")'
        elif key not in old:
            change = f'adds metadata.{field}["{key}"]="{new[key]}"'
        else:
            change = f'changes metadata.{field}["{key}"] from "{old[key]}" to "{new[key]}"'
        yield (
            f"{namespace}: the update {change}, a security control that agents may not change; "
            f"keep the current value or {ASK}"
        )


def _namespace_findings(request: attributes.AdmissionRequest, settings: Settings) -> Iterator[str]:
    if request.operation == "CREATE":
        labels = _metadata_map(request.object, "labels")
        for key in _weak_psa_labels(labels):
            if _matches(settings.protected_labels, key):
                continue  # reported below as a protected key
            yield (
                f'Namespace "{_name(request)}" sets metadata.labels["{key}"]="{labels[key]}", which '
                "switches Pod Security admission off for it; agents may create namespaces with the "
                f'"baseline" or "restricted" level, or none (the cluster default); {ASK}'
            )
        yield from _key_findings(request, "labels", settings.protected_labels, creating=True)
        yield from _key_findings(request, "annotations", settings.protected_annotations, creating=True)
    elif request.operation == "UPDATE":
        protected = (f"{PSA_PREFIX}*", *settings.protected_labels)
        yield from _key_findings(request, "labels", protected, creating=False)
        yield from _key_findings(request, "annotations", settings.protected_annotations, creating=False)


# --- the checks ------------------------------------------------------------------------------------


def _conversion_webhook(obj: attributes.Object | None) -> Mapping[str, Any] | None:
    spec = safe.mapping(obj.get("spec") if obj is not None else None, "spec")
    conversion = safe.mapping(spec.get("conversion"), "spec.conversion")
    if not conversion:
        return None
    if conversion.get("strategy") != "Webhook" and not isinstance(conversion.get("webhook"), Mapping):
        return None
    webhook = conversion.get("webhook")
    return webhook if isinstance(webhook, Mapping) else {}


def _webhook_target(client: Any) -> str:
    """`` (https://…)`` or `` (service ns/name)`` for a message; empty when neither is given."""
    if not isinstance(client, Mapping):
        return ""
    if isinstance(client.get("url"), str):
        return f" ({client['url']})"
    service = client.get("service")
    if isinstance(service, Mapping):
        return f" (service {service.get('namespace', '?')}/{service.get('name', '?')})"
    return ""


def _machinery(request: attributes.AdmissionRequest, action: str) -> Iterator[str]:
    group, resource = request.resource.group, request.resource.resource
    if group == AGGREGATION_GROUP and resource == "apiservices":
        yield (
            f"{action} {_what(request)} is not allowed for agents: an APIService decides which backend "
            "serves a whole API group, so changing one can intercept requests or switch off cluster "
            f"machinery (including admission webhooks like this guard); {ASK}"
        )
    elif group == APIEXTENSIONS_GROUP and resource == "customresourcedefinitions":
        if request.operation not in ("CREATE", "UPDATE") or request.sub_resource:
            return
        new = _conversion_webhook(request.object)
        if new is None or (request.operation == "UPDATE" and new == _conversion_webhook(request.old_object)):
            return
        where = _webhook_target(new.get("clientConfig"))
        yield (
            f"{action} {_what(request)} with a conversion webhook{where} is not allowed for agents: the "
            "apiserver would send every stored object of that kind to it; use conversion strategy "
            f"None, or {ASK}"
        )


def check(request: attributes.AdmissionRequest, settings: Settings, ctx: base.Context) -> Iterator[str]:
    action = ACTIONS.get(request.operation, request.operation.lower())
    yield from _machinery(request, action)
    if _in_guard_namespace(request, ctx):
        yield (
            f'{action} {_what(request)} in the guard\'s namespace "{ctx.guard_namespace}" is not allowed '
            f"for agents: {RUNS_THERE} (its webhook, certificates and policy); {ASK}"
        )
    elif _guard_rbac_object(request, settings):
        yield (
            f"{action} {_what(request)} is not allowed for agents: it is the guard's own RBAC, and "
            f"without it the guard cannot work; {ASK}"
        )
    if request.resource.group == "" and request.resource.resource == "namespaces":
        yield from _namespace_findings(request, settings)


def check_access(request: attributes.AccessRequest, settings: Settings, ctx: base.Context) -> Iterator[str]:
    if not request.is_resource_request or request.group in READ_ONLY_GROUPS:
        return
    verb = request.verb.lower()
    path = request.resource_path
    name = f' "{request.name}"' if request.name else ""
    if verb in WRITE_VERBS and request.group == ADMISSION_GROUP:
        yield (
            f"{verb} on {ADMISSION_GROUP} {path}{name} is not allowed for agents: webhook configurations "
            "and admission policies decide what the cluster accepts, including this guard's own "
            f"registration; {ASK}"
        )
        return
    if verb in WRITE_VERBS and request.group == AGGREGATION_GROUP:
        yield (
            f"{verb} on {AGGREGATION_GROUP} {path}{name} is not allowed for agents: APIServices decide "
            "which backend serves each API group, and changing one can intercept requests or switch off "
            f"cluster machinery, including this guard's webhook; {ASK}"
        )
        return
    own_namespace = request.namespace == ctx.guard_namespace or (
        request.group == "" and request.resource == "namespaces" and request.name == ctx.guard_namespace
    )
    if own_namespace and (verb in WRITE_VERBS or path in CONNECT_SUBRESOURCES):
        yield (
            f'{verb} on {path}{name} in the guard\'s namespace "{ctx.guard_namespace}" is not allowed for '
            f"agents: {RUNS_THERE}; {ASK}"
        )
        return
    guarded = _guard_rbac_names(settings, request.group, request.resource)
    hits_guard = request.name in guarded or (verb == "deletecollection" and not request.name)
    if guarded and hits_guard and verb in WRITE_VERBS and not request.sub_resource:
        yield (
            f"{verb} on {path}{name or ' (every object)'} is not allowed for agents: it would change the "
            f"guard's own RBAC ({', '.join(guarded)}); {ASK}"
        )


FAMILY = base.Family(
    id="guard-tamper",
    summary=(
        "Denies agents any change in the guard's namespace, to the guard's RBAC, to admission "
        "registration objects, to APIServices, CRD conversion webhooks, and Namespace security "
        "labels (pod-security.kubernetes.io/*)."
    ),
    settings=Settings,
    admission=check,
    access=check_access,
    # Anything may live in the guard's namespace, and webhook rules cannot select a namespace, so
    # every agent write is routed here (matchConditions keep everyone else away).
    rules=(
        base.AdmissionRule(
            api_groups=("*",), resources=("*/*",), operations=("CREATE", "UPDATE", "DELETE", "CONNECT")
        ),
    ),
)
