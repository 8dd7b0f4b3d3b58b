"""``workload-identity``: an agent may not launch code that runs as a more powerful ServiceAccount.

An agent that cannot delete a namespace itself can start a pod as a ServiceAccount that can, and
let the pod's command do it: the pod's requests carry that account's identity, which this guard
does not judge. So a pod spec written by an agent (Pod, every template, ephemeral containers, via
``podspec``) is judged by the account it runs as:

- with an RBAC view (``agent-guard serve --rbac-source``): by what the account holds. Any account,
  ``default`` included, that holds a power of ``webhook.powers`` (Secret reads, creating workloads,
  RBAC writes, exec, tokens, ...) through its own bindings or its groups' is refused, naming the
  power and the binding; an account that holds none is allowed;
- without one (``make run``, ``check``, ``replay``): by name, ``default`` (or unset, which means
  ``default``) or an allow-listed account.

Either way an account an operator allow-listed is trusted.

A pod that never gets the account's API token cannot act as it, so a pod with
``automountServiceAccountToken: false`` is allowed - unless a token reaches it another way: a
projected ``serviceAccountToken`` volume source (mounted whatever automount says) or a CSI volume
(a driver may ask the kubelet for the pod's token, ``CSIDriver.spec.tokenRequests``). On clusters
where an account carries cloud identity without any mounted token (GKE Workload Identity, EKS Pod
Identity), set ``allowWithoutToken: false`` and the exemption is gone.

The deprecated ``serviceAccount`` field counts when ``serviceAccountName`` is empty, as in the
apiserver. An UPDATE that leaves the pod spec unchanged (scale, labels, ``rollout restart``) or
changes only container resources (``kubectl set resources`` for an OOM-killed workload) is allowed:
the agent neither chose the account nor runs new code. One that changes anything else (image,
command, args, env, volumes, the account) is judged in full.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pydantic

from webhook import attributes, effective, podspec, powers, safe
from webhook.guards import base

DEFAULT_ACCOUNT = "default"
ALL = "*"
SETTING = "guards.workload-identity.allowedServiceAccounts"


class Settings(base.GuardSettings):
    """Which ServiceAccounts an agent's workloads may run as, besides ``default``."""

    # namespace -> account names; "*" allows every account of that namespace. Default: none.
    allowed_service_accounts: base.NamesPerNamespace = pydantic.Field(default_factory=dict)
    # A pod with automountServiceAccountToken: false (and no other token route) may run as any account.
    allow_without_token: bool = True

    def allows(self, namespace: str, account: str) -> bool:
        """By name (no RBAC view): ``default`` or an allow-listed account."""
        return account == DEFAULT_ACCOUNT or self.vouched(namespace, account)

    def vouched(self, namespace: str, account: str) -> bool:
        """An account an operator allow-listed (trusted whatever it holds)."""
        names = self.allowed_service_accounts.get(namespace, ())
        return ALL in names or account in names


_text = safe.text  # a non-string raises safe.Malformed (a finding)


def account_of(pod: podspec.PodSpec) -> tuple[str, str]:
    """``(field path, account)`` the pod runs as; the deprecated field counts only as a fallback."""
    for key in ("serviceAccountName", "serviceAccount"):
        name = _text(pod.spec.get(key))
        if name:
            return f"{pod.path}.{key}", name
    return f"{pod.path}.serviceAccountName", DEFAULT_ACCOUNT


def token_routes(pod: podspec.PodSpec) -> Iterator[tuple[str, str]]:
    """``(owner, field path)`` of every volume that can give the pod a token despite no automount."""
    for volume in podspec.volumes(pod):
        projected = safe.mapping(volume.spec.get("projected"), f"{volume.field}.projected")
        for position, source in safe.mappings(projected.get("sources"), f"{volume.field}.projected.sources"):
            field = f"{volume.field}.projected.sources[{position}].serviceAccountToken"
            if source.get("serviceAccountToken") is not None:
                safe.mapping(source.get("serviceAccountToken"), field)
                yield volume.label, field
        if volume.spec.get("csi") is not None:
            safe.mapping(volume.spec.get("csi"), f"{volume.field}.csi")
            yield volume.label, f"{volume.field}.csi"


def _namespace(request: attributes.AdmissionRequest) -> str:
    metadata = safe.mapping((request.object or {}).get("metadata"), "metadata")
    return request.namespace or _text(metadata.get("namespace"), "metadata.namespace")


def _tokenless(pod: podspec.PodSpec, settings: Settings) -> bool:
    """The pod gets no token for its account: automount off (honoured) and no other token route."""
    unmounted = pod.spec.get("automountServiceAccountToken") is False and settings.allow_without_token
    return unmounted and next(token_routes(pod), None) is None


