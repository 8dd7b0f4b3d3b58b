"""``components/client-auth``: the guard serves reviews only to the apiserver's client certificate.

Rendered over the kind overlay, as ``make e2e-kind`` applies it (its ``client-ca.crt`` is the CA
``agent-guard apiserver-client`` writes); that run's apiserver presents the certificate to both
webhooks (``tests/e2e/test_client_auth.py``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.manifests import kustomize_binary
from tests.manifests.conftest import Documents
from tests.manifests.test_render import container, of_kind, pod_spec, serve_args
from webhook import clientauth


@pytest.fixture(scope="module")
def issued(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``agent-guard apiserver-client``'s files, and its CA copied where the component reads it."""
    directory = tmp_path_factory.mktemp("apiserver-client")
    clientauth.issue(directory)
    component_certs = tree / "components" / "client-auth" / "certs"
    component_certs.mkdir(parents=True, exist_ok=True)
    shutil.copy2(directory / clientauth.CA_FILE, component_certs / clientauth.CA_FILE)
    return directory


@pytest.fixture(scope="module")
def with_client_auth(kustomize: Path, tree: Path, issued: Path) -> Documents:
    overlay = tree / "overlays" / "client-auth-test"
    overlay.mkdir(exist_ok=True)
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [../kind]\n"
        "components: [../../components/client-auth]\n"
    )
    return [d for d in yaml.safe_load_all(kustomize_binary.build(kustomize, overlay)) if d]


def test_guard_requires_the_apiservers_certificate(with_client_auth: Documents, issued: Path) -> None:
    args = serve_args(with_client_auth)  # the real command line parses them
    assert args.client_name == [clientauth.DEFAULT_CLIENT_NAME], args
    mounted = Path(args.client_ca)
    [mount] = [m for m in container(with_client_auth)["volumeMounts"] if m["name"] == "client-ca"]
    assert mount["mountPath"] == str(mounted.parent) and mount["readOnly"] is True
    [volume] = [v for v in pod_spec(with_client_auth)["volumes"] if v["name"] == "client-ca"]
    [configmap] = [
        d
        for d in of_kind(with_client_auth, "ConfigMap")
        if d["metadata"]["name"] == volume["configMap"]["name"]
    ]
    # The name carries the content's hash: a re-issued CA rolls the Deployment (read at start-up).
    assert configmap["metadata"]["name"].startswith("agent-guard-client-ca-")
    assert configmap["data"] == {mounted.name: (issued / clientauth.CA_FILE).read_text()}


def test_overlays_without_the_component_serve_any_client(rendered: dict[str, Documents]) -> None:
    for docs in rendered.values():
        assert serve_args(docs).client_ca is None
