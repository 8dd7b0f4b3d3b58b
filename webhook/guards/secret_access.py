"""``secret-access``: an agent may not read Secrets, mint tokens, or reach into running workloads.

Secrets are the credentials of everything else, and an agent bound to cluster-admin has many doors
to them besides ``get``. Admission closes the doors it sees:

- TokenRequest (CREATE ``serviceaccounts/token``) and legacy token Secrets (type
  ``kubernetes.io/service-account-token``, CREATE or an UPDATE that re-points one), both of which
  make the control plane mint a credential for an account that is not an agent; bootstrap token
  Secrets (``bootstrap.kubernetes.io/token``), a bearer credential the agent would know;
- UPDATE of a Secret: the apiserver answers an update or patch with the whole object, data included,
  so a harmless-looking label patch is a read;
- CONNECT on exec/attach/portforward/proxy: inside a container sit its mounted Secrets and token;
- pod specs (every template, via ``podspec``) that hand a Secret to a pod: ``secret`` and projected
  ``secret`` volumes, ``env[].valueFrom.secretKeyRef``, ``envFrom[].secretRef``, and the volume
  plugins that authenticate with a Secret on the pod's behalf (CSI ``nodePublishSecretRef``, cephfs,
  rbd, iscsi, flexVolume, cinder, scaleIO, storageos ``secretRef``, azureFile ``secretName``), and
  inline CSI volumes of secret-store drivers (``secrets-store.csi.k8s.io``: Vault, cloud secret
  managers) unless the policy allows the driver (``allowedCsiDrivers``).

``imagePullSecrets`` are allowed: the kubelet uses them to pull the image and the pod never sees the
data (the worst case is pulling a private image the namespace could already pull). An UPDATE that
leaves the pod spec unchanged (scale, labels, ``rollout restart``) or changes only container
resources (``kubectl set resources``) is allowed even if the pods read Secrets; one that changes
anything else is judged in full, since a new image or command could read what the old one was
trusted with.

Reads never reach admission, so the authorization side (``access``) denies get/list/watch and the
other verbs whose replies carry Secret data (update, patch, deletecollection), any verb on the
connect subresources, and ``create`` on ``serviceaccounts/token``. A list or watch the apiserver
narrowed to one object (``fieldSelector=metadata.name=X``) arrives with that name and counts as a
read of X; a namespace allow-listed with ``"*"`` may be read whole. Pod logs are open by default;
``denyPodLogs`` names namespaces whose logs may carry credentials.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pydantic

from webhook import attributes, podspec, safe
from webhook.guards import base

TOKEN_SECRET_TYPE = "kubernetes.io/service-account-token"  # noqa: S105 - a type name, not a secret
BOOTSTRAP_TOKEN_TYPE = "bootstrap.kubernetes.io/token"  # noqa: S105 - a type name, not a secret
# CSI drivers that fetch secrets from an external store into the pod (Vault, AWS, Azure, GCP
# providers all plug into the Secrets Store CSI driver).
SECRET_STORE_DRIVERS = ("secrets-store.csi.k8s.io", "secrets-store.csi.x-k8s.io")
ALL = "*"
SETTING = "guards.secret-access.allowedSecrets"

# (resource, subresource) -> (what the caller tries, the object kind, why it exposes credentials)
CONNECT: dict[tuple[str, str], tuple[str, str, str]] = {
    ("pods", "exec"): ("running a command in", "pod", "it reaches the container's Secrets and token"),
    ("pods", "attach"): ("attaching to", "pod", "it reaches the container's Secrets and token"),
    ("pods", "portforward"): ("port-forwarding to", "pod", "it opens the pod's unauthenticated ports"),
    ("pods", "proxy"): ("proxying to", "pod", "it opens the pod's unauthenticated ports"),
    ("services", "proxy"): ("proxying to", "service", "it opens the service's unauthenticated ports"),
    ("nodes", "proxy"): (
        "proxying to the kubelet of",
        "node",
        "the kubelet API runs commands in every pod on the node and reads their tokens",
    ),
}
CONNECT_ADVICE = "use read-only tools (get, describe, pods/log) or ask a human operator"

# Pod volume sources that give a pod a Secret's data or act with its credentials:
# source -> (path to the object holding the reference, key of the name in it)
VOLUME_SECRETS: dict[str, tuple[tuple[str, ...], str]] = {
    "secret": ((), "secretName"),
    "azureFile": ((), "secretName"),
    "csi": (("nodePublishSecretRef",), "name"),
    "cephfs": (("secretRef",), "name"),
    "cinder": (("secretRef",), "name"),
    "flexVolume": (("secretRef",), "name"),
    "iscsi": (("secretRef",), "name"),
    "rbd": (("secretRef",), "name"),
    "scaleIO": (("secretRef",), "name"),
    "storageos": (("secretRef",), "name"),
}

READ_VERBS = frozenset({"get", "list", "watch"})
# Replies that carry Secret data: update/patch return the object, deletecollection the deleted list.
LEAKING_VERBS = frozenset({"update", "patch", "deletecollection"})
NAMED_VERBS = frozenset({"get", "list", "watch", "update", "patch"})


class Settings(base.GuardSettings):
    """``allowedSecrets``: Secret names per namespace that agents may read and hand to workloads.

    ``"*"`` as a name allows every Secret of that namespace (and listing it). Default: none.
    """

    allowed_secrets: base.NamesPerNamespace = pydantic.Field(default_factory=dict)
    # Secret-store CSI drivers whose inline volumes agents may use (their secrets are not secret).
    allowed_csi_drivers: tuple[str, ...] = ()
    # Namespaces whose pod logs agents may not read ("*": every namespace). Default: logs are open.
    deny_pod_logs: tuple[str, ...] = ()

    def allows(self, namespace: str, name: str) -> bool:
        names = self.allowed_secrets.get(namespace, ())
        return ALL in names or (bool(name) and name in names)

    def allows_all(self, namespace: str) -> bool:
        return ALL in self.allowed_secrets.get(namespace, ())

    def denies_logs(self, namespace: str) -> bool:
        return ALL in self.deny_pod_logs or (bool(namespace) and namespace in self.deny_pod_logs)


@dataclass(frozen=True, slots=True)
class SecretRef:
    """One place in a pod spec that names a Secret."""

    owner: str  # 'container "app"' or 'volume "creds"'
    field: str  # full field path, e.g. spec.containers[0].env[1].valueFrom.secretKeyRef
    name: str


# Wrong JSON types raise safe.Malformed (a finding), oversized lists safe.TooLarge.
_text = safe.text
_items = safe.mappings


def secret_store_volumes(pod: podspec.PodSpec, allowed: tuple[str, ...]) -> Iterator[tuple[str, str, str]]:
    """``(owner, field, driver)`` of every inline CSI volume whose driver reads an external secret store."""
    for volume in podspec.volumes(pod):
        csi = safe.mapping(volume.spec.get("csi"), f"{volume.field}.csi")
        driver = _text(csi.get("driver"), f"{volume.field}.csi.driver")
        if driver in SECRET_STORE_DRIVERS and driver not in allowed:
            yield volume.label, f"{volume.field}.csi.driver", driver


def _volume_refs(pod: podspec.PodSpec) -> Iterator[SecretRef]:
    for volume in podspec.volumes(pod):
        owner, prefix = volume.label, volume.field
        for source, (path, key) in VOLUME_SECRETS.items():
            if volume.spec.get(source) is None:
                continue
            holder = safe.mapping(volume.spec.get(source), f"{prefix}.{source}")
            for depth, step in enumerate(path):
                holder = safe.mapping(holder.get(step), ".".join((prefix, source, *path[: depth + 1])))
            if holder:
                field = ".".join((prefix, source, *(path or (key,))))
                yield SecretRef(owner, field, _text(holder.get(key)))
        projected = safe.mapping(volume.spec.get("projected"), f"{prefix}.projected")
        for position, item in _items(projected.get("sources"), f"{prefix}.projected.sources"):
            secret = item.get("secret")
            if secret is not None:
                secret = safe.mapping(secret, f"{prefix}.projected.sources[{position}].secret")
                field = f"{prefix}.projected.sources[{position}].secret"
                yield SecretRef(owner, field, _text(secret.get("name")))


def _container_refs(pod: podspec.PodSpec) -> Iterator[SecretRef]:
    for container in podspec.containers(pod):
        for index, env in _items(container.spec.get("env")):
            field = f"{container.field}.env[{index}].valueFrom.secretKeyRef"
            value_from = safe.mapping(env.get("valueFrom"), f"{container.field}.env[{index}].valueFrom")
            ref = value_from.get("secretKeyRef")
            if ref is not None:
                ref = safe.mapping(ref, field)
                yield SecretRef(container.label, field, _text(ref.get("name")))
        for index, env_from in _items(container.spec.get("envFrom")):
            field = f"{container.field}.envFrom[{index}].secretRef"
            ref = env_from.get("secretRef")
            if ref is not None:
                ref = safe.mapping(ref, field)
                yield SecretRef(container.label, field, _text(ref.get("name")))


def secret_refs(pod: podspec.PodSpec) -> Iterator[SecretRef]:
    """Every reference in a pod spec that exposes a Secret to the pod (see the module docstring)."""
    yield from _volume_refs(pod)
    yield from _container_refs(pod)


def _metadata(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return safe.mapping((obj or {}).get("metadata"), "metadata")


def _namespace(request: attributes.AdmissionRequest) -> str:
    return request.namespace or _text(_metadata(request.object).get("namespace"))


def _object_name(request: attributes.AdmissionRequest) -> str:
    metadata = _metadata(request.object)
    return request.name or _text(metadata.get("name")) or _text(metadata.get("generateName"))


def _annotation(obj: Mapping[str, Any], key: str) -> str:
    annotations = safe.string_map(_metadata(obj).get("annotations"), "metadata.annotations")
    return annotations.get(key, "")


def _pod_refs(request: attributes.AdmissionRequest, settings: Settings, ctx: base.Context) -> Iterator[str]:
    for pod in podspec.pod_specs(request, ctx):
        if not podspec.only_resources_changed(request, pod):
            yield from _one_pod(request, pod, settings)


def _one_pod(request: attributes.AdmissionRequest, pod: podspec.PodSpec, settings: Settings) -> Iterator[str]:
    namespace = _namespace(request)
    old = podspec.previous(request, pod)
    existing = {(r.field, r.name) for r in secret_refs(old)} if old is not None else set()
    for ref in secret_refs(pod):
        if settings.allows(namespace, ref.name):
            continue
        target = f'Secret "{ref.name}"' if ref.name else "a Secret without a name"
        allow = f'allow-list it in {SETTING}["{namespace}"]'
        if (ref.field, ref.name) in existing:
            yield (
                f"{ref.owner} ({ref.field}) references {target} and this update changes the pod spec, "
                "which would let new code read it; agents may only scale, label, resize or restart "
                f"workloads that read Secrets: ask a human operator, or an operator can {allow}"
            )
        else:
            yield (
                f"{ref.owner} ({ref.field}) references {target}; agents may not hand Secret data to "
                "workloads: remove the reference (put non-secret settings in a ConfigMap), or an "
                f"operator can {allow}"
            )
    for owner, field, driver in secret_store_volumes(pod, settings.allowed_csi_drivers):
        yield (
            f'{owner} ({field}) mounts secrets from an external store through the CSI driver "{driver}"; '
            "agents may not hand secret data to workloads: remove the volume, or an operator can "
            "allow the driver in guards.secret-access.allowedCsiDrivers"
        )


def _secret_write(request: attributes.AdmissionRequest, settings: Settings) -> Iterator[str]:
    if request.resource.resource != "secrets" or request.sub_resource:
        return
    if request.operation not in ("CREATE", "UPDATE") or request.object is None:
        return
    namespace, name = _namespace(request), _object_name(request)
    objects = [request.object, request.old_object or {}]
    types = [_text(obj.get("type"), "type") for obj in objects]
    if BOOTSTRAP_TOKEN_TYPE in types:
        yield (
            f'{"creating" if request.operation == "CREATE" else "updating"} Secret "{name}" of type '
            f"{BOOTSTRAP_TOKEN_TYPE} is not allowed for agents: in kube-system it is a bearer token the "
            "apiserver accepts for joining nodes (system:bootstrappers), a credential the agent would "
            "know; ask a human operator to create join tokens (kubeadm token create)"
        )
    elif TOKEN_SECRET_TYPE in types:
        account = _annotation(request.object, "kubernetes.io/service-account.name")
        verb = "creating" if request.operation == "CREATE" else "updating"
        yield (
            f'{verb} Secret "{name}" of type {TOKEN_SECRET_TYPE} (for ServiceAccount "{account}") is not '
            "allowed for agents: the control plane fills it with a non-expiring token for that account; "
            "use a ServiceAccount without a token, or ask a human operator"
        )
    elif request.operation == "UPDATE" and not settings.allows(namespace, name):
        yield (
            f'updating Secret "{name}" in namespace "{namespace}" is not allowed for agents: the reply '
            "to an update or patch contains the whole Secret, data included; create a new Secret "
            f'instead, ask a human operator, or an operator can allow-list it in {SETTING}["{namespace}"]'
        )


def _token_request(request: attributes.AdmissionRequest) -> Iterator[str]:
    if request.operation == "CREATE" and request.resource_path == "serviceaccounts/token":
        yield (
            f'requesting a token for ServiceAccount "{request.name}" in namespace "{request.namespace}" '
            "(CREATE serviceaccounts/token) is not allowed for agents: the token would act as that "
            "account, outside this guard; ask a human operator"
        )


def _connect(request: attributes.AdmissionRequest) -> Iterator[str]:
    action = CONNECT.get((request.resource.resource, request.sub_resource))
    if request.operation != "CONNECT" or action is None:
        return
    doing, kind, why = action
    where = f"{request.namespace}/{request.name}" if request.namespace else request.name
    container = _text((request.object or {}).get("container"))
    inside = f'container "{container}" of ' if container else ""
    yield (
        f'{doing} {inside}{kind} "{where}" (CONNECT {request.resource_path}) is not allowed for '
        f"agents: {why}; {CONNECT_ADVICE}"
    )


def check(request: attributes.AdmissionRequest, settings: Settings, ctx: base.Context) -> Iterator[str]:
    if request.resource.group == "":
        yield from _token_request(request)
        yield from _connect(request)
        yield from _secret_write(request, settings)
    yield from _pod_refs(request, settings, ctx)


def _secret_verb(request: attributes.AccessRequest, settings: Settings) -> Iterator[str]:
    verb, namespace, name = request.verb, request.namespace, request.name
    if verb not in READ_VERBS | LEAKING_VERBS | {ALL}:
        return
    if settings.allows_all(namespace) or (verb in NAMED_VERBS and settings.allows(namespace, name)):
        return
    scope = f'namespace "{namespace}"' if namespace else "all namespaces"
    if verb == "deletecollection":
        yield (
            f'"deletecollection" on the Secrets in {scope} is not allowed for agents: the reply lists '
            "every deleted Secret with its data; delete single Secrets by name, or ask a human operator"
        )
        return
    reason = "Secret data are credentials"
    if verb in ("update", "patch"):
        reason = "the reply contains the whole Secret, data included"
    if name:
        what, fix = f'Secret "{name}" in {scope}', f"or an operator can allow-list it in {SETTING}"
    else:
        what, fix = f"every Secret in {scope}", "or get a single allow-listed Secret by name"
        if namespace:
            fix += f', or an operator can allow "*" for the namespace in {SETTING}'
    yield f'"{verb}" on {what} is not allowed for agents: {reason}; ask a human operator, {fix}'


def access(request: attributes.AccessRequest, settings: Settings, ctx: base.Context) -> Iterator[str]:
    if not request.is_resource_request or request.group not in ("", ALL):
        return
    action = CONNECT.get((request.resource, request.sub_resource))
    if action is not None:
        _, kind, why = action
        where = f"{request.namespace}/{request.name}" if request.namespace else request.name
        target = f'{kind} "{where}"' if request.name else f"any {kind}"
        # OPTIONS, PROPFIND, … have no Kubernetes verb: the apiserver asks with an empty one.
        verb = (
            f'"{request.verb}"' if request.verb else "an HTTP method without a Kubernetes verb (OPTIONS, …)"
        )
        where = f"{request.resource_path} ({target})"
        yield f"{verb} on {where} is not allowed for agents: {why}; {CONNECT_ADVICE}"
    elif request.resource_path == "serviceaccounts/token" and request.verb in ("create", ALL):
        yield (
            f'requesting a token for ServiceAccount "{request.name}" in namespace "{request.namespace}" '
            "is not allowed for agents: the token would act as that account, outside this guard; "
            "ask a human operator"
        )
    elif request.resource in ("secrets", ALL) and not request.sub_resource:
        yield from _secret_verb(request, settings)
    elif request.resource_path == "pods/log" and settings.denies_logs(request.namespace):
        where = f'namespace "{request.namespace}"' if request.namespace else "any namespace"
        yield (
            f'"{request.verb}" on pods/log in {where} is not allowed for agents: the operator marked these '
            "logs as possibly carrying credentials (guards.secret-access.denyPodLogs); use events, "
            "metrics or describe, or ask a human operator"
        )


FAMILY = base.Family(
    id="secret-access",
    summary=(
        "Denies an agent's Secret reads and data-returning writes, TokenRequests, token and bootstrap "
        "token Secrets, exec/attach/portforward/proxy, pod specs that hand a Secret (or a secret-store "
        "CSI volume) to a workload, and optionally pods/log per namespace."
    ),
    settings=Settings,
    admission=check,
    access=access,
    rules=(
        base.AdmissionRule(api_groups=("",), resources=("serviceaccounts/token",), operations=("CREATE",)),
        base.AdmissionRule(api_groups=("",), resources=("secrets",), operations=("CREATE", "UPDATE")),
        base.AdmissionRule(
            api_groups=("",),
            resources=tuple(f"{resource}/{sub}" for resource, sub in CONNECT),
            operations=("CONNECT",),
        ),
    ),
    judges_pod_specs=True,
)
