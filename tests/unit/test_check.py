"""``agent-guard check``: the guard fixtures give the same decisions offline; manifests map to resources."""

from __future__ import annotations

import copy
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import reviews
from webhook import cli, identity, kinds, policy
from webhook.tools import check

HEADER = "apiVersion: agent-guard.io/v1alpha1\nkind: Policy\n"


def _request_fixtures() -> list[Path]:
    """Every fixture of every family that holds an admission request (``access:`` ones are not objects),
    except those judged against an RBAC view (``rbac:``): ``check`` has no RBAC source and judges by
    names, like a guard started without ``--rbac-source``."""
    found = []
    for path in sorted(reviews.FIXTURES.glob("*/*.yaml")):
        data = yaml.safe_load(path.read_text())
        if "request" in data and "rbac" not in data:
            found.append(path)
    return found


def _rules_with(
    tmp_path: Path, overrides: dict[str, Any] | None, pod_templates: dict[str, Any] | None = None
) -> Path:
    """The shipped rules, with a fixture's ``settings`` in place of each guard's section (and its
    ``podTemplates`` in place of the policy's)."""
    if not overrides and pod_templates is None:
        return reviews.RULES
    overrides = overrides or {}
    target = tmp_path / "rules"
    target.mkdir()
    pending = dict(overrides)
    for source in sorted(reviews.RULES.glob("*.y*ml")):
        docs = list(yaml.safe_load_all(source.read_text()))
        for doc in docs:
            if pod_templates is not None and "podTemplates" in (doc or {}):
                doc["podTemplates"] = pod_templates
            for guard_id in list((doc or {}).get("guards") or {}):
                if guard_id in pending:  # replaced, not merged: as tests/unit/test_fixtures.py does
                    doc["guards"][guard_id] = pending.pop(guard_id)
        (target / source.name).write_text(yaml.safe_dump_all(docs, sort_keys=False))
    if pending:
        (target / "zz-fixture.yaml").write_text(HEADER + yaml.safe_dump({"guards": pending}))
    return target


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = cli.main(["check", "--output", "json", *argv])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


def _fired(payload: dict[str, Any]) -> set[str]:
    return {f["guard"] for result in payload["results"] for f in result["findings"]}


def _messages(payload: dict[str, Any]) -> list[str]:
    return [f["message"] for result in payload["results"] for f in result["findings"]]


def _identity_args(user: dict[str, Any]) -> list[str]:
    args = ["--as", user["username"]]
    for group in user.get("groups", ()):
        args += ["--group", group]
    for key, values in (user.get("extra") or {}).items():
        for value in values:
            args += ["--extra", f"{key}={value}"]
    return args


