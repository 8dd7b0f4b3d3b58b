"""``agent-guard replay`` over the real apiserver's audit log finds exactly the agent's attacks.

The test makes its own traffic, each request in a fresh namespace (the names carry a unique suffix):
the agent sends every row of ``attacks.ATTACKS`` (the enforcing guard denies each) and some benign
work; the admin and the cluster-admin controller send the same attack rows (admitted). Then the real
command line, ``agent-guard replay --output json``, reads the apiserver's audit log (level Request
for writes, see ``controlplane.processes.AUDIT_POLICY``) and must report:

- every agent attack, by its ``Audit-Id``, as would-deny with the row's guard; where our admission
  webhook denied it, with exactly the guards the live guard named in the same audit event
  (``validate.agent-guard.io/guards``) - also where replay flags the event as partial (a delete judged
  on its name, a patch judged without the patched object). The rows our authorizer denies never reach
  admission, so there is no live admission verdict to compare with;
- nothing else of this test's traffic: not the agent's benign work, not one request of the admin or
  the controller (replay keeps agent requests only, so neither identity may appear at all).

The rest of the session's traffic is in the same log; it is told apart by audit id and name suffix.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest

from tests import reviews
from tests.e2e import attacks, audit, kube, stack
from tests.e2e.conftest import SceneFactory, require_guard
from webhook import manifests

pytestmark = pytest.mark.e2e

GUARDS_ANNOTATION = f"{manifests.WEBHOOK_NAME}/guards"
DENIED_BY_US = f'admission webhook "{manifests.WEBHOOK_NAME}" denied the request'


def run_replay(log: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "replay", "--rules", str(reviews.RULES), "--output", "json", log],
        capture_output=True,
        text=True,
        cwd=reviews.ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, (
        f"replay exited {result.returncode} (1 = something would be denied):\n{result.stderr}"
    )
    found: dict[str, Any] = json.loads(result.stdout)
    return found


def benign_agent_work(e2e: stack.Stack, scene: attacks.Scene) -> list[kube.Reply]:
    """What an agent normally does; every request must be admitted live and stay unflagged in replay."""
    namespace = scene.namespace
    e2e.admin.ok(kube.Request("POST", f"/api/v1/namespaces/{namespace}/pods", attacks.pod("stale")))
    deployments = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    scale = kube.Request(
        "PATCH",
        f"{deployments}/web/scale",
        {"spec": {"replicas": 2}},
        content_type="application/merge-patch+json",
    )
    requests = [
        kube.Request("POST", deployments, attacks.deployment("web")),
        kube.Request("POST", f"/api/v1/namespaces/{namespace}/configmaps", {"metadata": {"name": "web"}}),
        scale,
        kube.Request("GET", f"/api/v1/namespaces/{namespace}/pods"),
        kube.Request("DELETE", f"/api/v1/namespaces/{namespace}/pods/stale"),
    ]
    replies = [e2e.agent.request(request) for request in requests]
    for request, reply in zip(requests, replies, strict=True):
        assert 200 <= reply.status < 300 and not reply.warnings, f"{request.method} {request.path}: {reply}"
    return replies


def mentions(target: str, suffixes: set[str]) -> bool:
    """Whether a replayed target names one of this test's scenes (names and namespaces end in them)."""
    return any(re.search(rf"-{re.escape(suffix)}(?:/|\s|$)", target) for suffix in suffixes)


def flagged_guards(entry: dict[str, Any], endpoint: str) -> set[str]:
    return {f["guard"] for c in entry["checks"] if c["endpoint"] == endpoint for f in c["findings"]}


def test_replay_finds_exactly_the_agents_attacks_and_none_of_the_admins(
    enforcing: stack.Stack, new_scene: SceneFactory
) -> None:
    log = enforcing.target.audit_log
    if log is None:
        pytest.skip("the apiserver's audit log is not readable from here (kind: it is inside the node)")
    for attack in attacks.ATTACKS:
        require_guard(attack.guard, enforcing)

    attacked: dict[str, attacks.Attack] = {}  # audit id -> row
    by_admission: set[str] = set()  # audit ids of attacks our admission webhook denied
    suffixes: set[str] = set()
    others: dict[str, str] = {}  # audit id -> who, for requests that must not be reported
    for attack in attacks.ATTACKS:
        if not attack.body_audited:
            continue  # replay judges what the audit log kept, and it kept no body for this row
        scene = new_scene(f"replay-agent-{attack.id}")
        suffixes.add(scene.suffix)
        reply = enforcing.agent.request(attack.prepare(scene))
        assert reply.status == 403 and f"[{attack.guard}]" in reply.message, f"{attack.id}: {reply}"
        attacked[reply.audit_id] = attack
        if DENIED_BY_US in reply.message:
            by_admission.add(reply.audit_id)
        for who, client in (("admin", enforcing.admin), ("controller", enforcing.controller)):
            scene = new_scene(f"replay-{who}-{attack.id}")
            suffixes.add(scene.suffix)
            reply = client.request(attack.prepare(scene))
            assert reply.status in attack.admitted, f"{who} {attack.id}: {reply}"
            others[reply.audit_id] = f"{who}: {attack.id}"
    scene = new_scene("replay-benign")
    suffixes.add(scene.suffix)
    for reply in benign_agent_work(enforcing, scene):
        others[reply.audit_id] = f"agent benign: {reply.body.get('kind')}"
    for audit_id in [*attacked, *others]:
        audit.event(log, audit_id)  # everything is in the log before replay reads it

    report = run_replay(str(log))
    entries = report["requests"]
    by_id = {entry["auditID"]: entry for entry in entries}

    for audit_id, attack in attacked.items():
        entry = by_id.get(audit_id)
        assert entry is not None, f"replay missed the agent's {attack.id} ({audit_id})"
        assert entry["wouldDeny"] and entry["user"] == enforcing.agent.name, entry
        everywhere = flagged_guards(entry, "validate") | flagged_guards(entry, "authorize")
        assert attack.guard in everywhere, f"{attack.id}: replay found {everywhere}"
        if audit_id in by_admission:  # (an authorizer in front of RBAC may deny a request first)
            annotations = audit.annotations_of(log, audit_id, GUARDS_ANNOTATION)
            live = set(annotations[GUARDS_ANNOTATION].split(","))
            replayed = flagged_guards(entry, "validate")
            assert replayed == live, (
                f"{attack.id}: replay found {replayed}, the live guard {live} ({entry['partial']})"
            )
    assert by_admission, "no attack was denied by admission: nothing compared with the live guard"

    assert not [others[e["auditID"]] for e in entries if e["auditID"] in others]
    # An attack the authorizer denied has no name in its audit event when it is a create (the apiserver
    # never read the body): those are told apart by audit id, everything else of this test by name.
    ours = [e for e in entries if e["auditID"] in attacked or mentions(e["target"], suffixes)]
    assert sorted(e["auditID"] for e in ours) == sorted(attacked), [
        (e["user"], e["verb"], e["target"]) for e in ours if e["auditID"] not in attacked
    ]
    # Judged as the agent, whoever sent it: "<agent> (impersonated by <caller>)"
    # (test_authorization's admin does), which the apiserver's authorizer judges as the agent too.
    assert {e["user"].split(" (impersonated by ")[0] for e in entries} == {enforcing.agent.name}
    assert report["summary"]["byAgent"].get(enforcing.agent.name, 0) >= len(attacked)
