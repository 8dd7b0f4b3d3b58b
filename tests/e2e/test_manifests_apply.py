"""Every overlay in manifests/ is accepted by the real apiserver, and its webhook is the one under test.

Each overlay is rendered with the cached kustomize (``tests/manifests/kustomize_binary.py``) after the
documented cert step, and each object is sent to the cluster as the admin with server-side apply and
``dryRun=All``: the apiserver decodes, defaults, validates and runs admission (PodSecurity included)
on it, as ``kubectl apply --server-side -k manifests/overlays/<name>`` would, and stores nothing.

- ``force=true`` (``--force-conflicts``): in a kind cluster the same objects already exist under
  kubectl's field manager; acceptance is the question here, not field ownership.
- The ValidatingWebhookConfiguration is applied under another name: the suite's own registration is
  called ``agent-guard`` too and points at the guard by ``url``; merged with the manifest's
  ``service`` it would be invalid (both set), which says nothing about the manifest.
- cert-manager's kinds (``cert-manager.io/v1``) only exist where cert-manager is installed. The local
  control plane has no CRDs: those objects are skipped in their own test, with that reason; the rest
  of the cert-manager overlay is applied like every other overlay.

The webhook registration of every scenario is ``stack.Webhook.rendered``: the object
``webhook.manifests.validating_webhook_configuration`` renders from the shipped policy, the same
function ``make manifests`` writes ``manifests/base/webhook.yaml`` with. Scenario 6
(``test_blast_radius.py``: the guard down, agents fail closed, admins and controllers unaffected)
therefore exercises the manifest's ``matchConditions`` as evaluated by the real apiserver;
``test_registered_webhook_is_the_manifests_webhook`` proves that object and the overlays' agree in
everything but where the guard listens.
"""

from __future__ import annotations

import copy
import secrets
from typing import Any

import pytest

from tests.e2e import kube, serverside, stack
from tests.e2e.conftest import unavailable
from tests.manifests import kustomize_binary, rendering
from webhook import manifests

pytestmark = pytest.mark.e2e

CERT_MANAGER_GROUP = "cert-manager.io"
APPLY_CHECK_NAME = "agent-guard-e2e-apply-check"
POD_SECURITY_WARNING = "would violate PodSecurity"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, rendering.Documents]:
    try:
        kustomize = kustomize_binary.ensure()
    except kustomize_binary.BuildError as exc:
        unavailable(str(exc))
    tree = rendering.tree(tmp_path_factory.mktemp("manifests"))
    return {overlay: rendering.render(kustomize, tree, overlay) for overlay in rendering.OVERLAYS}


@pytest.fixture(scope="module")
def discovery(e2e: stack.Stack) -> serverside.Discovery:
    return serverside.Discovery(e2e.admin)


def group_of(obj: dict[str, Any]) -> str:
    api_version = str(obj["apiVersion"])
    return api_version.split("/", maxsplit=1)[0] if "/" in api_version else ""


def describe(obj: dict[str, Any]) -> str:
    metadata = obj["metadata"]
    return f"{obj['kind']} {'/'.join(p for p in (metadata.get('namespace'), metadata['name']) if p)}"


