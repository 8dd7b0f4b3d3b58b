"""``components/approvals``: the CRD, exactly the Role the watcher needs, and the API access it adds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.manifests import kustomize_binary
from tests.manifests.conftest import Documents
from tests.manifests.test_render import container, one, pod_spec, serve_args
from webhook import approvals, certs


@pytest.fixture(scope="module")
def with_approvals(kustomize: Path, tree: Path) -> Documents:
    overlay = tree / "overlays" / "approvals-test"
    overlay.mkdir(exist_ok=True)
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [../../base]\n"
        "components: [../../components/tls-secret, ../../components/approvals]\n"
    )
    return [d for d in yaml.safe_load_all(kustomize_binary.build(kustomize, overlay)) if d]


def test_crd_serves_the_group_and_kind_the_guard_watches(with_approvals: Documents) -> None:
    crd = one(with_approvals, "CustomResourceDefinition")
    assert crd["metadata"]["name"] == f"{approvals.PLURAL}.{approvals.GROUP}"
    assert crd["spec"]["names"]["kind"] == approvals.KIND and crd["spec"]["scope"] == "Namespaced"
    [version] = crd["spec"]["versions"]
    assert version["name"] == approvals.VERSION and version["subresources"] == {"status": {}}
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert set(spec["required"]) == {"id", "user", "operation", "resource", "approver", "reason", "expires"}


def test_role_is_only_watch_and_mark_consumed_in_the_guard_namespace(with_approvals: Documents) -> None:
    role = one(with_approvals, "Role")
    assert role["metadata"]["namespace"] == certs.DEFAULT_NAMESPACE
    rules: list[dict[str, Any]] = role["rules"]
    assert rules == [
        {"apiGroups": [approvals.GROUP], "resources": ["approvals"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [approvals.GROUP], "resources": ["approvals/status"], "verbs": ["patch"]},
    ]
    binding = one(with_approvals, "RoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "agent-guard", "namespace": certs.DEFAULT_NAMESPACE}
    ]
    # Cluster-wide, only the base's read-only RBAC view (tests/manifests/test_render.py checks its rules).
    cluster_wide = [d for d in with_approvals if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in cluster_wide) == [
        ("ClusterRole", "agent-guard"),
        ("ClusterRoleBinding", "agent-guard"),
    ]


def test_guard_gets_api_access_and_the_flag(with_approvals: Documents) -> None:
    assert serve_args(with_approvals).approvals is True
    assert "--approvals" in container(with_approvals)["args"]
    assert pod_spec(with_approvals)["automountServiceAccountToken"] is True
    assert one(with_approvals, "ServiceAccount")["automountServiceAccountToken"] is True
    egress = one(with_approvals, "NetworkPolicy")["spec"]["egress"]
    assert egress == [{"ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]}]


def test_base_overlays_have_no_approvals(rendered: dict[str, Documents]) -> None:
    """Without the component: no CRD, no Role on Approvals, no ``--approvals`` (the base's API access
    is the read-only RBAC view of ``--rbac-source in-cluster``)."""
    for docs in rendered.values():
        assert not [d for d in docs if d["kind"] in ("CustomResourceDefinition", "Role", "RoleBinding")]
        assert serve_args(docs).approvals is False
