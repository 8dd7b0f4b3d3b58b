"""Scenario 6, whole guard: with the guard process stopped, the agent is locked out, nobody else notices.

The one guard process serves both ``/authorize`` and ``/validate``; here it is stopped while both
registrations still point at it (after the apiserver's cached authorizer answers have lapsed). The
authorizer's ``failurePolicy: Deny`` then refuses every request of the agent, reads included: the
apiserver answers HTTP 500 with a plain-text ``Internal Server Error: "<path>": Post
"…/authorize…": … connection refused``, because a failed authorizer call is an error, not a denial.
The matchConditions keep the admin and the controller away from both registrations, so their reads
and writes go through as if there were no guard.
"""

from __future__ import annotations

import secrets

import pytest

from tests.e2e import attacks, kube, stack
from tests.e2e.conftest import SceneFactory, require_authorizer

pytestmark = pytest.mark.e2e

OTHERS = ("admin", "controller")


@pytest.fixture
def guard_stopped(e2e: stack.Stack) -> stack.Stack:
    require_authorizer(e2e)  # kind: see test_blast_radius (the deployed guard scaled to 0)
    e2e.guard_stopped()  # a no-op once stopped
    return e2e


@pytest.fixture
def scene(guard_stopped: stack.Stack, new_scene: SceneFactory) -> attacks.Scene:
    """A fresh namespace with a Secret: no authorizer answer about it can be in the apiserver's cache."""
    made = new_scene("stopped")
    secret = {"metadata": {"name": "db-credentials"}, "stringData": {"password": secrets.token_urlsafe(12)}}
    made.admin.ok(kube.Request("POST", f"/api/v1/namespaces/{made.namespace}/secrets", secret))
    return made


def requests(scene: attacks.Scene) -> dict[str, kube.Request]:
    namespace = f"/api/v1/namespaces/{scene.namespace}"
    configmap = {"metadata": {"name": f"note-{scene.suffix}"}, "data": {"hello": "world"}}
    return {
        "list-pods": kube.Request("GET", f"{namespace}/pods"),
        "get-secret": kube.Request("GET", f"{namespace}/secrets/db-credentials"),
        "create-configmap": kube.Request("POST", f"{namespace}/configmaps", configmap),
    }


def assert_authorizer_unreachable(reply: kube.Reply) -> None:
    assert reply.status == 500, f"expected the authorizer's failure (HTTP 500), got {reply}"
    assert reply.message.startswith("Internal Server Error:"), reply.message
    assert "/authorize" in reply.message, reply.message


@pytest.mark.parametrize("action", ["list-pods", "get-secret", "create-configmap"])
def test_agent_is_refused_everything(action: str, guard_stopped: stack.Stack, scene: attacks.Scene) -> None:
    assert guard_stopped.local_guard().process.poll() is not None, "the guard should be stopped"
    reply = guard_stopped.agent.request(requests(scene)[action])
    assert_authorizer_unreachable(reply)
    configmaps = guard_stopped.admin.ok(
        kube.Request("GET", f"/api/v1/namespaces/{scene.namespace}/configmaps")
    )
    assert configmaps.body["items"] == [], "a configmap was created while the agent was refused"


@pytest.mark.parametrize("action", ["list-pods", "get-secret", "create-configmap"])
@pytest.mark.parametrize("who", OTHERS)
def test_others_are_not_affected(
    who: str, action: str, guard_stopped: stack.Stack, scene: attacks.Scene
) -> None:
    client: kube.Client = getattr(guard_stopped, who)
    reply = client.request(requests(scene)[action])
    assert reply.status in (200, 201), reply
