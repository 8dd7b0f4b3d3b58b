"""``workload-identity``: an agent may not launch code that runs as a more powerful ServiceAccount.

An agent that cannot delete a namespace itself can start a pod as a ServiceAccount that can, and
let the pod's command do it: the pod's requests carry that account's identity, which this guard
does not judge. So a pod spec written by an agent (Pod, every template, ephemeral containers, via
``podspec``) may run as ``default`` (or unset, which means ``default``) or an allow-listed account.

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

from collections.abc import Iterator

import pydantic

from webhook import attributes
from webhook.guards import base, podspec, safe

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
        names = self.allowed_service_accounts.get(namespace, ())
        return account == DEFAULT_ACCOUNT or ALL in names or account in names


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


def check(request: attributes.AdmissionRequest, settings: Settings, ctx: base.Context) -> Iterator[str]:
    for pod in podspec.pod_specs(request, ctx):
        if not podspec.only_resources_changed(request, pod):
            yield from _judge(request, pod, settings)


def _judge(request: attributes.AdmissionRequest, pod: podspec.PodSpec, settings: Settings) -> Iterator[str]:
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
        "Denies an agent's pod specs that run as a ServiceAccount other than default unless the "
        "account is allow-listed or the pod gets no token."
    ),
    settings=Settings,
    admission=check,
    judges_pod_specs=True,
)
