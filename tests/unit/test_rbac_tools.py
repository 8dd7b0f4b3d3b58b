"""``agent-guard rbac audit`` and ``rbac suggest`` offline: tricky RBAC, recorded audit logs, bad input.

``tests/unit/rbac_fixtures/cluster`` is a dump the way ``kubectl get -o yaml`` / ``-o json`` writes one:
a ``List``, multi-document YAML, an API ``RoleBindingList`` whose items carry no kind, a
ServiceAccount. It holds an aggregated ClusterRole never filled in (two levels), group bindings
(``system:serviceaccounts:<ns>``, ``system:authenticated``, the policy's agent group), wildcards
(``*/exec``, ``resources: ["*"]``), ``resourceNames`` and a cross-namespace ServiceAccount subject.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import reviews
from webhook import cli, policy
from webhook.tools import rbacaudit

FIXTURES = Path(__file__).resolve().parent / "rbac_fixtures"
CLUSTER = FIXTURES / "cluster"
BROKEN = FIXTURES / "broken"
AGENTS = {
    "serviceAccounts": ["mcp-system/*"],
    "groups": ["agent-guard.io:agents"],
    "usernamePrefixes": ["oidc:agent-"],
}


def write_policy(directory: Path, agents: dict[str, Any] = AGENTS, **guards: dict[str, Any]) -> Path:
    directory.mkdir(exist_ok=True)
    body = {"apiVersion": policy.API_VERSION, "kind": policy.KIND, "agents": agents, "guards": guards}
    (directory / "policy.yaml").write_text(yaml.safe_dump(body))
    return directory


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def audit_json(
    capsys: pytest.CaptureFixture[str], rules: Path, *extra: str, paths: tuple[str, ...] = (str(CLUSTER),)
) -> tuple[int, dict[str, Any]]:
    files = [arg for path in paths for arg in ("-f", path)]
    code, out, err = run(capsys, "rbac", "audit", *files, "--rules", str(rules), "-o", "json", *extra)
    assert code in (0, 1), err
    found: dict[str, Any] = json.loads(out)
    return code, found


def exposures(report: dict[str, Any], label: str) -> dict[str, dict[str, Any]]:
    for item in report["identities"]:
        if item["identity"] == label:
            return {e["power"]: e for e in item["exposures"]}
    raise AssertionError(f"{label} not audited; got {[i['identity'] for i in report['identities']]}")


def grants(exposure: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    return {(g["binding"], g["role"], g["scope"], g["via"]) for g in exposure["grants"]}


def test_audit_expands_patterns_and_resolves_aggregation_groups_wildcards_and_names(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, report = audit_json(capsys, write_policy(tmp_path / "rules"))
    assert code == 1  # agents hold powers nothing stops without the authorizer
    labels = [i["identity"] for i in report["identities"]]
    assert labels == [
        "ServiceAccount mcp-system/helper",  # a subject of the RoleBindingList (namespace defaulted)
        "ServiceAccount mcp-system/idle",  # a ServiceAccount object, named in no binding
        "ServiceAccount mcp-system/mcp-k8s-go",
        "ServiceAccount mcp-system/runner",  # a subject of a RoleBinding in namespace team
        "any ServiceAccount mcp-system/*",
        "any member of Group agent-guard.io:agents",
        "User oidc:agent-ci",  # a User subject the username prefix matches
        "any User oidc:agent-*",
    ]
    assert "ServiceAccount team/builder" not in labels  # bound next to an agent, but not one

    # Aggregated twice, never filled in, bound to the namespace's ServiceAccount group: every account.
    peek = (
        "ClusterRoleBinding mcp-namespace-peeks",
        "ClusterRole peek-secrets-aggregated",
        "cluster-wide",
        "Group system:serviceaccounts:mcp-system",
    )
    for label in ("ServiceAccount mcp-system/idle", "any ServiceAccount mcp-system/*"):
        secrets = exposures(report, label)["read-secrets"]
        assert secrets["class"] == "not-stopped" and grants(secrets) == {peek}, secrets
        assert set(exposures(report, label)) == {"read-secrets"}

    runner = exposures(report, "ServiceAccount mcp-system/runner")
    via_runner = (
        "RoleBinding team/runner",
        "ClusterRole pod-runner",
        "team",
        "ServiceAccount mcp-system/runner",
    )
    assert runner["exec"]["class"] == "admission" and grants(runner["exec"]) == {via_runner}  # */exec
    assert runner["run-workloads"]["class"] == "admission"
    assert runner["exec"]["grants"][0]["rule"] == {
        "apiGroups": [""],
        "resources": ["*/exec"],
        "verbs": ["create"],
    }

    helper = exposures(report, "ServiceAccount mcp-system/helper")
    assert grants(helper["write-rbac"]) == {
        (
            "RoleBinding mcp-system/helper-writes-rbac",
            "Role mcp-system/rbac-writer",
            "mcp-system",
            "ServiceAccount mcp-system/helper",
        )
    }

    group = exposures(report, "any member of Group agent-guard.io:agents")
    assert set(group) == {"escalate"} and group["escalate"]["class"] == "not-stopped"  # resources: ["*"]
    assert group["escalate"]["grants"][0]["allows"] == "impersonate users"

    named = exposures(report, "User oidc:agent-ci")["read-secrets"]  # resourceNames: still a Secret read
    assert named["grants"][0]["rule"]["resourceNames"] == ["db-password"] and named["class"] == "not-stopped"
    assert exposures(report, "any User oidc:agent-*") == {}  # view-things (system:authenticated) matters not

    admin = exposures(report, "ServiceAccount mcp-system/mcp-k8s-go")
    assert {p for p, e in admin.items() if e["class"] == "not-stopped"} == {
        "read-secrets",
        "node-proxy",
        "escalate",
        "admission-config",
    }
    assert report["summary"]["unstoppedIdentities"] == [
        "ServiceAccount mcp-system/helper",
        "ServiceAccount mcp-system/idle",
        "ServiceAccount mcp-system/mcp-k8s-go",
        "ServiceAccount mcp-system/runner",
        "any ServiceAccount mcp-system/*",
        "any member of Group agent-guard.io:agents",
        "User oidc:agent-ci",
    ]


def test_with_the_authorizer_present_nothing_enforced_is_left_unstopped(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, report = audit_json(capsys, write_policy(tmp_path / "rules"), "--authorizer", "present")
    assert code == 0 and report["authorizer"] == "present"
    assert exposures(report, "ServiceAccount mcp-system/idle")["read-secrets"]["class"] == "authorizer"
    # ... but a guard that is off or in dry-run stops nothing, whatever is installed.
    relaxed = write_policy(tmp_path / "relaxed", **{"secret-access": {"mode": "dry-run"}})
    code, report = audit_json(capsys, relaxed, "--authorizer", "present")
    assert code == 1
    secrets = exposures(report, "ServiceAccount mcp-system/idle")["read-secrets"]
    assert secrets["class"] == "not-stopped" and "dry-run" in secrets["reason"]
    assert exposures(report, "ServiceAccount mcp-system/runner")["exec"]["class"] == "not-stopped"


def test_text_and_markdown_name_the_binding_and_role(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rules = str(write_policy(tmp_path / "rules"))
    code, text, _ = run(capsys, "rbac", "audit", "-f", str(CLUSTER), "--rules", rules)
    assert code == 1
    assert "authorizer absent" in text
    unstopped = "read Secrets [read-secrets]: only /authorize stops it (secret-access), and it is absent"
    assert f"  NOT STOPPED  {unstopped}" in text
    assert (
        "      ClusterRoleBinding mcp-namespace-peeks -> ClusterRole peek-secrets-aggregated "
        "(cluster-wide, via Group system:serviceaccounts:mcp-system)" in text
    )
    assert text.rstrip().splitlines()[-1].startswith("summary: 10 power(s) nothing stops")
    code, markdown, _ = run(capsys, "rbac", "audit", "-f", str(CLUSTER), "--rules", rules, "-o", "markdown")
    assert code == 1
    assert "| Identity | Power | Stopped by | Binding → role | Scope | Via |" in markdown
    assert (
        "| User oidc:agent-ci | read Secrets (`read-secrets`) | not stopped | "
        "RoleBinding team/reads-one-secret → ClusterRole one-secret | team | User oidc:agent-ci |" in markdown
    )


def objects(*items: dict[str, Any]) -> rbacaudit.Cluster:
    return rbacaudit.from_objects((f"#{i}", item) for i, item in enumerate(items))


def binding(name: str, role: str, *subjects: dict[str, str], namespace: str = "") -> dict[str, Any]:
    kind = "RoleBinding" if namespace else "ClusterRoleBinding"
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role}
    return {"kind": kind, "metadata": metadata, "roleRef": ref, "subjects": list(subjects)}


def pods_everywhere(name: str) -> dict[str, Any]:
    rule = {"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}
    return {"kind": "ClusterRole", "metadata": {"name": name}, "rules": [rule]}


@pytest.mark.parametrize(
    ("group", "holders"),
    [
        (
            "system:authenticated",
            {
                "ServiceAccount a/one",
                "any ServiceAccount a/*",
                "any member of Group g",
                "User u",
                "any ServiceAccount */bot (other namespaces)",
                "ServiceAccount a/bot",
                "ServiceAccount b/bot",
            },
        ),
        (
            "system:serviceaccounts",
            {
                "ServiceAccount a/one",
                "any ServiceAccount a/*",
                "any ServiceAccount */bot (other namespaces)",
                "ServiceAccount a/bot",
                "ServiceAccount b/bot",
            },
        ),
        ("system:serviceaccounts:b", {"ServiceAccount b/bot"}),
        ("g", {"any member of Group g"}),
    ],
)
def test_kubernetes_own_groups_reach_every_identity_they_contain(group: str, holders: set[str]) -> None:
    cluster = objects(
        pods_everywhere("runner"),
        binding("to-group", "runner", {"kind": "Group", "name": group}),
        binding("named", "nothing", {"kind": "ServiceAccount", "name": "one", "namespace": "a"}),
        binding("ns-b", "nothing", {"kind": "Group", "name": "system:serviceaccounts:b"}),
    )
    selector = policy.AgentSelector(service_accounts=("a/*", "*/bot"), groups=("g",), usernames=("u",))
    loaded = policy.load(reviews.RULES)
    findings = rbacaudit.audit(policy.Policy(loaded.mode, selector, loaded.guards), cluster, authorizer=False)
    assert {f.identity.label for f in findings if f.exposures} == holders
    assert not rbacaudit.unstopped(findings)  # creating pods: judged by admission


# --- bad input: exit 2, one clear line, never a traceback ------------------------------------------


def test_broken_yaml_and_unknown_kinds_are_named(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rules = str(write_policy(tmp_path / "rules"))
    code, out, err = run(capsys, "rbac", "audit", "-f", str(BROKEN / "broken.yaml"), "--rules", rules)
    assert code == 2 and out == ""
    assert (
        err.startswith(f"agent-guard rbac audit: {BROKEN / 'broken.yaml'}: line ") and "invalid YAML" in err
    )
    code, _, err = run(capsys, "rbac", "audit", "-f", str(BROKEN / "unknown-kind.yaml"), "--rules", rules)
    assert code == 2
    assert f"{BROKEN / 'unknown-kind.yaml'}: unknown kind 'Deployment': expected Role, ClusterRole" in err
    bad_binding = tmp_path / "binding.json"
    bad_binding.write_text(
        json.dumps({"kind": "ClusterRoleBinding", "metadata": {"name": "x"}, "roleRef": {}})
    )
    code, _, err = run(capsys, "rbac", "audit", "-f", str(bad_binding), "--rules", rules)
    assert code == 2 and "ClusterRoleBinding x: roleRef: must name a Role or ClusterRole" in err
    code, _, err = run(capsys, "rbac", "audit", "-f", str(tmp_path / "absent"), "--rules", rules)
    assert (code, err) == (2, f"agent-guard rbac audit: {tmp_path / 'absent'}: no such file or directory\n")
    code, out, err = run(capsys, "rbac", "audit", "-f", str(CLUSTER), "--rules", str(tmp_path / "nope"))
    assert code == 2 and out == ""
    missing = f"{tmp_path / 'nope'}: (path): no such file or directory"
    assert err == f"agent-guard rbac audit: invalid policy:\n{missing}\n"


def test_an_unreachable_cluster_or_unusable_kubeconfig_is_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    code, out, err = run(capsys, "rbac", "audit", "--kubeconfig", str(config), "--rules", str(reviews.RULES))
    assert code == 2 and out == ""
    assert err.startswith("agent-guard rbac audit: https://127.0.0.1:1: cannot reach the cluster"), err
    config.write_text("clusters: [unclosed\n")
    code, _, err = run(capsys, "rbac", "audit", "--kubeconfig", str(config), "--rules", str(reviews.RULES))
    assert code == 2 and "cannot use this kubeconfig" in err
    code, _, err = run(capsys, "rbac", "audit", "-f", str(CLUSTER), "--context", "x")
    assert (code, err) == (2, "agent-guard rbac audit: --context needs --kubeconfig\n")


@pytest.mark.parametrize(
    "argv",
    [
        ("rbac", "audit"),  # neither -f nor --kubeconfig
        ("rbac", "audit", "-f", "x", "--kubeconfig", "y"),
        ("rbac", "audit", "-f", "x", "--authorizer", "maybe"),
        ("rbac", "audit", "-f", "x", "-o", "yaml"),
        ("rbac", "suggest"),
        ("rbac", "explain"),
    ],
)
def test_bad_flags_exit_2(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(list(argv))
    assert exited.value.code == 2
    assert "error:" in capsys.readouterr().err


# --- suggest --------------------------------------------------------------------------------------

RECORDED = FIXTURES / "audit-log" / "workflow.jsonl"
AGENT = {"serviceAccounts": ["agents/*"]}


def suggest(capsys: pytest.CaptureFixture[str], rules: Path, *logs: str) -> tuple[int, str, str]:
    return run(capsys, "rbac", "suggest", "--rules", str(rules), *(logs or (str(RECORDED),)))


def by_kind(text: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"].get("namespace", "")): o for o in yaml.safe_load_all(text) if o}


def test_suggest_covers_what_the_agent_did_minus_what_the_guard_forbids(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The log was recorded from the e2e apiserver: the agent (bound to cluster-admin, not judged by
    the guard there) did the benign workflow, read a Secret, asked for a token, listed pods everywhere,
    read a ClusterRole, created a Pod and a Role, and called discovery, /metrics and a self review."""
    code, text, err = suggest(capsys, write_policy(tmp_path / "rules", AGENT))
    assert code == 0, err
    objects = by_kind(text)
    assert sorted(objects) == [
        ("ClusterRole", ""),
        ("ClusterRoleBinding", ""),
        ("Role", "shop"),
        ("RoleBinding", "shop"),
    ]
    name = "agent-guard-suggested:agents:assistant"
    assert objects[("ClusterRole", "")]["rules"] == [
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},  # a list across namespaces
        {"apiGroups": [""], "resources": ["namespaces"], "resourceNames": ["shop-made"], "verbs": ["patch"]},
        {
            "apiGroups": ["rbac.authorization.k8s.io"],
            "resources": ["clusterroles"],
            "resourceNames": ["view"],
            "verbs": ["get"],
        },
        {"nonResourceURLs": ["/metrics"], "verbs": ["get"]},
    ]
    assert objects[("Role", "shop")]["rules"] == [
        {"apiGroups": [""], "resources": ["services"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "delete", "list"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "patch"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["create"]},
        {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["patch"]},
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["create"]},
    ]
    for kind in ("ClusterRoleBinding", "RoleBinding"):
        bound = objects[(kind, "shop" if kind == "RoleBinding" else "")]
        assert bound["metadata"]["name"] == name and bound["roleRef"]["name"] == name
        assert bound["subjects"] == [{"kind": "ServiceAccount", "name": "assistant", "namespace": "agents"}]
    comments = [line for line in text.splitlines() if line.startswith("#")]
    assert "#   get secrets in shop (1x): the guard denies it (secret-access)" in comments
    assert "#   create serviceaccounts/token in shop (1x): the guard denies it (secret-access)" in comments
    assert "#   get /api (1x): every authenticated caller already holds it (default roles)" in comments
    assert any(
        c.startswith("#   create selfsubjectaccessreviews.authorization.k8s.io (1x)") for c in comments
    )
    assert any(c.startswith("#   create pods in shop: create pods or workloads") for c in comments)
    assert any(
        c.startswith("#   create roles.rbac.authorization.k8s.io in shop: write Roles") for c in comments
    )
    assert "(1 unsuccessful agent request(s) ignored)" in comments[0]  # the 404
    assert "20 agent request(s)" in err and "4 object(s)" in err
    code, again, _ = suggest(capsys, write_policy(tmp_path / "rules", AGENT))
    assert again == text  # deterministic

    # What it suggests passes the audit: nothing in it is left unstopped without the authorizer.
    (tmp_path / "suggested.yaml").write_text(text)
    code, out, _ = run(
        capsys, "rbac", "audit", "-f", str(tmp_path / "suggested.yaml"), "--rules", str(tmp_path / "rules")
    )
    assert code == 0, out
    assert "  ADMISSION    create pods or workloads" in out and "NOT STOPPED" not in out


