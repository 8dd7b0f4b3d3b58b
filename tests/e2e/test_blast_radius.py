"""Scenario 6: when the admission webhook is down, agents fail closed and everyone else carries on.

A second guard is registered as the admission webhook, proven to be called, then stopped while the
registration still points at it: the apiserver cannot reach ``/validate``. ``failurePolicy: Fail``
rejects the agent's writes; the matchConditions keep the admin's and the controller's writes from ever
being sent to it. The authorizer keeps calling the running guard, so rows it denies are still denied
by it, and the agent's reads work. With the whole guard down, see ``test_guard_stopped``.

On an existing cluster (kind) the deployed registration's Service port is pointed at a port nothing
listens on instead, and restored after: admission cannot reach the guard, while the replicas keep
answering the apiserver's authorizer (when it is wired in, as make e2e-kind does).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e import attacks, incluster, kube, stack
from tests.e2e.conftest import SceneFactory, require_guard
from tests.e2e.test_attacks import assert_admitted, assert_forbidden_by_authorizer, assert_untouched

pytestmark = pytest.mark.e2e

ROWS = [pytest.param(attack, id=attack.id) for attack in attacks.ATTACKS]


@pytest.fixture(scope="module")
def validate_down(e2e: stack.Stack) -> Iterator[stack.Stack]:
    """The webhook pointing at a stopped guard; the enforcing guard still answers ``/authorize``."""
    if isinstance(e2e, incluster.InClusterStack):  # kind: the registration pointed at a dead port
        with e2e.admission_unreachable():
            yield e2e
        return
    e2e.enforcing()
    with e2e.extra_guard() as guard:
        e2e.webhook.point_at(guard)
    assert guard.process.poll() is not None, "the guard should be stopped"
    yield e2e  # the next scenario's fixture points the webhook back (``Stack.enforcing``)


@pytest.mark.parametrize("attack", ROWS)
def test_agent_writes_fail_closed(
    attack: attacks.Attack, validate_down: stack.Stack, new_scene: SceneFactory
) -> None:
    require_guard(attack.guard, validate_down)
    request = attack.prepare(new_scene(f"down-agent-{attack.id}"))
    reply = validate_down.agent.request(request)
    if attack.denied_by(validate_down.authorizer) == attacks.AUTHORIZATION:
        assert_forbidden_by_authorizer(reply, attack.guard)
    else:
        assert reply.status == 500 and "failed calling webhook" in reply.message, reply
    assert_untouched(validate_down, request)


@pytest.mark.parametrize("attack", ROWS)
def test_admin_writes_succeed(
    attack: attacks.Attack, validate_down: stack.Stack, new_scene: SceneFactory
) -> None:
    reply = validate_down.admin.request(attack.prepare(new_scene(f"down-admin-{attack.id}")))
    assert_admitted(reply, attack)


@pytest.mark.parametrize("attack", ROWS)
def test_controller_writes_succeed(
    attack: attacks.Attack, validate_down: stack.Stack, new_scene: SceneFactory
) -> None:
    reply = validate_down.controller.request(attack.prepare(new_scene(f"down-ctrl-{attack.id}")))
    assert_admitted(reply, attack)


def test_agent_reads_are_not_affected(validate_down: stack.Stack) -> None:
    reply = validate_down.agent.request(kube.Request("GET", "/api/v1/namespaces"))
    assert reply.status == 200 and reply.body["items"], reply
