"""Scenarios 1, 2 and 4: the cluster-admin agent is stopped by the guard and nobody else is.

Each row of ``attacks.ATTACKS`` is sent by the agent (HTTP 403 with the guard's ``[id]``), by the agent
with ``dryRun=All`` (judged the same), and by the admin and a cluster-admin controller (admitted: the
webhook's matchConditions never even send them to the guard). The admin and controller replays run for
every row, registered guard or not: they prove the row is a request the apiserver accepts, so that a
403 for the agent can only come from the guard.
"""

from __future__ import annotations

import pytest

from tests.e2e import attacks, audit, kube, stack
from tests.e2e.conftest import SceneFactory, require_guard
from webhook import manifests

pytestmark = pytest.mark.e2e

ROWS = [pytest.param(attack, id=attack.id) for attack in attacks.ATTACKS]
DRY_RUN_ROWS = [pytest.param(attack, id=attack.id) for attack in attacks.ATTACKS if attack.dry_run]
DENIED_BY_US = f'admission webhook "{manifests.WEBHOOK_NAME}" denied the request'


def assert_denied(reply: kube.Reply, attack: attacks.Attack) -> None:
    assert reply.status == 403, f"{attack.id}: expected 403 from the guard, got {reply}"
    assert DENIED_BY_US in reply.message, reply.message
    assert f"[{attack.guard}]" in reply.message, reply.message


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
    assert not reply.warnings, reply.warnings


@pytest.mark.parametrize("attack", ROWS)
def test_agent_is_denied(attack: attacks.Attack, enforcing: stack.Stack, new_scene: SceneFactory) -> None:
    require_guard(attack.guard, enforcing)
    request = attack.prepare(new_scene(f"agent-{attack.id}"))
    reply = enforcing.agent.request(request)
    assert_denied(reply, attack)
    assert_untouched(enforcing, request)
    if enforcing.target.audit_log is not None:
        ours = audit.annotations_of(enforcing.target.audit_log, reply.audit_id, f"{manifests.WEBHOOK_NAME}/")
        assert ours[f"{manifests.WEBHOOK_NAME}/decision"] == "deny", ours
        assert attack.guard in ours[f"{manifests.WEBHOOK_NAME}/guards"].split(","), ours


@pytest.mark.parametrize("attack", DRY_RUN_ROWS)
def test_agent_server_side_dry_run_is_judged_the_same(
    attack: attacks.Attack, enforcing: stack.Stack, new_scene: SceneFactory
) -> None:
    require_guard(attack.guard, enforcing)
    request = attack.prepare(new_scene(f"dry-{attack.id}")).dry_run()
    reply = enforcing.agent.request(request)
    assert_denied(reply, attack)
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
    """CONNECT admission runs before the apiserver looks for a node: the guard answers first."""
    require_guard("secret-access", enforcing)
    scene = new_scene("exec")
    request = attacks.exec_into_pod(scene)
    agent = enforcing.agent.request(request)
    assert agent.status == 403 and "[secret-access]" in agent.message, agent
    admin = enforcing.admin.request(request)
    assert admin.status == 400 and "[secret-access]" not in admin.message, admin
    if not enforcing.target.guard_in_cluster:  # kind schedules the pod: then "Upgrade request required"
        assert "does not have a host assigned" in admin.message, admin
