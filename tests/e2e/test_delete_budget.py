"""delete-budget against the real kube-apiserver, with two guard processes and client authentication.

Two ``agent-guard serve`` processes with a small budget (3 destructive requests per 20 s) and
``--client-ca``: the apiserver presents its webhook client certificate (the suite starts it with the
AdmissionConfiguration ``agent-guard apiserver-client`` writes), so it is served; a review posted
straight to a guard without that certificate is refused and spends nothing. The documented semantics
are per guard process: pointing the webhook from one process to the other (as a Service may route
the apiserver's connections to either replica) gives the agent a second budget within the same
window, so with 2 processes an agent can make up to 2 x limit destructive requests, never more.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import reviews, serving
from tests.e2e import attacks, kube, stack
from tests.e2e.conftest import SceneFactory, require_guard

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.local_only(
        reason="the budget is per guard process: two processes of its own with a 3-per-20s budget, the "
        "webhook pointed at one and then the other, which a Service's replicas cannot be; on kind the "
        "deployed guard requires the apiserver's certificate and test_client_auth.py checks it"
    ),
]

LIMIT, WINDOW_SECONDS = 3, 20
OBJECTS = 8


@pytest.fixture(scope="module")
def budget_guards(
    e2e: stack.Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[serving.Guard, serving.Guard]]:
    require_guard("delete-budget", e2e)
    if e2e.client_ca is None or not e2e.port:
        pytest.skip(
            "existing-cluster mode: the apiserver's admission configuration (its webhook client "
            "certificate) was fixed when the cluster was created; this scenario runs on the local "
            "control plane"
        )
    rules = tmp_path_factory.mktemp("budget-rules")
    text = (reviews.RULES / "policy.yaml").read_text()
    assert "limit: 20" in text and "window: 10m" in text
    (rules / "policy.yaml").write_text(
        text.replace("limit: 20", f"limit: {LIMIT}").replace("window: 10m", f"window: {WINDOW_SECONDS}s")
    )
    arguments = ("--rules", str(rules), "--client-ca", str(e2e.client_ca), "--client-name", "kube-apiserver")
    with e2e.extra_guard(*arguments) as first, e2e.extra_guard(*arguments) as second:
        try:
            yield first, second
        finally:
            e2e.enforcing()  # the webhook back to the suite's guard before these two stop


def _configmaps(scene: attacks.Scene) -> str:
    return f"/api/v1/namespaces/{scene.namespace}/configmaps"


def _delete(e2e: stack.Stack, scene: attacks.Scene, index: int) -> kube.Reply:
    return e2e.agent.request(kube.Request("DELETE", f"{_configmaps(scene)}/cm-{index}"))


def _exists(e2e: stack.Stack, scene: attacks.Scene, index: int) -> bool:
    return e2e.admin.request(kube.Request("GET", f"{_configmaps(scene)}/cm-{index}")).status == 200


def _forged(guard: serving.Guard, scene: attacks.Scene, index: int) -> int:
    """A review for the agent posted straight to the guard, as anything on the network could."""
    request = reviews.admission_request(
        "DELETE",
        "configmaps",
        name=f"cm-{index}",
        namespace=scene.namespace,
        old={"kind": "ConfigMap", "metadata": {"name": f"cm-{index}"}},
    )
    request["uid"] = str(uuid.uuid4())
    post = urllib.request.Request(
        f"{guard.url}/validate",
        data=reviews.body(reviews.review(request)),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(post, context=guard.context(), timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        assert "reviews are accepted only from the kube-apiserver" in json.load(exc)["error"]
        return int(exc.code)


def _budget_denial(reply: kube.Reply) -> None:
    assert reply.status == 403, reply
    assert "[delete-budget]" in reply.message, reply
    assert f"has already made {LIMIT} destructive requests" in reply.message, reply
    assert f"the limit for an agent is {LIMIT} per {WINDOW_SECONDS}s" in reply.message, reply
    assert "The budget refills by one at" in reply.message, reply


def test_budget_exhausted_per_process_then_refilled(
    e2e: stack.Stack,
    budget_guards: tuple[serving.Guard, serving.Guard],
    new_scene: SceneFactory,
) -> None:
    first, second = budget_guards
    scene = new_scene("budget")
    for index in range(OBJECTS):
        configmap = {"metadata": {"name": f"cm-{index}"}, "data": {"n": str(index)}}
        scene.admin.ok(kube.Request("POST", _configmaps(scene), configmap))

    e2e.webhook.point_at(first)  # returns once the apiserver (with its client certificate) is served
    # Forged reviews without the apiserver's certificate: refused, and they spend nothing.
    assert [_forged(first, scene, i) for i in range(2 * LIMIT)] == [403] * (2 * LIMIT)

    started = time.monotonic()
    for index in range(LIMIT):
        assert _delete(e2e, scene, index).status == 200
    _budget_denial(refused := _delete(e2e, scene, LIMIT))
    assert _exists(e2e, scene, LIMIT), f"refused, yet deleted: {refused}"
    logged = [d for d in stack.decisions(first.output) if d.get("namespace") == scene.namespace]
    assert [d["decision"] for d in logged] == ["allow"] * LIMIT + ["deny"]

    # The other process has a budget of its own: per process, so up to 2 x limit within one window.
    e2e.webhook.point_at(second)
    for index in range(LIMIT, 2 * LIMIT):
        assert _delete(e2e, scene, index).status == 200
    _budget_denial(_delete(e2e, scene, 2 * LIMIT))
    spent = time.monotonic() - started
    assert spent < WINDOW_SECONDS, f"the scenario took {spent:.1f}s, longer than the window: inconclusive"

    # Once the first process's window has passed, its budget has refilled.
    time.sleep(max(0.0, started + WINDOW_SECONDS + 1 - time.monotonic()))
    e2e.webhook.point_at(first)
    assert _delete(e2e, scene, 2 * LIMIT).status == 200
    assert not _exists(e2e, scene, 2 * LIMIT)
    remaining = [i for i in range(OBJECTS) if _exists(e2e, scene, i)]
    assert remaining == [2 * LIMIT + 1], remaining  # 2 x limit + 1 deleted: nothing else slipped through


def test_guard_requiring_the_certificate_rejects_a_plain_client(
    budget_guards: tuple[serving.Guard, serving.Guard],
) -> None:
    first, _ = budget_guards
    with urllib.request.urlopen(f"{first.url}/readyz", context=first.context(), timeout=5) as answer:
        assert answer.status == 200  # probes need no client certificate
    stranger = ssl.create_default_context(cafile=str(Path(first.cert_dir) / "ca.crt"))
    post = urllib.request.Request(
        f"{first.url}/authorize", data=b"{}", headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(post, context=stranger, timeout=5)
    assert refused.value.code == 403
