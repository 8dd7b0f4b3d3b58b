"""Human approval against the real kube-apiserver: the shipped CRD and Role, the real ``agent-guard approve``.

Two guard processes run with ``--approvals`` under a ServiceAccount bound to the component's Role
(``manifests/components/approvals/rbac.yaml``), with a policy whose ``delete-budget`` allows agents no
destructive request and makes those denials approvable. In order:

1. the CRD is not installed yet: the guard says so in its log, the agent's scale-to-zero is denied
   and no approval command is offered (the absence never fails a review open);
2. the CRD is installed; the watcher picks it up;
3. the agent is denied with an approval id and the command; the agent running that command itself
   (``agent-guard approve`` with its own kubeconfig) and posting an Approval directly are refused;
4. the admin runs the command from the denial; the agent's retry is admitted once (decision log and
   apiserver audit annotation name the approver, the Approval is marked consumed), and the same
   request again is denied, by that process and by the other one (every replica honours it once).

On kind (``make e2e-kind``) the deployed guard is the one approving: for the module it is rolled out
(``InClusterStack.reconfigured``) with ``--approvals``, the same two policy files in its ConfigMap and
the component's Role bound to its own ServiceAccount (``manifests/components/approvals/rbac.yaml`` as
shipped), then put back as found, CRD and Approvals removed. The steps are the same; the admin is the
kubeconfig's identity, running ``agent-guard approve`` with that kubeconfig, and "the other replica"
is whichever of the two the Service gives the apiserver (each pod's log shows its own watcher).
"""

from __future__ import annotations

import contextlib
import datetime
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import reviews
from tests.e2e import attacks, audit, incluster, kube, kubeconfig, stack
from tests.e2e.conftest import SceneFactory, require_guard
from webhook import approvals, manifests

pytestmark = pytest.mark.e2e

COMPONENT = reviews.ROOT / "manifests" / "components" / "approvals"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
CRD_NAME = f"{approvals.PLURAL}.{approvals.GROUP}"
GUARD_SA = "agent-guard-approvals-e2e"
WATCHING = "watching Approvals in"
COMMAND = re.compile(r"by running: (agent-guard approve .+?) -- then retry")


@dataclass
class Approving:
    """The two approving guards (local processes, or the deployed Deployment's replicas)."""

    outputs: tuple[Callable[[], str], Callable[[], str]]  # what each logged (kind: every pod's log)
    use: Callable[[int], None]  # the webhook to guard 0 or 1 (kind: the Service, either replica)
    admin_kubeconfig: Callable[[Path], Path]  # a kubeconfig for the admin, written under a directory
    admin_name: str  # how the apiserver names the admin (the approver)
    watching: Callable[[], bool]  # every approving guard watches Approvals (its watcher backs off first)


def _wait_for(what: str, condition: Any, output: Callable[[], str], seconds: float = 45) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; guard log:\n{output()[-3000:]}")


