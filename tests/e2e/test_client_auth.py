"""``serve --client-ca`` on the guard that answers both endpoints of the real kube-apiserver.

The suite's apiserver presents its webhook client certificate for admission (AdmissionConfiguration
``kubeConfigFile``) and for authorization (the authorizer kubeconfig's user), both written by
``agent-guard apiserver-client`` / ``manifests authz --client-cert``. With the guard requiring that
certificate, both kinds of calls are still served: the guard's own denials come back through the
authorizer and through admission, and ordinary work goes through.
"""

from __future__ import annotations

import pytest

from tests.e2e import kube, stack
from tests.e2e.conftest import SceneFactory, require_authorizer
from tests.e2e.test_attacks import assert_forbidden_by_authorizer

pytestmark = pytest.mark.e2e


@pytest.fixture
def authenticating(e2e: stack.Stack) -> stack.Stack:
    require_authorizer(e2e)
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
    assert "refused: reviews are accepted only from the kube-apiserver" not in e2e.local_guard().output()
