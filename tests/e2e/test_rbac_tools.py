"""``agent-guard rbac audit`` and ``rbac suggest`` against the real apiserver (issue 17, part 3).

- audit, live: the session's agent (``mcp-system/mcp-k8s-go``, bound to ``cluster-admin`` by the
  stack) is read with the admin's kubeconfig; every power the guard denies agents is listed with the
  binding and role it comes from, and the authorizer-only ones are *not stopped* unless the authorizer
  is declared present.
- suggest: an identity of this test, bound to ``cluster-admin``, does an agent's ordinary work (the
  operations of ``test_benign``) plus a Secret read; ``rbac suggest`` reads the apiserver's audit log;
  the suggested roles are applied and the ``cluster-admin`` binding removed; the same work succeeds
  again, the Secret read is refused, and every row of ``attacks.ATTACKS`` is refused by RBAC.

The suggest identity is a ServiceAccount the *shipped* policy does not select, and ``suggest`` runs with
a copy of the policy whose ``agents`` names it: so the cluster's guard (which both webhooks scope with
the shipped selector) never sees its requests, and each 403 it gets is RBAC's own answer. That is the
guard stopped, for this identity, without stopping the session's guard (an agent the guard selects is
refused by ``/authorize`` first, or, with the guard stopped, by its failure policy: RBAC's answer
would never be visible).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import reviews
from tests.e2e import attacks, audit, cluster, kube, stack, workflow
from tests.e2e.conftest import SceneFactory
from webhook import identity, rbac

pytestmark = pytest.mark.e2e

RBAC_API = "/apis/rbac.authorization.k8s.io/v1"
COLLECTIONS = {
    "ClusterRole": "clusterroles",
    "ClusterRoleBinding": "clusterrolebindings",
    "Role": "roles",
    "RoleBinding": "rolebindings",
}
GUARD_ID = re.compile(r"\[[a-z]+(?:-[a-z]+)+\]")
PROPAGATION_SECONDS = 15.0


def agent_guard(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhook", *arguments],
        capture_output=True,
        text=True,
        cwd=reviews.ROOT,
        timeout=120,
        check=False,
    )


def admin_kubeconfig(e2e: stack.Stack, directory: Path) -> Path:
    if e2e.target.admin_client_cert is not None:  # an existing cluster: its own kubeconfig
        return Path(os.environ[cluster.KUBECONFIG_ENV])
    return kube.kubeconfig(e2e.target, "admin", e2e.target.admin_token, directory / "admin.kubeconfig")


def test_audit_live_lists_the_cluster_admin_agents_exposures(e2e: stack.Stack, tmp_path: Path) -> None:
    config = admin_kubeconfig(e2e, tmp_path)
    rules = str(reviews.RULES)
    text = agent_guard("rbac", "audit", "--kubeconfig", str(config), "--rules", rules)
    print(text.stdout)  # the audit's output on the e2e cluster (pytest -s shows it)
    assert text.returncode == 1, text.stderr
    assert "NOT STOPPED" in text.stdout and "ServiceAccount mcp-system/mcp-k8s-go" in text.stdout

    result = agent_guard("rbac", "audit", "--kubeconfig", str(config), "--rules", rules, "-o", "json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["authorizer"] == "absent" and report["serviceAccountsListed"] is True
    agent = next(i for i in report["identities"] if i["identity"] == "ServiceAccount mcp-system/mcp-k8s-go")
    exposures = {e["power"]: e for e in agent["exposures"]}
    binding = f"ClusterRoleBinding e2e:{stack.AGENT_NAMESPACE}:{stack.AGENT_NAME}:cluster-admin"
    for power in ("read-secrets", "escalate", "admission-config", "node-proxy"):
        assert exposures[power]["class"] == "not-stopped", exposures[power]
        grants = {(g["binding"], g["role"], g["scope"]) for g in exposures[power]["grants"]}
        assert (binding, "ClusterRole cluster-admin", "cluster-wide") in grants, grants
    for power in ("run-workloads", "write-rbac", "exec", "delete-namespaces", "mint-tokens"):
        assert exposures[power]["class"] == "admission", exposures[power]

    live = ("rbac", "audit", "--kubeconfig", str(config), "--rules", rules)
    present = agent_guard(*live, "-o", "json", "--authorizer", "present")
    assert present.returncode == 0, present.stdout  # every power stopped by one of the two webhooks
    agent = next(i for i in json.loads(present.stdout)["identities"] if i["identity"] == agent["identity"])
    classes = {e["power"]: e["class"] for e in agent["exposures"]}
    assert classes["read-secrets"] == "authorizer" and classes["run-workloads"] == "admission"


def test_audit_with_an_identity_that_may_not_list_rbac_is_exit_2(
    e2e: stack.Stack, new_scene: SceneFactory, tmp_path: Path
) -> None:
    namespace = new_scene("rbac-nobody").namespace
    nobody = kube.service_account(e2e.admin, namespace, "nobody", None)
    config = kube.kubeconfig(e2e.target, "nobody", nobody.token, tmp_path / "nobody.kubeconfig")
    result = agent_guard("rbac", "audit", "--kubeconfig", str(config), "--rules", str(reviews.RULES))
    assert result.returncode == 2 and result.stdout == "", result.stdout
    assert "list ClusterRoles: HTTP 403" in result.stderr and "Traceback" not in result.stderr, result.stderr


def policy_selecting(account: str, directory: Path) -> Path:
    """The shipped policy with ``agents`` naming only ``account`` (namespace/name)."""
    shipped = yaml.safe_load((reviews.RULES / "policy.yaml").read_text())
    shipped["agents"] = {"serviceAccounts": [account]}
    directory.mkdir()
    (directory / "policy.yaml").write_text(yaml.safe_dump(shipped))
    return directory


def eventually(send: Any, want: int, what: str) -> kube.Reply:
    """RBAC reads roles and bindings through informers: a change takes a moment to apply."""
    deadline = time.monotonic() + PROPAGATION_SECONDS
    while True:
        reply: kube.Reply = send()
        if reply.status == want or time.monotonic() > deadline:
            assert reply.status == want, f"{what}: {reply}"
            return reply
        time.sleep(0.2)


def refused_by_rbac(reply: kube.Reply, who: str, what: str) -> None:
    assert reply.status == 403, f"{what}: {reply}"
    assert f'User "{who}" cannot' in reply.message, f"{what}: not RBAC's refusal: {reply}"
    assert not GUARD_ID.search(reply.message), f"{what}: the guard answered, not RBAC: {reply}"


def test_suggested_roles_cover_the_workflow_and_rbac_alone_refuses_every_attack(
    e2e: stack.Stack, new_scene: SceneFactory, tmp_path: Path
) -> None:
    log = e2e.target.audit_log
    if log is None:
        pytest.skip("the apiserver's audit log is not readable from here (kind: it is inside the node)")
    admin = e2e.admin
    home = new_scene("rbac-agent").namespace
    work = new_scene("rbac-work").namespace
    made = f"{work}-made"
    agent = kube.service_account(admin, home, "assistant", "cluster-admin")
    # The cluster's guard never sees this identity: every answer it gets below is RBAC's.
    assert not identity.Matcher(e2e.policy.agents)(rbac.service_account_user(home, "assistant"))
    admin.ok(kube.Request("POST", f"/api/v1/namespaces/{work}/secrets", {"metadata": {"name": "db"}}))
    secret = kube.Request("GET", f"/api/v1/namespaces/{work}/secrets/db")

    recorded = [*workflow.benign(agent, admin, work, "web1", made), agent.request(secret)]
    assert all(200 <= r.status < 300 for r in recorded), [str(r) for r in recorded]
    for reply in recorded:
        audit.event(log, reply.audit_id)

    rules = policy_selecting(f"{home}/assistant", tmp_path / "rules")
    suggested = agent_guard("rbac", "suggest", "--rules", str(rules), str(log))
    assert suggested.returncode == 0, suggested.stderr
    print(suggested.stdout)
    objects = [doc for doc in yaml.safe_load_all(suggested.stdout) if doc]
    kinds = sorted((o["kind"], o["metadata"].get("namespace", "")) for o in objects)
    assert kinds == [
        ("ClusterRole", ""),
        ("ClusterRoleBinding", ""),
        ("Role", work),
        ("RoleBinding", work),
    ], kinds
    granted = [rule for o in objects for rule in o.get("rules", ())]
    assert not [r for r in granted if "secrets" in r.get("resources", ()) or "*" in r["verbs"]], granted
    assert f"get secrets in {work}" in suggested.stdout  # named in the comment block, left out
    assert agent_guard("rbac", "suggest", "--rules", str(rules), str(log)).stdout == suggested.stdout

    # The suggestion passes the audit: nothing in it is left unstopped.
    (tmp_path / "suggested.yaml").write_text(suggested.stdout)
    offline = agent_guard("rbac", "audit", "-f", str(tmp_path / "suggested.yaml"), "--rules", str(rules))
    assert offline.returncode == 0, offline.stdout + offline.stderr

    for obj in objects:
        namespace = obj["metadata"].get("namespace")
        scope = f"/namespaces/{namespace}" if namespace else ""
        admin.ok(kube.Request("POST", f"{RBAC_API}{scope}/{COLLECTIONS[obj['kind']]}", obj))
    admin.ok(kube.Request("DELETE", f"{RBAC_API}/clusterrolebindings/e2e:{home}:assistant:cluster-admin"))

    refused = eventually(lambda: agent.request(secret), 403, "the Secret read once cluster-admin is gone")
    refused_by_rbac(refused, agent.name, "read the Secret")
    deploy = kube.Request(
        "POST", f"/apis/apps/v1/namespaces/{work}/deployments", attacks.deployment("probe")
    ).dry_run()
    eventually(lambda: agent.request(deploy), 201, "the suggested Role")
    again = workflow.benign(agent, admin, work, "web2", made)
    for reply in again:
        created_before = reply.status == 409 and reply.body.get("details", {}).get("name") == made
        assert 200 <= reply.status < 300 or created_before, str(reply)

    for attack in attacks.ATTACKS:
        scene = new_scene(f"rbac-{attack.id}")
        refused_by_rbac(agent.request(attack.prepare(scene)), agent.name, attack.id)
