"""``serve --client-ca`` on the guard that answers both endpoints of the real kube-apiserver.

The suite's apiserver presents its webhook client certificate for admission (AdmissionConfiguration
``kubeConfigFile``) and for authorization (the authorizer kubeconfig's user), both written by
``agent-guard apiserver-client`` / ``manifests authz --client-cert``. With the guard requiring that
certificate, both kinds of calls are still served: the guard's own denials come back through the
authorizer and through admission, and ordinary work goes through; a review posted to the guard by
anything else is refused.

Locally the guard on the authorizer's port is restarted with ``--client-ca``. On kind (``make
e2e-kind``) the cluster is created with both files (``tests/e2e/kind-config.yaml``) and the guard is
deployed requiring the certificate (``manifests/components/client-auth``), so every scenario of that
run goes through it; here the deployed guard is checked to require it, and a review without it is
posted to one replica through the apiserver's pod proxy (which presents no client certificate).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests import reviews
from tests.e2e import incluster, kube, stack
from tests.e2e.conftest import SceneFactory, require_authorizer
from tests.e2e.test_attacks import assert_forbidden_by_authorizer

pytestmark = pytest.mark.e2e

REFUSED = "reviews are accepted only from the kube-apiserver"


@pytest.fixture
def authenticating(e2e: stack.Stack) -> stack.Stack:
    require_authorizer(e2e)
    if isinstance(e2e, incluster.InClusterStack):
        if not e2e.client_ca_argument():
            pytest.skip(
                "the deployed guard does not require the apiserver's client certificate: deploy it with "
                "manifests/components/client-auth and the apiserver's files (make e2e-kind does)"
            )
        e2e.enforcing()
        return e2e
    if e2e.client_ca is None:
        pytest.skip("the suite's apiserver was not given a webhook client certificate")
    e2e.guard_mode("--client-ca", str(e2e.client_ca), "--client-name", "kube-apiserver")
    return e2e


def test_apiserver_is_served_on_both_endpoints(authenticating: stack.Stack, new_scene: SceneFactory) -> None:
    e2e = authenticating
    scene = new_scene("client-auth")
    secret = {"metadata": {"name": "db"}, "stringData": {"password": "x"}}
    scene.admin.ok(kube.Request("POST", f"/api/v1/namespaces/{scene.namespace}/secrets", secret))
    # /authorize answered the apiserver: the guard's reason, not an authorizer failure (500)
    read = e2e.agent.request(kube.Request("GET", f"/api/v1/namespaces/{scene.namespace}/secrets/db"))
    assert_forbidden_by_authorizer(read, "secret-access")
    # /validate answered it: the guard's admission denial, and an ordinary write admitted
    delete = e2e.agent.request(kube.Request("DELETE", f"/api/v1/namespaces/{scene.namespace}"))
    assert delete.status == 403 and "[namespace-delete]" in delete.message, delete
    note = {"metadata": {"name": "note"}, "data": {"a": "b"}}
    created = e2e.agent.request(
        kube.Request("POST", f"/api/v1/namespaces/{scene.namespace}/configmaps", note)
    )
    assert created.status == 201, created
    assert f"refused: {REFUSED}" not in e2e.guard_output()


def _review() -> dict[str, object]:
    """The agent's namespace delete as a review: what a forger would post to spend or probe."""
    request = reviews.admission_request(
        "DELETE",
        "namespaces",
        name=stack.PROBE_NAMESPACE,
        old={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": stack.PROBE_NAMESPACE}},
    )
    return reviews.review(request)


def test_a_review_without_the_apiservers_certificate_is_refused(authenticating: stack.Stack) -> None:
    """Not judged, not charged: 403 with the reason, and the refusal logged."""
    e2e = authenticating
    if isinstance(e2e, incluster.InClusterStack):
        pod = next(p["metadata"]["name"] for p in e2e.pods() if not p["metadata"].get("deletionTimestamp"))
        namespace = e2e.policy.guard_namespace
        path = f"/api/v1/namespaces/{namespace}/pods/https:{pod}:8443/proxy/validate"
        reply = e2e.admin.request(kube.Request("POST", path, _review()))
        status, text = reply.status, reply.text
    else:
        guard = e2e.local_guard()
        post = urllib.request.Request(
            f"{guard.url}/validate",
            data=reviews.body(_review()),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(post, context=guard.context(), timeout=10) as answer:
                status, text = int(answer.status), answer.read().decode()
        except urllib.error.HTTPError as exc:
            status, text = int(exc.code), exc.read().decode()
    assert status == 403, (status, text)
    assert REFUSED in json.loads(text)["error"], text
    assert "response" not in json.loads(text), "a refused review is not judged"
    assert f"refused: {REFUSED}" in e2e.guard_output()
