"""Scenario 6, whole guard: with the guard process stopped, the agent is locked out, nobody else notices.

The one guard process serves both ``/authorize`` and ``/validate``; here it is stopped while both
registrations still point at it (after the apiserver's cached authorizer answers have lapsed). The
authorizer's ``failurePolicy: Deny`` then refuses every request of the agent, reads included: the
apiserver answers HTTP 500 with a plain-text ``Internal Server Error: "<path>": Post
"…/authorize…": … connection refused``, because a failed authorizer call is an error, not a denial.
The matchConditions keep the admin and the controller away from both registrations, so their reads
and writes go through as if there were no guard. On a cluster (make e2e-kind) the deployed guard, which
serves both for the kind control plane, is scaled to 0 instead (``InClusterStack.scaled_down``).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.e2e import attacks, incluster, kube, stack
from tests.e2e.conftest import SceneFactory, require_authorizer

pytestmark = pytest.mark.e2e

OTHERS = ("admin", "controller")


@pytest.fixture(scope="module")
def guard_down(e2e: stack.Stack) -> Iterator[stack.Stack]:
    """On a cluster (kind, with the authorizer wired in) the deployed guard scaled to 0 for the module,
    and back afterwards; locally the guard process is stopped per test (``guard_stopped``)."""
    require_authorizer(e2e)
    if isinstance(e2e, incluster.InClusterStack):
        with e2e.scaled_down():
            yield e2e
        return
    yield e2e


@pytest.fixture
def guard_stopped(guard_down: stack.Stack) -> stack.Stack:
    if not isinstance(guard_down, incluster.InClusterStack):
        guard_down.guard_stopped()  # a no-op once stopped
    return guard_down


def assert_guard_down(e2e: stack.Stack) -> None:
    if isinstance(e2e, incluster.InClusterStack):
        ready = [p for p in e2e.pods() if p.get("status", {}).get("phase") == "Running"]
        assert e2e.deployment()["spec"]["replicas"] == 0 and not ready, "the guard should be scaled to 0"
    else:
        assert e2e.local_guard().process.poll() is not None, "the guard should be stopped"


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
    assert_guard_down(guard_stopped)
    reply = guard_stopped.agent.request(requests(scene)[action])
    assert_authorizer_unreachable(reply)
    configmaps = guard_stopped.admin.ok(
        kube.Request("GET", f"/api/v1/namespaces/{scene.namespace}/configmaps")
    )
    names = [item["metadata"]["name"] for item in configmaps.body["items"]]
    # (a real cluster's controller-manager publishes kube-root-ca.crt into every namespace)
    assert f"note-{scene.suffix}" not in names, "a configmap was created while the agent was refused"


@pytest.mark.parametrize("action", ["list-pods", "get-secret", "create-configmap"])
@pytest.mark.parametrize("who", OTHERS)
def test_others_are_not_affected(
    who: str, action: str, guard_stopped: stack.Stack, scene: attacks.Scene
) -> None:
    client: kube.Client = getattr(guard_stopped, who)
    reply = client.request(requests(scene)[action])
    assert reply.status in (200, 201), reply