def _armed_account(
    pod: podspec.PodSpec, field: str, namespace: str, account: str, *, held: Sequence[powers.Held], sub: str
) -> str:
    """The refusal for a pod spec that runs as an account holding powers (judged by its grants)."""
    who = f'ServiceAccount "{namespace}/{account}"'
    action = "adding ephemeral containers to a pod that runs as" if sub else "the pod spec runs as"
    routes = [f"{owner} ({route})" for owner, route in token_routes(pod)]
    if pod.spec.get("automountServiceAccountToken") is False and routes:
        untoken = f"remove {', '.join(routes)}, which give the pod a token anyway"
    else:
        untoken = f"set {pod.path}.automountServiceAccountToken: false if the pod needs no API access"
    return (
        f"{action} {who} ({field}), which holds powers the guard denies to agents: "
        f"{effective.describe_held(held)}, and its pods would act with them unjudged; run the pod as an "
        f"account that holds none of these (a dedicated ServiceAccount with only what it needs), "
        f"{untoken}, ask an operator to remove the binding, or to allow-list the account in "
        f'{SETTING}["{namespace}"]'
    )


def _judge_by_grants(
    request: attributes.AdmissionRequest, pod: podspec.PodSpec, settings: Settings, ctx: base.Context
) -> Iterator[str]:
    """With an RBAC view: judge the account by what it holds (``default`` included).

    An allow-listed account is trusted; a pod that gets no token cannot act as its account; any
    other account is refused when it holds a power of ``webhook.powers`` (through its own bindings,
    its namespace's or every ServiceAccount's groups), and allowed when it holds none.
    """
    namespace = _namespace(request)
    field, account = account_of(pod)
    if settings.vouched(namespace, account) or _tokenless(pod, settings):
        return
    try:
        snapshot = effective.snapshot(ctx)
    except effective.NotSynced:
        yield effective.not_synced(
            f'the ServiceAccount "{namespace}/{account}" this pod spec runs as ({field})'
        )
        return
    if snapshot is None:
        return
    held = effective.account_powers(snapshot, namespace, account)
    if held:
        yield _armed_account(pod, field, namespace, account, held=held, sub=request.sub_resource)


def check(request: attributes.AdmissionRequest, settings: Settings, ctx: base.Context) -> Iterator[str]:
    for pod in podspec.pod_specs(request, ctx):
        if podspec.only_resources_changed(request, pod):
            continue
        if ctx.rbac is not None:
            yield from _judge_by_grants(request, pod, settings, ctx)
        else:
            yield from _judge(request, pod, settings)


def _judge(request: attributes.AdmissionRequest, pod: podspec.PodSpec, settings: Settings) -> Iterator[str]:
    """Without an RBAC view: by the account's name (``default`` or allow-listed)."""
    namespace = _namespace(request)
    field, account = account_of(pod)
    if settings.allows(namespace, account):
        return
    who = f'ServiceAccount "{namespace}/{account}"'
    allow = f'an operator can allow-list it in {SETTING}["{namespace}"]'
    unmounted = pod.spec.get("automountServiceAccountToken") is False
    if unmounted and settings.allow_without_token:
        for owner, route in token_routes(pod):
            yield (
                f"{owner} ({route}) can give the pod a token for {who} although "
                f"{pod.path}.automountServiceAccountToken is false; agents may not launch workloads "
                f'that act as accounts other than "{DEFAULT_ACCOUNT}": remove the volume, or {allow}'
            )
        return
    if request.sub_resource == "ephemeralcontainers":
        yield (
            f"adding ephemeral containers to a pod that runs as {who} ({field}) is not allowed for "
            "agents: they would act as that account and can mount its token; read the pod's logs "
            f"instead, ask a human operator, or {allow}"
        )
        return
    fix = ""
    if settings.allow_without_token:
        fix = f"set {pod.path}.automountServiceAccountToken: false if the pod needs no API access, "
    yield (
        f"the pod spec runs as {who} ({field}); agents may not launch workloads that act as accounts "
        f'other than "{DEFAULT_ACCOUNT}": drop the field to use "{DEFAULT_ACCOUNT}", {fix}or {allow}'
    )


FAMILY = base.Family(
    id="workload-identity",
    summary=(
        "Denies an agent's pod specs that run as a ServiceAccount holding powers agents may not use "
        "(with an RBAC source; without one: any account but default) unless the account is "
        "allow-listed or the pod gets no token."
    ),
    settings=Settings,
    admission=check,
    judges_pod_specs=True,
)
