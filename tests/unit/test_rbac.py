"""RBAC semantics of ``webhook.rbac`` against the cases the apiserver's authorizer decides."""

from __future__ import annotations

from typing import Any

import pytest

from webhook import attributes, powers, rbac


def cluster_role(
    name: str, rules: list[dict[str, Any]], labels: dict[str, str] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": labels or {}},
        "rules": rules,
        **extra,
    }


def role(namespace: str, name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": "Role", "metadata": {"name": name, "namespace": namespace}, "rules": rules}


def binding(
    kind: str,
    name: str,
    role_kind: str,
    role_name: str,
    subjects: list[dict[str, Any]],
    *,
    namespace: str = "",
) -> dict[str, Any]:
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {
        "kind": kind,
        "metadata": metadata,
        "roleRef": {"apiGroup": rbac.GROUP, "kind": role_kind, "name": role_name},
        "subjects": subjects,
    }


SECRETS = {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}
PODS = {"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}
SA = rbac.service_account_user("team", "default")


def test_cluster_role_binding_grants_everywhere_role_binding_only_in_its_namespace() -> None:
    snapshot = rbac.Snapshot.from_objects(
        [
            cluster_role("reader", [SECRETS]),
            binding(
                "RoleBinding",
                "rb",
                "ClusterRole",
                "reader",
                [{"kind": "ServiceAccount", "name": "default"}],
                namespace="team",
            ),
        ]
    )
    assert snapshot.allows(SA, rbac.Ask("get", "secrets", namespace="team")) is not None
    assert snapshot.allows(SA, rbac.Ask("get", "secrets", namespace="other")) is None
    assert snapshot.allows(SA, rbac.Ask("get", "secrets")) is None  # cluster-wide: not through a RoleBinding
    everywhere = rbac.Snapshot.from_objects(
        [
            cluster_role("reader", [SECRETS]),
            binding(
                "ClusterRoleBinding", "crb", "ClusterRole", "reader", [{"kind": "User", "name": "alice"}]
            ),
        ]
    )
    alice = attributes.UserInfo("alice", ("system:authenticated",))
    assert everywhere.allows(alice, rbac.Ask("list", "secrets")) is not None
    assert everywhere.allows(alice, rbac.Ask("list", "secrets", namespace="x")) is not None
    assert everywhere.allows(alice, rbac.Ask("delete", "secrets", namespace="x")) is None


def test_group_subjects_match_the_groups_a_service_account_carries() -> None:
    snapshot = rbac.Snapshot.from_objects(
        [
            cluster_role("runner", [PODS]),
            binding(
                "ClusterRoleBinding",
                "all-sa-in-team",
                "ClusterRole",
                "runner",
                [{"kind": "Group", "name": "system:serviceaccounts:team"}],
            ),
        ]
    )
    grant = snapshot.allows(SA, rbac.Ask("create", "pods", namespace="team"))
    assert grant is not None and grant.via.kind == "Group"
    assert snapshot.allows(rbac.service_account_user("other", "default"), rbac.Ask("create", "pods")) is None


def test_aggregation_is_resolved_transitively_even_when_rules_were_never_filled_in() -> None:
    snapshot = rbac.Snapshot.from_objects(
        [
            cluster_role(
                "top", [], aggregationRule={"clusterRoleSelectors": [{"matchLabels": {"agg/top": "true"}}]}
            ),
            cluster_role(
                "middle",
                [],
                labels={"agg/top": "true"},
                aggregationRule={
                    "clusterRoleSelectors": [
                        {"matchExpressions": [{"key": "agg/middle", "operator": "Exists"}]}
                    ]
                },
            ),
            cluster_role("leaf", [SECRETS], labels={"agg/middle": "yes"}),
            cluster_role("unrelated", [PODS], labels={"agg/top": "false"}),
        ]
    )
    rules = snapshot.rules_of("ClusterRole", "top")
    assert rules is not None
    assert rbac.rules_allow(rules, rbac.Ask("get", "secrets")) is not None
    assert rbac.rules_allow(rules, rbac.Ask("create", "pods")) is None


def test_aggregation_cycles_terminate() -> None:
    selector = {"clusterRoleSelectors": [{"matchLabels": {"ring": "x"}}]}
    snapshot = rbac.Snapshot.from_objects(
        [
            cluster_role("a", [SECRETS], labels={"ring": "x"}, aggregationRule=selector),
            cluster_role("b", [PODS], labels={"ring": "x"}, aggregationRule=selector),
        ]
    )
    rules = snapshot.rules_of("ClusterRole", "a") or ()
    assert {r.resources for r in rules} == {("secrets",), ("pods",)}


@pytest.mark.parametrize(
    ("rule", "ask", "allowed"),
    [
        ({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, rbac.Ask("delete", "nodes"), True),
        (
            {"apiGroups": [""], "resources": ["*/exec"], "verbs": ["create"]},
            rbac.Ask("create", "pods", sub_resource="exec"),
            True,
        ),
        (
            {"apiGroups": [""], "resources": ["pods/*"], "verbs": ["create"]},
            rbac.Ask("create", "pods", sub_resource="exec"),
            False,
        ),
        (
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]},
            rbac.Ask("create", "pods", sub_resource="exec"),
            False,
        ),
        (
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"], "verbs": ["get"]},
            rbac.Ask("get", "secrets", name="a"),
            True,
        ),
        (
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"], "verbs": ["get"]},
            rbac.Ask("get", "secrets", name="b"),
            False,
        ),
        (
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"], "verbs": ["list"]},
            rbac.Ask("list", "secrets"),
            False,
        ),
        (
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
            rbac.Ask("get", "deployments"),
            False,
        ),
        (
            {"nonResourceURLs": ["/metrics*"], "verbs": ["get"]},
            rbac.Ask("get", path="/metrics/cadvisor"),
            True,
        ),
        ({"nonResourceURLs": ["/metrics"], "verbs": ["get"]}, rbac.Ask("get", path="/metricsx"), False),
    ],
)
def test_rule_matching(rule: dict[str, Any], ask: rbac.Ask, allowed: bool) -> None:
    assert rbac.Rule.from_dict(rule).allows(ask) is allowed


def test_non_resource_rules_do_nothing_in_a_role_binding() -> None:
    snapshot = rbac.Snapshot.from_objects(
        [
            cluster_role("metrics", [{"nonResourceURLs": ["*"], "verbs": ["get"]}]),
            binding(
                "RoleBinding",
                "rb",
                "ClusterRole",
                "metrics",
                [{"kind": "User", "name": "bob"}],
                namespace="team",
            ),
        ]
    )
    assert snapshot.grants(attributes.UserInfo("bob")) == []


def test_missing_roles_grant_nothing_and_role_bindings_find_their_namespaced_role() -> None:
    snapshot = rbac.Snapshot.from_objects(
        [
            role("team", "local", [SECRETS]),
            binding(
                "RoleBinding",
                "to-missing",
                "ClusterRole",
                "nope",
                [{"kind": "User", "name": "bob"}],
                namespace="team",
            ),
            binding(
                "RoleBinding",
                "to-local",
                "Role",
                "local",
                [{"kind": "User", "name": "bob"}],
                namespace="team",
            ),
        ]
    )
    grants = snapshot.grants(attributes.UserInfo("bob"))
    assert [g.binding.name for g in grants] == ["to-local"]
    assert "RoleBinding team/to-local -> Role team/local" in grants[0].describe()


def test_powers_name_what_a_role_grants() -> None:
    rules = [
        rbac.Rule.from_dict(PODS),
        rbac.Rule.from_dict({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}),
    ]
    assert [p.id for p, _ in powers.powers_of_rules(rules)] == ["run-workloads"]
    wildcard = [rbac.Rule.from_dict({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]})]
    assert {p.id for p, _ in powers.powers_of_rules(wildcard)} == {p.id for p in powers.POWERS}