@pytest.mark.parametrize("path", _request_fixtures(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_check_reproduces_fixture_decisions(
    path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = yaml.safe_load(path.read_text())
    expect = data.get("expect", {})
    request = copy.deepcopy(data["request"])
    request.setdefault("uid", str(uuid.uuid4()))
    request["userInfo"] = data.get("user", reviews.AGENT)
    target = request.get("object") or request.get("oldObject") or {}
    gvr = request.get("resource", {})
    request.setdefault(
        "kind",
        {"group": gvr.get("group", ""), "version": gvr.get("version", "v1"), "kind": target.get("kind", "")},
    )
    review_file = tmp_path / f"{path.stem}.json"
    review_file.write_text(json.dumps(reviews.review(request)))
    rules = str(_rules_with(tmp_path, data.get("settings"), data.get("podTemplates")))

    code, payload = _run(capsys, "--rules", rules, "--mode", "enforce", str(review_file))
    deny = path.name.startswith("deny.")
    assert code == (1 if deny else 0), payload
    assert _fired(payload) == (set(expect.get("guards", [])) if deny else set())
    for needle in expect.get("messages", []):
        assert any(needle in m for m in _messages(payload)), needle

    if deny:  # --as replaces the review's user: an admin is never judged
        code, payload = _run(
            capsys,
            "--rules",
            rules,
            "--as",
            "kubernetes-admin",
            "--group",
            "system:masters",
            str(review_file),
        )
        assert code == 0 and _fired(payload) == set()

    # The same object as a plain manifest: kinds.py must find the fixture's resource, and the
    # decision must not change. UPDATE needs the old object a manifest cannot carry; subresources
    # (exec, ephemeralcontainers, token, ...) are not manifests.
    operation = request.get("operation")
    obj = request.get("oldObject") if operation == "DELETE" else request.get("object")
    if operation not in ("CREATE", "DELETE") or request.get("subResource") or request.get("dryRun"):
        return
    if not (isinstance(obj, dict) and obj.get("apiVersion") and obj.get("kind")):
        return
    manifest = copy.deepcopy(obj)
    metadata = manifest.setdefault("metadata", {})
    if request.get("name"):
        metadata.setdefault("name", request["name"])
    metadata.setdefault("generateName", "fixture-")
    manifest_file = tmp_path / f"{path.stem}.manifest.yaml"
    manifest_file.write_text(yaml.safe_dump(manifest))
    args = [*_identity_args(request["userInfo"]), "--operation", operation]
    if request.get("namespace"):
        args += ["--namespace", request["namespace"]]
    code, payload = _run(capsys, "--rules", rules, "--mode", "enforce", *args, str(manifest_file))
    [result] = payload["results"]
    assert (result["group"], result["resource"]) == (gvr.get("group", ""), gvr["resource"]), (
        "webhook/kinds.py maps this kind to another resource than the fixture"
    )
    assert code == (1 if deny else 0), payload
    assert _fired(payload) == (set(expect.get("guards", [])) if deny else set())


def test_fixture_walk_covers_every_family_with_admission_fixtures() -> None:
    covered = {p.parent.name for p in _request_fixtures()}
    assert "namespace-delete" in covered


MANIFESTS = """\
apiVersion: v1
kind: Namespace
metadata: {name: prod}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {mode: fast}
---
apiVersion: v1
kind: List
items:
  - {apiVersion: v1, kind: Namespace, metadata: {name: staging}}
  - {apiVersion: apps/v1, kind: Deployment, metadata: {name: web, namespace: shop}}
"""


def test_multi_document_yaml_lists_and_delete(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "all.yaml"
    path.write_text(MANIFESTS)
    code, payload = _run(capsys, "--operation", "delete", str(path))
    assert code == 1
    results = payload["results"]
    assert [r["source"] for r in results] == [
        f"{path}#1",
        f"{path}#2",
        f"{path}#3.items[0]",
        f"{path}#3.items[1]",
    ]
    assert [r["decision"] for r in results] == ["deny", "allow", "deny", "allow"]
    assert [(r["kind"], r["namespace"], r["name"]) for r in results] == [
        ("Namespace", "prod", "prod"),  # the apiserver reports a Namespace's own name as its namespace
        ("ConfigMap", "default", "settings"),
        ("Namespace", "staging", "staging"),
        ("Deployment", "shop", "web"),
    ]
    assert results[3]["group"] == "apps" and results[3]["resource"] == "deployments"
    assert payload["user"]["username"] == "system:serviceaccount:mcp-system:agent"
    assert payload["summary"] == {"objects": 4, "deny": 2, "would-deny": 0, "allow": 2, "exempted": 0}


def test_create_is_allowed_and_namespace_defaults(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "all.yaml"
    path.write_text(MANIFESTS)
    code, payload = _run(capsys, "--namespace", "team-a", str(path))
    assert code == 0
    assert [r["namespace"] for r in payload["results"]] == ["", "team-a", "", "shop"]
    assert {r["operation"] for r in payload["results"]} == {"CREATE"}


def test_text_output_and_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ns.yaml"
    path.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n")
    code = cli.main(["check", "--operation", "DELETE", "--mode", "dry-run", str(path)])
    out = capsys.readouterr().out
    assert code == 1, "dry-run findings count as would-deny"
    assert out.splitlines()[0].startswith(
        "as system:serviceaccount:mcp-system:agent [system:serviceaccounts, "
    )
    assert f"WOULD-DENY  Namespace prod  DELETE  ({path})" in out
    assert '[namespace-delete] deleting namespace "prod"' in out and "(dry-run: allowed with a warning" in out
    assert out.rstrip().endswith("1 object(s): 0 denied, 1 would be denied (guards in dry-run), 0 allowed")


def test_directory_json_review_and_stdin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "deploy"
    (folder / "nested").mkdir(parents=True)
    (folder / "a.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
    (folder / "nested" / "review.json").write_text(json.dumps(reviews.namespace_delete("kube-system")))
    (folder / "notes.txt").write_text("not a manifest")
    (folder / ".hidden.yaml").write_text("{not: [valid")
    code, payload = _run(capsys, str(folder))
    assert code == 1
    assert [r["source"] for r in payload["results"]] == [
        str(folder / "a.yaml"),
        str(folder / "nested/review.json"),
    ]
    # A review keeps its own user unless --as is given.
    assert payload["results"][1]["user"] == reviews.AGENT["username"]

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(MANIFESTS.encode())))
    code, payload = _run(capsys, "-", "--operation", "DELETE")
    assert code == 1 and payload["results"][0]["source"] == "<stdin>#1"


def test_unknown_kind_gets_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "crd.yaml"
    path.write_text(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: n}\n"
    )
    code, payload = _run(capsys, str(path))
    [result] = payload["results"]
    assert code == 0 and result["resource"] == "gateways" and result["group"] == "gateway.networking.k8s.io"
    assert result["notes"] == [
        "Gateway (gateway.networking.k8s.io/v1) is not a built-in kind; assumed resource 'gateways'"
    ]


@pytest.mark.parametrize(
    ("content", "name", "problem"),
    [
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [x\n",
            "bad.yaml",
            "line 4 column 1: invalid YAML",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\n---\n- just\n- a list\n",
            "bad.yaml",
            "bad.yaml#1: ConfigMap: metadata.name",
        ),
        (
            "metadata: {name: x}\n",
            "bad.yaml",
            "bad.yaml: not a Kubernetes object: apiVersion and kind are required",
        ),
        ('{"apiVersion": "v1", "kind": ', "bad.json", "bad.json: line 1 column 30: invalid JSON"),
        (
            json.dumps(
                {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "x"}}
            ),
            "review.json",
            "review.json: not a usable AdmissionReview: request.kind: Field required",
        ),
        ("", "empty.yaml", "empty.yaml: no documents"),
    ],
)
def test_bad_input_exits_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, name: str, problem: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    assert cli.main(["check", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("agent-guard check: ")
    assert problem in captured.err, captured.err
    assert "Traceback" not in captured.err


def test_bad_list_document_and_missing_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n---\n- 1\n")
    assert cli.main(["check", str(path)]) == 2
    assert f"{path}#2: expected a mapping, got list" in capsys.readouterr().err
    assert cli.main(["check", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: no such file or directory" in capsys.readouterr().err
    assert cli.main(["check", "--rules", str(tmp_path / "nope"), str(path)]) == 2
    assert "invalid policy" in capsys.readouterr().err


def test_not_an_agent_is_noted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ns.yaml"
    path.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n")
    assert cli.main(["check", "--as", "jane", "--operation", "DELETE", str(path)]) == 0
    assert "jane is not an agent in this policy, so nothing is judged" in capsys.readouterr().err
    assert cli.main(["check", "--group", "x", str(path)]) == 2
    assert "--group/--extra need --as" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("agents", "username", "groups"),
    [
        ({"serviceAccounts": ["mcp-system/*"]}, "system:serviceaccount:mcp-system:agent", None),
        ({"serviceAccounts": ["ai-*/mcp"]}, "system:serviceaccount:ai-agent:mcp", None),
        ({"usernames": ["mcp-bot@example.com"]}, "mcp-bot@example.com", ("system:authenticated",)),
        ({"usernamePrefixes": ["oidc:agent-"]}, "oidc:agent-agent", ("system:authenticated",)),
        ({"groups": ["agent-guard.io:agents"]}, "agent", ("agent-guard.io:agents", "system:authenticated")),
    ],
)
def test_default_identity_is_a_matching_agent(
    tmp_path: Path, agents: dict[str, Any], username: str, groups: tuple[str, ...] | None
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(HEADER + yaml.safe_dump({"agents": agents}))
    loaded = policy.load(path)
    user = check.default_user(loaded.agents)
    assert user.username == username
    if groups is not None:
        assert user.groups == groups
    assert identity.Matcher(loaded.agents)(user)


def test_extra_only_selector_and_service_account_groups() -> None:
    selector = policy.AgentSelector.model_validate({"extra": [{"key": "k", "value": "v"}]})
    user = check.default_user(selector)
    assert user.extra == {"k": ["v"]}
    sa = check.make_user("system:serviceaccount:ci:deployer")
    assert sa.groups == ("system:serviceaccounts", "system:serviceaccounts:ci", "system:authenticated")
    explicit = check.make_user("system:serviceaccount:ci:deployer", ["team"])
    assert explicit.groups == ("team", "system:authenticated")


@pytest.mark.parametrize(
    ("api_version", "kind", "group", "resource", "namespaced"),
    [
        ("v1", "Pod", "", "pods", True),
        ("v1", "Namespace", "", "namespaces", False),
        ("apps/v1", "DaemonSet", "apps", "daemonsets", True),
        ("batch/v1", "CronJob", "batch", "cronjobs", True),
        (
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            False,
        ),
        (
            "certificates.k8s.io/v1",
            "CertificateSigningRequest",
            "certificates.k8s.io",
            "certificatesigningrequests",
            False,
        ),
        ("networking.k8s.io/v1", "NetworkPolicy", "networking.k8s.io", "networkpolicies", True),
        (
            "admissionregistration.k8s.io/v1",
            "ValidatingWebhookConfiguration",
            "admissionregistration.k8s.io",
            "validatingwebhookconfigurations",
            False,
        ),
        ("example.com/v1", "Proxy", "example.com", "proxies", None),
        ("example.com/v1", "Gateway", "example.com", "gateways", None),
        ("example.com/v1", "Mesh", "example.com", "meshes", None),
        ("example.com/v1", "Key", "example.com", "keys", None),
    ],
)
def test_kinds_resolve(
    api_version: str, kind: str, group: str, resource: str, namespaced: bool | None
) -> None:
    resolved = kinds.resolve(api_version, kind)
    assert (resolved.group, resolved.resource, resolved.namespaced) == (group, resource, namespaced)
    assert bool(resolved.note) is (namespaced is None)
    if namespaced is not None:
        assert kinds.kind_of(group, resource) == kind


def test_kind_of_subresources() -> None:
    assert kinds.kind_of("", "pods", "exec") == "PodExecOptions"
    assert kinds.kind_of("", "serviceaccounts", "token") == "TokenRequest"
    assert kinds.kind_of("", "pods", "ephemeralcontainers") == "Pod"
    assert kinds.kind_of("example.com", "widgets") == ""