def as_applied(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as this test applies it (the webhook configuration renamed, see the module doc)."""
    if obj["kind"] != "ValidatingWebhookConfiguration":
        return obj
    renamed = copy.deepcopy(obj)
    renamed["metadata"]["name"] = APPLY_CHECK_NAME
    return renamed


def apply_dry_run(e2e: stack.Stack, resource: serverside.Resource, obj: dict[str, Any]) -> kube.Reply:
    reply = e2e.admin.request(serverside.apply(resource, obj))
    assert reply.status in (200, 201), f"{describe(obj)} was refused: {reply}"
    assert reply.body.get("kind") == obj["kind"], reply.body
    assert reply.body["metadata"]["name"] == obj["metadata"]["name"], reply.body["metadata"]
    return reply


def assert_not_stored(e2e: stack.Stack, resource: serverside.Resource, obj: dict[str, Any]) -> None:
    assert e2e.admin.request(kube.Request("GET", resource.path(obj))).status == 404, (
        f"dryRun=All stored {describe(obj)}"
    )


@pytest.mark.parametrize("overlay", rendering.OVERLAYS)
def test_overlay_is_accepted_by_server_side_apply(
    overlay: str,
    rendered: dict[str, rendering.Documents],
    discovery: serverside.Discovery,
    e2e: stack.Stack,
) -> None:
    kinds = {doc["kind"] for doc in rendered[overlay]}
    assert {"Namespace", "Deployment", "Service", "ValidatingWebhookConfiguration"} <= kinds, kinds
    unserved = []
    for obj in map(as_applied, rendered[overlay]):
        resource = discovery.resource(obj)
        if resource is None:
            unserved.append(obj)
            continue
        reply = apply_dry_run(e2e, resource, obj)
        assert not reply.warnings, f"{describe(obj)}: warnings {reply.warnings}"
    for obj in unserved:  # only cert-manager's kinds may be missing, and only in its overlay
        assert overlay == "cert-manager" and group_of(obj) == CERT_MANAGER_GROUP, (
            f"{describe(obj)} ({obj['apiVersion']}) is not served by the cluster"
        )
    webhook = as_applied(next(d for d in rendered[overlay] if d["kind"] == "ValidatingWebhookConfiguration"))
    resource = discovery.resource(webhook)
    assert resource is not None
    assert_not_stored(e2e, resource, webhook)


def labelled_like(e2e: stack.Stack, namespace: dict[str, Any]) -> str:
    """A fresh namespace carrying the rendered Namespace's Pod Security labels, for real."""
    labels = {k: v for k, v in namespace["metadata"]["labels"].items() if k.startswith("pod-security.")}
    assert labels.get("pod-security.kubernetes.io/warn") == "restricted", labels
    name = f"e2e-pod-security-{secrets.token_hex(3)}"
    kube.ensure_namespace(e2e.admin, name, labels)
    return name


@pytest.mark.parametrize("overlay", rendering.OVERLAYS)
def test_deployment_passes_restricted_pod_security(
    overlay: str,
    rendered: dict[str, rendering.Documents],
    discovery: serverside.Discovery,
    e2e: stack.Stack,
) -> None:
    """PodSecurity warns about a workload's template (``warn`` label); the guard's Deployment gets none.

    The suite's own agent-guard-system namespace is created without labels (and in kind it is the
    deployed one), so the check runs in a scratch namespace labelled exactly like the rendered one.
    A copy that allows privilege escalation proves the namespace really is checked.
    """
    [namespace] = [d for d in rendered[overlay] if d["kind"] == "Namespace"]
    [deployment] = [d for d in rendered[overlay] if d["kind"] == "Deployment"]
    scratch = labelled_like(e2e, namespace)
    moved = copy.deepcopy(deployment)
    moved["metadata"]["namespace"] = scratch
    resource = discovery.resource(moved)
    assert resource is not None
    reply = apply_dry_run(e2e, resource, moved)
    assert not [w for w in reply.warnings if POD_SECURITY_WARNING in w], reply.warnings
    assert_not_stored(e2e, resource, moved)

    relaxed = copy.deepcopy(moved)
    relaxed["spec"]["template"]["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    control = apply_dry_run(e2e, resource, relaxed)
    assert any(POD_SECURITY_WARNING in w and "allowPrivilegeEscalation" in w for w in control.warnings), (
        control.warnings
    )


def webhook_of(configuration: dict[str, Any]) -> dict[str, Any]:
    [hook] = [h for h in configuration["webhooks"] if h["name"] == manifests.WEBHOOK_NAME]
    return dict(hook)


def test_registered_webhook_is_the_manifests_webhook(
    rendered: dict[str, rendering.Documents], e2e: stack.Stack
) -> None:
    """The registration the scenarios run against == each overlay's, except where the guard listens."""
    path = f"{stack.WEBHOOK_CONFIGURATIONS}/{manifests.CONFIGURATION_NAME}"
    live = webhook_of(e2e.admin.ok(kube.Request("GET", path)).body)
    assert live["clientConfig"].get("caBundle"), live["clientConfig"]
    for overlay in rendering.OVERLAYS:
        [configuration] = [d for d in rendered[overlay] if d["kind"] == "ValidatingWebhookConfiguration"]
        expected = webhook_of(configuration)
        assert expected["matchConditions"] == manifests.match_conditions(e2e.policy)
        for key, value in expected.items():
            if key == "clientConfig":
                continue
            assert live.get(key) == value, (
                f"{overlay}: {key} differs: live {live.get(key)!r}, manifest {value!r}"
            )
        assert "service" in expected["clientConfig"], expected["clientConfig"]