def test_malformed_objects_are_named() -> None:
    with pytest.raises(rbac.RbacObjectError, match=r"metadata\.name"):
        rbac.Snapshot.from_objects([{"kind": "ClusterRole", "metadata": {}}])
    with pytest.raises(rbac.RbacObjectError, match="roleRef"):
        rbac.Snapshot.from_objects([{"kind": "ClusterRoleBinding", "metadata": {"name": "x"}, "roleRef": {}}])


def test_named_grants_count_for_an_audit_but_a_create_is_never_granted_by_name() -> None:
    snapshot = rbac.Snapshot.from_objects(
        [
            cluster_role(
                "named",
                [
                    {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["db"], "verbs": ["get"]},
                    {"apiGroups": [""], "resources": ["pods"], "resourceNames": ["web"], "verbs": ["create"]},
                    {
                        "apiGroups": [""],
                        "resources": ["pods/exec"],
                        "resourceNames": ["web"],
                        "verbs": ["create"],
                    },
                ],
            ),
            binding("ClusterRoleBinding", "b", "ClusterRole", "named", [{"kind": "User", "name": "alice"}]),
        ]
    )
    alice = attributes.UserInfo("alice", ("system:authenticated",))
    grants = snapshot.grants(alice)
    assert not list(powers.held(grants))  # by default only grants over every object of the kind
    held = {(item.power.id, item.ask.name) for item in powers.held(grants, named=True)}
    assert held == {("read-secrets", "db"), ("exec", "web")}  # no run-workloads: creates carry no name


def test_snapshot_computes_a_derived_answer_once_and_bounds_the_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = rbac.Snapshot()
    calls: list[str] = []

    def compute(key: str) -> str:
        calls.append(key)
        return key.upper()

    assert snapshot.derived("a", lambda: compute("a")) == "A"
    assert snapshot.derived("a", lambda: compute("a")) == "A"
    assert calls == ["a"]  # the second answer came from the memo
    assert rbac.Snapshot().derived("a", lambda: compute("a")) == "A"  # a new snapshot computes again
    monkeypatch.setattr(rbac, "DERIVED_LIMIT", 2)
    snapshot.derived("b", lambda: compute("b"))  # two kept: the next one starts the memo over
    snapshot.derived("c", lambda: compute("c"))
    snapshot.derived("a", lambda: compute("a"))
    assert calls == ["a", "a", "b", "c", "a"]
