"""Scenarios 1, 2 and 4: the cluster-admin agent is stopped by the guard and nobody else is.

Each row of ``attacks.ATTACKS`` is sent by the agent (HTTP 403 with the guard's ``[id]``, from the stage
the row names: our admission webhook, or our authorizer in front of RBAC), by the agent with
``dryRun=All`` (judged the same), and by the admin and a cluster-admin controller (admitted: the
matchConditions of both registrations never even send them to the guard). The admin and controller
replays run for every row, registered guard or not: they prove the row is a request the apiserver
accepts, so that a 403 for the agent can only come from the guard.
"""

from __future__ import annotations

import re

import pytest

from tests.e2e import attacks, audit, kube, stack
from tests.e2e.conftest import SceneFactory, require_guard
from webhook import manifests

pytestmark = pytest.mark.e2e

ROWS = [pytest.param(attack, id=attack.id) for attack in attacks.ATTACKS]
DRY_RUN_ROWS = [pytest.param(attack, id=attack.id) for attack in attacks.ATTACKS if attack.dry_run]
DENIED_BY_US = f'admission webhook "{manifests.WEBHOOK_NAME}" denied the request'
# The apiserver's 403 for an authorizer's denial, followed by ": " and the authorizer's reason.
# (An HTTP method without a Kubernetes verb, OPTIONS on a proxy path, leaves the verb empty.)
# The verb may be empty (OPTIONS on a proxy path) or constrained (1.37+: impersonate-on:user-info:list).
FORBIDDEN = re.compile(r'is forbidden: User "[^"]+" cannot [a-z:-]* ?(resource|path) "[^"]+"[^:]*: ')
GUARD_WARNING = re.compile(r"^\[[a-z0-9-]+\] ")
AUTHORIZATION_DECISION = "authorization.k8s.io/decision"
AUTHORIZATION_REASON = "authorization.k8s.io/reason"


def assert_forbidden_by_authorizer(reply: kube.Reply, guard: str) -> None:
    """A 403 whose reason is our authorizer's ``[guard-id] …``: RBAC alone would have allowed it."""
    assert reply.status == 403, f"expected 403 from the guard's authorizer, got {reply}"
    found = FORBIDDEN.search(reply.message)
    assert found is not None, reply.message
    assert reply.message[found.end() :].startswith(f"[{guard}]"), reply.message
    assert DENIED_BY_US not in reply.message, reply.message


def assert_denied(e2e: stack.Stack, reply: kube.Reply, attack: attacks.Attack) -> None:
    if attack.denied_by(e2e.authorizer) == attacks.AUTHORIZATION:
        assert_forbidden_by_authorizer(reply, attack.guard)
        return
    assert reply.status == 403, f"{attack.id}: expected 403 from the guard, got {reply}"
    assert DENIED_BY_US in reply.message, reply.message
    assert f"[{attack.guard}]" in reply.message, reply.message


def assert_audited(e2e: stack.Stack, reply: kube.Reply, attack: attacks.Attack) -> None:
    """The audit event records the denial where it happened, with our guard's id."""
    if e2e.target.audit_log is None:
        return
    if attack.denied_by(e2e.authorizer) == attacks.AUTHORIZATION:
        found = audit.annotations_of(e2e.target.audit_log, reply.audit_id, "authorization.k8s.io/")
        assert found[AUTHORIZATION_DECISION] == "forbid", found
        assert found[AUTHORIZATION_REASON].startswith(f"[{attack.guard}]"), found
        return
    ours = audit.annotations_of(e2e.target.audit_log, reply.audit_id, f"{manifests.WEBHOOK_NAME}/")
    assert ours[f"{manifests.WEBHOOK_NAME}/decision"] == "deny", ours
    assert attack.guard in ours[f"{manifests.WEBHOOK_NAME}/guards"].split(","), ours


def assert_untouched(e2e: stack.Stack, request: kube.Request) -> None:
    """A denied DELETE left its object in place (and not even marked for deletion)."""
    if request.method != "DELETE":
        return
    still = e2e.admin.request(kube.Request("GET", request.path))
    assert still.status == 200, f"{request.path} is gone after a denied delete: {still}"
    assert "deletionTimestamp" not in still.body.get("metadata", {}), still.body["metadata"]


def assert_admitted(reply: kube.Reply, attack: attacks.Attack) -> None:
    assert reply.status in attack.admitted, f"{attack.id}: expected {attack.admitted}, got {reply}"
    assert f"[{attack.guard}]" not in reply.message
    # none of ours (the apiserver warns on its own about some rows, e.g. deprecated gitRepo volumes)
    assert not [w for w in reply.warnings if GUARD_WARNING.match(w)], reply.warnings


@pytest.mark.parametrize("attack", ROWS)
def test_agent_is_denied(attack: attacks.Attack, enforcing: stack.Stack, new_scene: SceneFactory) -> None:
    require_guard(attack.guard, enforcing)
    request = attack.prepare(new_scene(f"agent-{attack.id}"))
    reply = enforcing.agent.request(request)
    assert_denied(enforcing, reply, attack)
    assert_untouched(enforcing, request)
    assert_audited(enforcing, reply, attack)


@pytest.mark.parametrize("attack", DRY_RUN_ROWS)
def test_agent_server_side_dry_run_is_judged_the_same(
    attack: attacks.Attack, enforcing: stack.Stack, new_scene: SceneFactory
) -> None:
    require_guard(attack.guard, enforcing)
    request = attack.prepare(new_scene(f"dry-{attack.id}")).dry_run()
    reply = enforcing.agent.request(request)
    assert_denied(enforcing, reply, attack)
    assert_untouched(enforcing, request)


@pytest.mark.parametrize("attack", ROWS)
def test_admin_is_admitted(attack: attacks.Attack, enforcing: stack.Stack, new_scene: SceneFactory) -> None:
    reply = enforcing.admin.request(attack.prepare(new_scene(f"admin-{attack.id}")))
    assert_admitted(reply, attack)


@pytest.mark.parametrize("attack", ROWS)
def test_cluster_admin_controller_is_admitted(
    attack: attacks.Attack, enforcing: stack.Stack, new_scene: SceneFactory
) -> None:
    reply = enforcing.controller.request(attack.prepare(new_scene(f"ctrl-{attack.id}")))
    assert_admitted(reply, attack)


def test_exec_is_judged_through_the_real_connect_path(
    enforcing: stack.Stack, new_scene: SceneFactory
) -> None:
    """The authorizer (and CONNECT admission) run before the apiserver looks for a node: the guard
    answers first, so the apiserver never dials a kubelet for the agent."""
    row = next(attack for attack in attacks.ATTACKS if attack.id == "exec-connect")
    require_guard(row.guard, enforcing)
    scene = new_scene("exec")
    request = attacks.exec_into_pod(scene)
    agent = enforcing.agent.request(request)
    assert_denied(enforcing, agent, row)
    admin = enforcing.admin.request(request)
    assert admin.status == 400 and "[secret-access]" not in admin.message, admin
    if not enforcing.target.guard_in_cluster:  # kind schedules the pod: then "Upgrade request required"
        assert "does not have a host assigned" in admin.message, admin
