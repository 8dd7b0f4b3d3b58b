"""delete-budget against the real kube-apiserver, with two guard processes and client authentication.

Two ``agent-guard serve`` processes with a small budget (3 destructive requests per 20 s) and
``--client-ca``: the apiserver presents its webhook client certificate (the suite starts it with the
AdmissionConfiguration ``agent-guard apiserver-client`` writes), so it is served; a review posted
straight to a guard without that certificate is refused and spends nothing. The documented semantics
are per guard process: pointing the webhook from one process to the other (as a Service may route
the apiserver's connections to either replica) gives the agent a second budget within the same
window, so with 2 processes an agent can make up to 2 x limit destructive requests, never more.

On kind (``make e2e-kind``) the deployed guard, which already requires the apiserver's certificate
(``components/client-auth``), is rolled out for the module with that budget and **one** replica
(``InClusterStack.reconfigured``): one process, so exactly ``limit`` requests within the window; the
reviews without the certificate are posted to the pod through the apiserver's pod proxy, which
presents none. Two processes behind one Service cannot be chosen between: that half stays local.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests import reviews, serving
from tests.e2e import attacks, incluster, kube, stack
from tests.e2e.conftest import SceneFactory, require_guard

pytestmark = pytest.mark.e2e

LIMIT, WINDOW_SECONDS = 3, 20
OBJECTS = 8
REFUSED = "reviews are accepted only from the kube-apiserver"


@dataclass
class Budgeted:
    """The guard processes with the small budget: local processes, or the deployed guard's replica."""

    outputs: list[Callable[[], str]]  # what each process logged
    use: Callable[[int], None]  # the webhook pointed at process i (kind: the Service, one replica)
    post: Callable[[str, dict[str, Any]], tuple[int, str]]  # to process 0 without the apiserver's cert
    readyz: Callable[[], int]  # process 0's /readyz status, asked without a certificate


def _budget_policy() -> str:
    text = (reviews.RULES / "policy.yaml").read_text()
    assert "limit: 20" in text and "window: 10m" in text
    return text.replace("limit: 20", f"limit: {LIMIT}").replace("window: 10m", f"window: {WINDOW_SECONDS}s")


def _post_to(guard: serving.Guard) -> Callable[[str, dict[str, Any]], tuple[int, str]]:
    def post(endpoint: str, body: dict[str, Any]) -> tuple[int, str]:
        request = urllib.request.Request(
            f"{guard.url}/{endpoint}", data=reviews.body(body), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, context=guard.context(), timeout=10) as answer:
                return int(answer.status), answer.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()

    return post


def _readyz_of(guard: serving.Guard) -> Callable[[], int]:
    def readyz() -> int:
        with urllib.request.urlopen(f"{guard.url}/readyz", context=guard.context(), timeout=5) as answer:
            return int(answer.status)

    return readyz


@contextlib.contextmanager
def _deployed(e2e: incluster.InClusterStack) -> Iterator[Budgeted]:
    if not e2e.client_ca_argument():
        pytest.skip(
            "the deployed guard does not require the apiserver's client certificate: deploy it with "
            "manifests/components/client-auth and the apiserver's files (make e2e-kind does)"
        )
    with e2e.reconfigured({"policy.yaml": _budget_policy()}, replicas=1):
        [pod] = [p["metadata"]["name"] for p in e2e.pods()]
        proxy = f"/api/v1/namespaces/{e2e.policy.guard_namespace}/pods/https:{pod}:8443/proxy"

        def post(endpoint: str, body: dict[str, Any]) -> tuple[int, str]:
            reply = e2e.admin.request(kube.Request("POST", f"{proxy}/{endpoint}", body))
            return reply.status, reply.text

        def readyz() -> int:
            return e2e.admin.request(kube.Request("GET", f"{proxy}/readyz")).status

        yield Budgeted([e2e.guard_logs], lambda index: None, post, readyz)


@pytest.fixture(scope="module")
def budget_guards(e2e: stack.Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Budgeted]:
    require_guard("delete-budget", e2e)
    if isinstance(e2e, incluster.InClusterStack):
        with _deployed(e2e) as deployed:
            yield deployed
        return
    if e2e.client_ca is None or not e2e.port:
        pytest.skip("the suite's apiserver was not given a webhook client certificate")
    rules = tmp_path_factory.mktemp("budget-rules")
    (rules / "policy.yaml").write_text(_budget_policy())
    arguments = ("--rules", str(rules), "--client-ca", str(e2e.client_ca), "--client-name", "kube-apiserver")
    with e2e.extra_guard(*arguments) as first, e2e.extra_guard(*arguments) as second:
        try:
            yield Budgeted(
                [first.output, second.output],
                lambda index: e2e.webhook.point_at((first, second)[index]),
                _post_to(first),
                _readyz_of(first),
            )
        finally:
            e2e.enforcing()  # the webhook back to the suite's guard before these two stop