def _guard_identity(e2e: stack.Stack, workdir: Path) -> Path:
    """A ServiceAccount with exactly the component's Role, and a kubeconfig for it."""
    namespace = e2e.policy.guard_namespace
    client = kube.service_account(e2e.admin, namespace, GUARD_SA, None)
    for doc in yaml.safe_load_all((COMPONENT / "rbac.yaml").read_text()):
        doc["metadata"]["namespace"] = namespace
        if doc["kind"] == "RoleBinding":
            doc["subjects"] = [{"kind": "ServiceAccount", "name": GUARD_SA, "namespace": namespace}]
        plural = "roles" if doc["kind"] == "Role" else "rolebindings"
        e2e.admin.apply(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/{plural}", doc)
    return kube.kubeconfig(e2e.target, client.name, client.token, workdir / "guard-kubeconfig")


def _install_crd(e2e: stack.Stack) -> None:
    e2e.admin.apply(CRDS, yaml.safe_load((COMPONENT / "crd.yaml").read_text()))

    def established() -> bool:
        reply = e2e.admin.request(kube.Request("GET", f"{CRDS}/{CRD_NAME}"))
        conditions = (reply.body.get("status") or {}).get("conditions") or []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    deadline = time.monotonic() + 30
    while not established():
        assert time.monotonic() < deadline, "the Approval CRD was not established"
        time.sleep(0.2)


SHIPPED = (reviews.RULES / "policy.yaml").read_text()
# The shipped policy with no destructive request allowed to agents, and those denials approvable.
POLICY_FILES = {
    "policy.yaml": SHIPPED.replace("limit: 20", "limit: 0"),
    "approvals.yaml": "apiVersion: agent-guard.io/v1alpha1\nkind: Policy\n"
    "approvals:\n  - guard: delete-budget\n",
}


def _admin_name(e2e: stack.Stack) -> str:
    """The admin's user name, as the apiserver authenticates it (a SelfSubjectReview)."""
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    path = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
    return str(e2e.admin.ok(kube.Request("POST", path, review)).body["status"]["userInfo"]["username"])


@contextlib.contextmanager
def _deployed_approving(e2e: incluster.InClusterStack) -> Iterator[Approving]:
    """The deployed guard with the approvals component's Role and flag, and the module's policy."""
    assert isinstance(e2e.target, kubeconfig.Kubeconfig)
    namespace = e2e.policy.guard_namespace
    rbac = [doc for doc in yaml.safe_load_all((COMPONENT / "rbac.yaml").read_text()) if doc]
    for doc in rbac:
        plural = "roles" if doc["kind"] == "Role" else "rolebindings"
        e2e.admin.apply(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/{plural}", doc)
    target = e2e.target
    try:
        with e2e.reconfigured(POLICY_FILES, ("--approvals",)):
            yield Approving(
                (e2e.guard_logs, e2e.guard_logs),
                lambda index: None,
                lambda _: target.path,
                _admin_name(e2e),
                lambda: all(WATCHING in _pod_log(e2e, pod) for pod in e2e.pods()),
            )
    finally:
        e2e.admin.request(kube.Request("DELETE", f"{CRDS}/{CRD_NAME}"))  # and every Approval with it
        for doc in rbac:
            plural = "roles" if doc["kind"] == "Role" else "rolebindings"
            name = doc["metadata"]["name"]
            path = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/{plural}/{name}"
            e2e.admin.request(kube.Request("DELETE", path))


@pytest.fixture(scope="module")
def approving_guards(e2e: stack.Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Approving]:
    require_guard("delete-budget", e2e)
    assert "limit: 20" in SHIPPED, "the shipped delete-budget limit changed: adapt POLICY_FILES"
    if e2e.admin.request(kube.Request("GET", f"{CRDS}/{CRD_NAME}")).status == 200:
        pytest.skip(
            "the Approval CRD is already installed in this cluster; the scenario needs it absent first"
        )
    if isinstance(e2e, incluster.InClusterStack):
        with _deployed_approving(e2e) as deployed:
            yield deployed
        return
    workdir = tmp_path_factory.mktemp("approvals")
    rules = workdir / "rules"
    rules.mkdir()
    for name, text in POLICY_FILES.items():
        (rules / name).write_text(text)
    kubeconfig_file = _guard_identity(e2e, workdir)
    arguments = ("--rules", str(rules), "--approvals", "--kubeconfig", str(kubeconfig_file))
    with e2e.extra_guard(*arguments) as first, e2e.extra_guard(*arguments) as second:
        try:
            token = e2e.target.admin_token
            yield Approving(
                (first.output, second.output),
                lambda index: e2e.webhook.point_at((first, second)[index]),
                lambda directory: kube.kubeconfig(e2e.target, "e2e-admin", token, directory / "admin"),
                "e2e-admin",
                lambda: WATCHING in first.output(),
            )
        finally:
            e2e.enforcing()


def _deployment(scene: attacks.Scene) -> str:
    return f"/apis/apps/v1/namespaces/{scene.namespace}/deployments/web"


def _scale(client: kube.Client, scene: attacks.Scene, replicas: int) -> kube.Reply:
    patch = {"spec": {"replicas": replicas}}
    return client.request(
        kube.Request("PATCH", _deployment(scene), patch, content_type="application/merge-patch+json")
    )


def _run_approve(command: str, kubeconfig: Path, reason: str) -> subprocess.CompletedProcess[str]:
    words = shlex.split(command)
    assert words[:2] == ["agent-guard", "approve"] and words[-2:] == ["--reason", "..."], words
    return subprocess.run(
        [sys.executable, "-m", "webhook", *words[1:-1], reason, "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        cwd=reviews.ROOT,
        check=False,
        timeout=60,
    )


def test_approval_admits_the_retry_once(
    e2e: stack.Stack,
    approving_guards: Approving,
    new_scene: SceneFactory,
    tmp_path: Path,
) -> None:
    guards = approving_guards
    output, other_output = guards.outputs
    scene = new_scene("approval")
    template = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    web = {
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": template},
    }
    scene.admin.ok(kube.Request("POST", f"/apis/apps/v1/namespaces/{scene.namespace}/deployments", web))

    # 1. No CRD yet: the guard says so, and the denial stays a plain denial.
    guards.use(0)
    _wait_for("the missing CRD in the guard's log", lambda: "is not installed" in output(), output)
    refused = _scale(e2e.agent, scene, 0)
    assert refused.status == 403 and "[delete-budget]" in refused.message, refused
    assert "Approval id" not in refused.message, refused

    # 2. The CRD appears; the watcher (backing off) picks it up.
    _install_crd(e2e)
    _wait_for("the watcher", guards.watching, output)

    # 3. Denied with an approval id and the exact command; the agent cannot approve itself.
    refused = _scale(e2e.agent, scene, 0)
    assert refused.status == 403 and "[delete-budget]" in refused.message, refused
    found = COMMAND.search(refused.message)
    assert found is not None, refused.message
    command = found.group(1)
    agent_kubeconfig = kube.kubeconfig(e2e.target, e2e.agent.name, e2e.agent.token, tmp_path / "agent")
    itself = _run_approve(command, agent_kubeconfig, "I approve myself")
    assert itself.returncode == 1, itself
    assert "the cluster refused: HTTP 403" in itself.stderr and "[guard-tamper]" in itself.stderr, (
        itself.stderr
    )
    words = shlex.split(command)
    target = approvals.Target(e2e.agent.name, "UPDATE", "apps", "deployments", scene.namespace, "web")
    assert words[2] == target.id, (words, target)
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=10)
    forged = approvals.manifest(target, "e2e-admin", "forged", expires, e2e.policy.guard_namespace)
    direct = e2e.agent.request(
        kube.Request(
            "POST",
            f"/apis/{approvals.API_VERSION}/namespaces/{e2e.policy.guard_namespace}/{approvals.PLURAL}",
            forged,
        )
    )
    assert direct.status == 403 and "[guard-tamper]" in direct.message, direct
    assert _scale(e2e.agent, scene, 0).status == 403  # still nothing approved

    # 4. The admin approves with the command from the denial; the retry is admitted once.
    admin = guards.admin_name
    approved = _run_approve(command, guards.admin_kubeconfig(tmp_path), "scale-down agreed in ticket 7")
    assert approved.returncode == 0, approved.stderr
    assert f"by {admin}" in approved.stdout, approved.stdout

    deadline = time.monotonic() + 15
    while (retry := _scale(e2e.agent, scene, 0)).status != 200:
        assert retry.status == 403, retry
        assert time.monotonic() < deadline, f"the approved retry was never admitted: {retry}"
        time.sleep(0.2)
    assert e2e.admin.ok(kube.Request("GET", _deployment(scene))).body["spec"]["replicas"] == 0
    if e2e.target.audit_log is not None:
        annotations = audit.annotations_of(e2e.target.audit_log, retry.audit_id, f"{manifests.WEBHOOK_NAME}/")
        exempted_key = f"{manifests.WEBHOOK_NAME}/exempted"
        assert annotations.get(exempted_key) == f"approval/{words[2]} by {admin}", annotations
    [entry] = [
        d
        for d in stack.decisions(output)
        if d.get("namespace") == scene.namespace and d["decision"] == "allow" and d["endpoint"] == "validate"
    ]  # admission's line (on kind the authorizer asks the same guard first, and allows)
    [exempted] = entry["exempted"]
    assert exempted["ref"] == f"approval/{words[2]} by {admin}", exempted
    assert "scale-down agreed in ticket 7" in exempted["reason"]

    listed = f"/apis/{approvals.API_VERSION}/namespaces/{e2e.policy.guard_namespace}/{approvals.PLURAL}"

    def consumed() -> bool:
        items = e2e.admin.ok(kube.Request("GET", listed)).body["items"]
        return any(i["spec"]["id"] == words[2] and i.get("status", {}).get("consumedAt") for i in items)

    _wait_for("status.consumedAt on the Approval", consumed, output)

    # Once: the same request again (after the admin scaled back up) is denied again, by this process
    # and by the other replica, which learnt from its watch that the approval was consumed.
    assert _scale(e2e.admin, scene, 2).status == 200
    again = _scale(e2e.agent, scene, 0)
    assert again.status == 403 and "[delete-budget]" in again.message, again
    guards.use(1)
    elsewhere = _scale(e2e.agent, scene, 0)
    assert elsewhere.status == 403 and "[delete-budget]" in elsewhere.message, elsewhere
    assert WATCHING in other_output()


def _pod_log(e2e: incluster.InClusterStack, pod: dict[str, Any]) -> str:
    name, namespace = pod["metadata"]["name"], e2e.policy.guard_namespace
    path = f"/api/v1/namespaces/{namespace}/pods/{name}/log"
    return e2e.admin.ok(
        kube.Request("GET", path, query=(("container", incluster.CONTAINER),), accept="*/*")
    ).text