def test_an_authorizer_only_power_is_never_suggested_even_when_the_guard_allows_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rules = write_policy(tmp_path / "rules", AGENT, **{"secret-access": {"allowedSecrets": {"shop": ["db"]}}})
    code, text, _ = suggest(capsys, rules)
    assert code == 0
    assert (
        "#   get secrets in shop (1x): read Secrets [read-secrets] is stopped only by the authorizer" in text
    )
    assert all(
        "secrets" not in r.get("resources", ()) for o in by_kind(text).values() for r in o.get("rules", ())
    )


def test_suggest_writes_the_file_and_bad_input_is_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rules = write_policy(tmp_path / "rules", AGENT)
    out = tmp_path / "roles.yaml"
    code, printed, _ = run(capsys, "rbac", "suggest", "--rules", str(rules), "--out", str(out), str(RECORDED))
    assert code == 0 and printed == "" and by_kind(out.read_text())
    empty = tmp_path / "empty.log"
    empty.write_text("")
    code, _, err = suggest(capsys, rules, str(empty))
    assert (code, err) == (2, f"agent-guard rbac suggest: no audit events found in {empty}\n")
    code, _, err = suggest(capsys, rules, str(tmp_path / "absent.log"))
    assert (code, err) == (
        2,
        f"agent-guard rbac suggest: {tmp_path / 'absent.log'}: no such file or directory\n",
    )
    code, printed, err = suggest(capsys, write_policy(tmp_path / "nobody", {"usernames": ["someone-else"]}))
    assert code == 1 and printed == ""
    assert err == (
        "agent-guard rbac suggest: no successful request by an agent identity in 31 event(s) "
        "(0 agent request(s), none successful): nothing to suggest\n"
    )
    code, printed, err = run(
        capsys, "rbac", "suggest", "--rules", str(rules), "--out", str(tmp_path), str(RECORDED)
    )
    assert code == 2 and printed == "" and err.count("\n") == 1, err
    assert err.startswith(f"agent-guard rbac suggest: cannot write {tmp_path}: [Errno 21] Is a directory"), (
        err
    )
    code, printed, err = suggest(capsys, tmp_path / "nope", str(RECORDED))
    assert code == 2 and printed == ""
    missing = f"{tmp_path / 'nope'}: (path): no such file or directory"
    assert err == f"agent-guard rbac suggest: invalid policy:\n{missing}\n"


def test_prometheus_output_counts_grants_per_identity_power_and_class(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rules = str(write_policy(tmp_path / "rules"))
    code, out, _ = run(capsys, "rbac", "audit", "-f", str(CLUSTER), "--rules", rules, "-o", "prometheus")
    assert code == 1
    lines = out.splitlines()
    assert (
        'agent_guard_rbac_agent_power_grants{class="not-stopped",'
        'identity="ServiceAccount mcp-system/mcp-k8s-go",power="read-secrets",stage="authorizer"} 2.0'
        in lines
    )
    assert 'agent_guard_rbac_exposed_identities{authorizer="absent"} 7.0' in lines