def _configmaps(scene: attacks.Scene) -> str:
    return f"/api/v1/namespaces/{scene.namespace}/configmaps"


def _delete(e2e: stack.Stack, scene: attacks.Scene, index: int) -> kube.Reply:
    return e2e.agent.request(kube.Request("DELETE", f"{_configmaps(scene)}/cm-{index}"))


def _exists(e2e: stack.Stack, scene: attacks.Scene, index: int) -> bool:
    return e2e.admin.request(kube.Request("GET", f"{_configmaps(scene)}/cm-{index}")).status == 200


def _forged(budgeted: Budgeted, scene: attacks.Scene, index: int) -> int:
    """A review for the agent posted straight to the guard, as anything on the network could."""
    request = reviews.admission_request(
        "DELETE",
        "configmaps",
        name=f"cm-{index}",
        namespace=scene.namespace,
        old={"kind": "ConfigMap", "metadata": {"name": f"cm-{index}"}},
    )
    request["uid"] = str(uuid.uuid4())
    status, text = budgeted.post("validate", reviews.review(request))
    if status != 200:
        assert REFUSED in json.loads(text)["error"], text
    return status


def _budget_denial(reply: kube.Reply) -> None:
    assert reply.status == 403, reply
    assert "[delete-budget]" in reply.message, reply
    assert f"has already made {LIMIT} destructive requests" in reply.message, reply
    assert f"the limit for an agent is {LIMIT} per {WINDOW_SECONDS}s" in reply.message, reply
    assert "The budget refills by one at" in reply.message, reply


def test_budget_exhausted_per_process_then_refilled(
    e2e: stack.Stack, budget_guards: Budgeted, new_scene: SceneFactory
) -> None:
    processes = len(budget_guards.outputs)
    scene = new_scene("budget")
    for index in range(OBJECTS):
        configmap = {"metadata": {"name": f"cm-{index}"}, "data": {"n": str(index)}}
        scene.admin.ok(kube.Request("POST", _configmaps(scene), configmap))

    budget_guards.use(0)  # returns once the apiserver (with its client certificate) is served
    # Forged reviews without the apiserver's certificate: refused, and they spend nothing.
    assert [_forged(budget_guards, scene, i) for i in range(2 * LIMIT)] == [403] * (2 * LIMIT)

    started = time.monotonic()
    for process in range(processes):
        # Each process has a budget of its own: per process, so up to processes x limit in one window.
        budget_guards.use(process)
        for index in range(process * LIMIT, (process + 1) * LIMIT):
            assert _delete(e2e, scene, index).status == 200
        denied = (process + 1) * LIMIT
        _budget_denial(refused := _delete(e2e, scene, denied))
        assert _exists(e2e, scene, denied), f"refused, yet deleted: {refused}"
        if process == 0:
            logged = [  # admission's lines (on kind the authorizer asks the same guard first)
                d
                for d in stack.decisions(budget_guards.outputs[0])
                if d.get("namespace") == scene.namespace and d.get("endpoint") == "validate"
            ]
            assert [d["decision"] for d in logged] == ["allow"] * LIMIT + ["deny"]
    spent = time.monotonic() - started
    assert spent < WINDOW_SECONDS, f"the scenario took {spent:.1f}s, longer than the window: inconclusive"

    # Once the first process's window has passed, its budget has refilled.
    time.sleep(max(0.0, started + WINDOW_SECONDS + 1 - time.monotonic()))
    budget_guards.use(0)
    assert _delete(e2e, scene, processes * LIMIT).status == 200
    assert not _exists(e2e, scene, processes * LIMIT)
    remaining = [i for i in range(OBJECTS) if _exists(e2e, scene, i)]
    # processes x limit + 1 deleted: nothing else slipped through
    assert remaining == list(range(processes * LIMIT + 1, OBJECTS)), remaining


def test_guard_requiring_the_certificate_rejects_a_plain_client(budget_guards: Budgeted) -> None:
    assert budget_guards.readyz() == 200  # probes need no client certificate
    status, text = budget_guards.post("authorize", {})
    assert status == 403, (status, text)
    assert REFUSED in json.loads(text)["error"], text
