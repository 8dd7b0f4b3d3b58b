"""The guard's RBAC view: ``--rbac-source``, snapshots from listed objects, fail-closed until synced.

The watch against a real apiserver (list, watch, a change seen within seconds) is proven end to end
in tests/e2e/test_effective_rbac.py; here the pieces around it: parsing the source, building a
Snapshot from the stores, what ``/readyz`` and the guards do before and after the first read.
"""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import fastapi.testclient
import pytest

from tests import reviews
from webhook import app, cli, engine, policy, rbac, rbaccache

POD_STARTER = {
    "metadata": {"name": "pod-starter", "resourceVersion": "7"},
    "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}],
}
DEFAULT_STARTS_PODS = {
    "metadata": {"name": "starter", "namespace": "team"},
    "roleRef": {"apiGroup": rbac.GROUP, "kind": "ClusterRole", "name": "pod-starter"},
    "subjects": [{"kind": "ServiceAccount", "name": "default"}],
}


def listed(*items: dict[str, Any]) -> Any:
    """What ``list_*(_preload_content=False)`` returns: the apiserver's List body as bytes (items of
    a List carry no ``kind``, as on the wire)."""
    body = {"kind": "List", "metadata": {"resourceVersion": "42"}, "items": list(items)}

    def call(**_: Any) -> Any:
        return types.SimpleNamespace(data=json.dumps(body).encode())

    return call


def synced_cache() -> rbaccache.RbacCache:
    cache = rbaccache.RbacCache(rbaccache.Source(rbaccache.IN_CLUSTER))
    cache._list(rbac.CLUSTER_ROLE, listed(POD_STARTER))
    cache._list(rbac.ROLE, listed())
    cache._list(rbac.CLUSTER_ROLE_BINDING, listed())
    assert not cache.rebuild() and cache.snapshot() is None, "three of four kinds listed: not synced yet"
    cache._list(rbac.ROLE_BINDING, listed(DEFAULT_STARTS_PODS))
    assert cache.rebuild()
    return cache


@pytest.mark.parametrize(
    ("text", "kind", "path"),
    [("none", "none", None), ("in-cluster", "in-cluster", None), ("kubeconfig:/a/b", "kubeconfig", "/a/b")],
)
def test_source_parses(text: str, kind: str, path: str | None) -> None:
    source = rbaccache.Source.parse(text)
    assert (source.kind, str(source.path) if source.path else None) == (kind, path)
    assert str(source) == text


@pytest.mark.parametrize("text", ["", "kubeconfig:", "kubeconfig", "incluster", "file:/x"])
def test_bad_source_says_what_is_accepted(text: str) -> None:
    with pytest.raises(rbaccache.SourceError, match="use none, in-cluster or kubeconfig:PATH"):
        rbaccache.Source.parse(text)


def test_snapshot_from_stores_skips_what_rbac_would_not_accept() -> None:
    broken = {"metadata": {"name": "no-role-ref", "namespace": "team"}, "subjects": []}
    built = rbaccache.build_snapshot(
        {
            rbac.CLUSTER_ROLE: {("", "pod-starter"): POD_STARTER},
            rbac.ROLE_BINDING: {("team", "starter"): DEFAULT_STARTS_PODS, ("team", "x"): broken},
        }
    )
    assert [b.name for b in built.bindings] == ["starter"]
    user = rbac.service_account_user("team", "default")
    assert built.allows(user, rbac.Ask("create", "pods", namespace="team")) is not None


def test_snapshot_appears_once_every_kind_is_listed_and_follows_changes() -> None:
    cache = synced_cache()
    first = cache.snapshot()
    assert first is not None and cache.synced
    versions = dict.fromkeys(("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"), "42")
    assert cache.status() == {
        "source": "in-cluster",
        "synced": True,
        "roles": 1,
        "bindings": 1,
        "resourceVersions": versions,
    }
    cache._list(rbac.ROLE_BINDING, listed())  # a re-list after 410 Gone: the binding is gone
    assert cache.snapshot() is first, "the snapshot changes only when the builder swaps a new one in"
    cache.rebuild()
    second = cache.snapshot()
    assert second is not None and second is not first and second.bindings == ()
    assert first.bindings, "a snapshot handed out earlier is never changed under its reader"


def _pod_review() -> bytes:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "team"}}
    pod["spec"] = {"containers": [{"name": "web", "image": "nginx:1.27"}]}
    return reviews.body(
        reviews.review(reviews.admission_request("CREATE", "pods", namespace="team", obj=pod))
    )


def test_until_synced_readyz_is_red_and_agents_are_told_to_retry(shipped_policy: policy.Policy) -> None:
    cache = rbaccache.RbacCache(rbaccache.Source(rbaccache.IN_CLUSTER))
    state = app.State(engine.Engine(shipped_policy.with_mode("enforce"), rbac=cache))
    state.rbac = cache
    with fastapi.testclient.TestClient(app.create_app(state, on_decision=lambda _: None)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json()["rbac"] == {"source": "in-cluster", "synced": False}
        early = client.post("/validate", content=_pod_review()).json()["response"]
        assert not early["allowed"]
        assert early["status"]["message"].startswith("[workload-identity]")
        assert "retry in a few seconds" in early["status"]["message"]

        fed = synced_cache()
        state.rbac = fed
        state.engine = engine.Engine(shipped_policy.with_mode("enforce"), rbac=fed)
        assert client.get("/readyz").status_code == 200
        judged = client.post("/validate", content=_pod_review()).json()["response"]
        assert not judged["allowed"]
        assert "create pods or workloads" in judged["status"]["message"]
        assert "RoleBinding team/starter -> ClusterRole pod-starter" in judged["status"]["message"]


def test_without_a_source_default_is_judged_by_name(shipped_policy: policy.Policy) -> None:
    state = app.State(engine.Engine(shipped_policy.with_mode("enforce")))
    with fastapi.testclient.TestClient(app.create_app(state, on_decision=lambda _: None)) as client:
        assert "rbac" not in client.get("/readyz").json()
        answer = client.post("/validate", content=_pod_review()).json()["response"]
        assert answer["allowed"], answer


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        (
            "kubeconfig:/nonexistent/kubeconfig",
            "--rbac-source kubeconfig:/nonexistent/kubeconfig: no such file",
        ),
        ("in-cluster", "--rbac-source in-cluster:"),
    ],
)
def test_serve_with_an_unusable_source_exits_2_before_listening(
    source: str,
    needle: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not in a Pod, whatever runs the tests
    code = cli.main(["serve", "--rbac-source", source, "--cert-dir", str(tmp_path / "certs")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "certs").exists(), "nothing is written before the source is usable"


def test_serve_rejects_a_malformed_source(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["serve", "--rbac-source", "somewhere"])
    assert exited.value.code == 2
    assert "use none, in-cluster or kubeconfig:PATH" in capsys.readouterr().err


def test_a_kubeconfig_source_is_configured_at_start(tmp_path: Path) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    client = rbaccache.Source.parse(f"kubeconfig:{path}").api_client()
    assert client.configuration.host == "https://127.0.0.1:1"
    broken = tmp_path / "broken"
    broken.write_text("clusters: [")
    with pytest.raises(rbaccache.SourceError, match=f"kubeconfig:{broken}"):
        rbaccache.Source.parse(f"kubeconfig:{broken}").api_client()
