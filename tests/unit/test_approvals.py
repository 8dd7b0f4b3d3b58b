"""Approvals: which denials are approvable, the id and command, admitted once, never fail open."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import reviews
from webhook import approvals, approvals_watch, attributes, cli, engine, policy, review
from webhook.guards import delete_budget

T0 = 1_800_000_000.0
NOW = datetime.datetime.fromtimestamp(T0, datetime.UTC)


def _policy(base: policy.Policy, rules: list[dict[str, Any]], **budget: Any) -> policy.Policy:
    guards = dict(base.guards)
    guards["delete-budget"] = delete_budget.Settings.model_validate({"limit": 0, **budget})
    return dataclasses.replace(
        base, guards=guards, approvals=tuple(approvals.Rule.model_validate(r) for r in rules)
    )


def _delete(
    name: str = "cm", namespace: str = "shop", *, dry_run: bool = False
) -> attributes.AdmissionRequest:
    request = reviews.admission_request(
        "DELETE", "configmaps", name=name, namespace=namespace, old={"kind": "ConfigMap", "metadata": {}}
    )
    if dry_run:
        request["dryRun"] = True
    return review.parse_admission(reviews.body(reviews.review(request)))


def _approval(request: attributes.AdmissionRequest, name: str = "a-1", **changes: Any) -> approvals.Approval:
    obj = approvals.manifest(
        approvals.Target.of(request),
        "alice@example.com",
        "cleanup ticket 42",
        NOW + datetime.timedelta(minutes=10),
        "g",
    )
    obj["metadata"]["name"] = name
    obj["spec"].update(changes)
    return approvals.Approval.from_object(obj)


@pytest.fixture
def store() -> approvals.Store:
    found = approvals.Store()
    found.enabled = True
    return found


def _engine(
    base: policy.Policy, store: approvals.Store, rules: list[dict[str, Any]], **budget: Any
) -> engine.Engine:
    return engine.Engine(_policy(base, rules, **budget), clock=lambda: T0, approved=store)


def test_approvable_denial_carries_id_and_exact_command(
    shipped_policy: policy.Policy, store: approvals.Store
) -> None:
    judge = _engine(shipped_policy, store, [{"guard": "delete-budget"}])
    request = _delete()
    verdict = judge.admit(request)
    assert not verdict.allowed
    message = verdict.denials[0].message
    target = approvals.Target.of(request)
    assert f"Approval id {target.id}" in message and "agents are refused" in message
    command = message.split("by running: ")[1].split(" -- then retry")[0]
    assert shlex.split(command) == [
        "agent-guard", "approve", target.id,
        "--user", "system:serviceaccount:mcp-system:mcp-k8s-go",
        "--operation", "DELETE", "--resource", "configmaps",
        "--namespace", "shop", "--name", "cm", "--ttl", "10m", "--reason", "...",
    ]  # fmt: skip


def test_approved_retry_is_admitted_once_and_audited(
    shipped_policy: policy.Policy, store: approvals.Store
) -> None:
    judge = _engine(shipped_policy, store, [{"guard": "delete-budget"}])
    request = _delete()
    store.put(_approval(request))
    consumed: list[approvals.Approval] = []
    store.on_consumed = consumed.append
    verdict = judge.admit(request)
    assert verdict.allowed and verdict.decision == "allow"
    [exempted] = verdict.exempted
    assert exempted.exemption.ref == f"approval/{approvals.Target.of(request).id} by alice@example.com"
    assert exempted.finding.guard == "delete-budget"
    answer = review.admission_response(request.uid, verdict)["response"]
    assert answer["auditAnnotations"]["exempted"].startswith("approval/")
    assert [a.name for a in consumed] == ["a-1"]
    assert not judge.admit(request).allowed  # once


def test_approval_covers_exactly_one_request(shipped_policy: policy.Policy, store: approvals.Store) -> None:
    judge = _engine(shipped_policy, store, [{"guard": "delete-budget"}])
    store.put(_approval(_delete("cm")))
    assert not judge.admit(_delete("other")).allowed
    assert not judge.admit(_delete("cm", "web")).allowed
    assert judge.admit(_delete("cm")).allowed


def test_expired_approval_is_ignored(shipped_policy: policy.Policy, store: approvals.Store) -> None:
    judge = _engine(shipped_policy, store, [{"guard": "delete-budget"}])
    request = _delete()
    store.put(_approval(request, expires=(NOW - datetime.timedelta(seconds=1)).isoformat()))
    assert not judge.admit(request).allowed


def test_dry_run_is_judged_with_the_approval_but_does_not_use_it(
    shipped_policy: policy.Policy, store: approvals.Store
) -> None:
    judge = _engine(shipped_policy, store, [{"guard": "delete-budget"}])
    store.put(_approval(_delete()))
    assert judge.admit(_delete(dry_run=True)).allowed
    assert judge.admit(_delete()).allowed
    assert not judge.admit(_delete()).allowed


def test_not_approvable_unless_every_denial_is(shipped_policy: policy.Policy, store: approvals.Store) -> None:
    """A namespace delete is refused by namespace-delete too: approving the budget part is not enough."""
    judge = _engine(shipped_policy, store, [{"guard": "delete-budget"}])
    request = review.parse_admission(reviews.body(reviews.namespace_delete("shop")))
    store.put(_approval(request))
    verdict = judge.admit(request)
    assert not verdict.allowed and set(verdict.guards) == {"delete-budget", "namespace-delete"}
    assert not any("Approval id" in f.message for f in verdict.findings)


@pytest.mark.parametrize(
    ("rule", "approvable"),
    [
        ({"guard": "delete-budget", "namespaces": ["shop"]}, True),
        ({"guard": "delete-budget", "namespaces": ["prod"]}, False),
        ({"guard": "delete-budget", "resources": ["configmaps"]}, True),
        ({"guard": "delete-budget", "resources": ["secrets"]}, False),
        ({"guard": "namespace-delete"}, False),
    ],
)
def test_rules_scope_by_guard_namespace_and_resource(
    shipped_policy: policy.Policy, store: approvals.Store, rule: dict[str, Any], approvable: bool
) -> None:
    judge = _engine(shipped_policy, store, [rule])
    assert ("Approval id" in judge.admit(_delete()).denials[0].message) is approvable


def test_no_command_while_nobody_watches_approvals(shipped_policy: policy.Policy) -> None:
    """Without a running watcher (no --approvals, CRD absent, apiserver unreachable) nothing is offered."""
    store = approvals.Store()
    judge = _engine(shipped_policy, store, [{"guard": "delete-budget"}])
    verdict = judge.admit(_delete())
    assert not verdict.allowed and "Approval id" not in verdict.denials[0].message


def test_consumed_elsewhere_is_not_honoured(shipped_policy: policy.Policy, store: approvals.Store) -> None:
    judge = _engine(shipped_policy, store, [{"guard": "delete-budget"}])
    approval = dataclasses.replace(_approval(_delete()), consumed=True)  # status.consumedAt seen by the watch
    store.put(approval)
    assert not judge.admit(_delete()).allowed


def test_reload_keeps_the_store(shipped_policy: policy.Policy, store: approvals.Store) -> None:
    judge = _engine(shipped_policy, store, [{"guard": "delete-budget"}])
    assert judge.successor(judge.policy).approvals is store


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"id": "aaaaaaaaaa"}, "does not match the approved request"),
        ({"expires": "tomorrow"}, "spec.expires"),
        ({"expires": "2027-01-01T00:00:00"}, "needs a time zone"),
        ({"user": ""}, "spec.user: expected a non-empty string"),
    ],
)
def test_malformed_approval_objects_are_rejected(change: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        _approval(_delete(), **change)


def test_policy_approvals_section_is_validated(tmp_path: Path) -> None:
    text = (reviews.RULES / "policy.yaml").read_text()
    (tmp_path / "policy.yaml").write_text(text)
    (tmp_path / "approvals.yaml").write_text(
        "apiVersion: agent-guard.io/v1alpha1\nkind: Policy\napprovals:\n"
        "  - guard: delete-budget\n    namespaces: [shop]\n  - guard: no-such-guard\n"
    )
    with pytest.raises(
        policy.PolicyError, match=r"approvals.yaml: approvals.1.guard: unknown guard id 'no-such-guard'"
    ):
        policy.load(tmp_path)
    (tmp_path / "approvals.yaml").write_text(
        "apiVersion: agent-guard.io/v1alpha1\nkind: Policy\n"
        "approvals:\n  - guard: delete-budget\n    namespaces: [shop]\n"
    )
    assert policy.load(tmp_path).approvals == (approvals.Rule(guard="delete-budget", namespaces=("shop",)),)


def test_watcher_against_an_unreachable_apiserver_keeps_reviews_closed(
    tmp_path: Path, shipped_policy: policy.Policy, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    store = approvals.Store()
    watcher = approvals_watch.Watcher(
        store, "agent-guard-system", lambda: approvals_watch.api_client(str(kubeconfig))
    )
    with caplog.at_level(logging.WARNING, logger="agent-guard.approvals"):
        watcher.start()
        deadline = time.monotonic() + 20
        while "cannot watch Approvals" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.1)
        watcher.stop()
    assert "cannot watch Approvals" in caplog.text
    assert not store.enabled
    judge = _engine(shipped_policy, store, [{"guard": "delete-budget"}])
    verdict = judge.admit(_delete())
    assert not verdict.allowed and "Approval id" not in verdict.denials[0].message


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["aaaaaaaaaa"],
            "approval id 'aaaaaaaaaa' does not match --user/--operation/--resource/--namespace/--name "
            "(they give ID); copy the whole command from the denial",
        ),
        (
            ["ID", "--ttl", "48h"],
            "--ttl: at most 24h; an approval is for one retry soon, not a standing exception",
        ),
        (["ID", "--ttl", "soon"], "--ttl: 'soon' is not a duration such as 10m, 1h or 90s"),
        (["ID", "--print"], "--print needs --approver (nobody asks the cluster who you are)"),
        (["ID", "--reason", " "], "--reason: say why this request is approved"),
    ],
)
def test_approve_refuses_bad_input(arguments: list[str], message: str) -> None:
    """Exit 2 and the one line ``cli.main`` prints for ``command.Failed``, nothing on stdout."""
    target = approvals.Target.of(_delete())
    args = [target.id if a == "ID" else a for a in arguments]
    fields = ["--user", target.username, "--operation", "DELETE", "--resource", "configmaps"]
    fields += ["--namespace", "shop", "--name", "cm"]
    if "--reason" not in args:
        fields += ["--reason", "ok"]
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "approve", *args, *fields],
        capture_output=True, text=True, cwd=reviews.ROOT, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"agent-guard approve: {message.replace('ID', target.id)}\n"
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("kubeconfig", "message"),
    [
        ({"clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}]}, "Connection refused"),
        ("clusters: [unclosed\n", "expected ',' or ']'"),
        ("just a line\n", "does not support item assignment"),
        (None, "Invalid kube-config file"),
    ],
)
def test_approve_exits_1_naming_a_cluster_it_cannot_reach(
    kubeconfig: dict[str, Any] | str | None, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Unreachable server, a kubeconfig that is not YAML or not a Config, none at all: one line, no
    traceback, exit 1 (the cluster part failed, as when it refuses)."""
    config = tmp_path / "kubeconfig"
    if isinstance(kubeconfig, dict):
        context = {"cluster": "c", "user": "u"}
        users = [{"name": "u", "user": {"token": "t"}}]
        body = {"users": users, "contexts": [{"name": "x", "context": context}], "current-context": "x"}
        config.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config", **kubeconfig, **body}))
    elif kubeconfig is not None:
        config.write_text(kubeconfig)
    target = approvals.Target.of(_delete())
    argv = [
        "approve",
        target.id,
        "--user",
        target.username,
        "--operation",
        "DELETE",
        "--resource",
        "configmaps",
    ]
    argv += ["--namespace", "shop", "--name", "cm", "--reason", "ok", "--kubeconfig", str(config)]
    assert cli.main(argv) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("agent-guard approve: cannot reach the cluster: "), err
    assert message in err and err.count("agent-guard") == 1, err


def test_approve_print_writes_an_object_the_guard_accepts() -> None:
    request = _delete()
    target = approvals.Target.of(request)
    result = subprocess.run(
        [sys.executable, "-m", "webhook", "approve", target.id.upper(), "--user", target.username,
         "--operation", "delete", "--resource", "configmaps", "--namespace", "shop", "--name", "cm",
         "--ttl", "5m", "--reason", "ticket 42", "--print", "--approver", "alice"],
        capture_output=True, text=True, cwd=reviews.ROOT, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    obj = yaml.safe_load(result.stdout)
    obj["metadata"]["name"] = "printed"
    approval = approvals.Approval.from_object(obj)
    assert approval.target == target and approval.approver == "alice" and approval.reason == "ticket 42"
    left = approval.expires - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(minutes=4) < left <= datetime.timedelta(minutes=5)


@pytest.mark.parametrize("operation", ["CREATE", "UPDATE", "DELETE"])
def test_agents_cannot_write_approvals_at_admission(shipped_policy: policy.Policy, operation: str) -> None:
    obj = approvals.manifest(
        approvals.Target.of(_delete()), "me", "self-approval", NOW, shipped_policy.guard_namespace
    )
    obj["metadata"]["name"] = "mine"
    request = reviews.admission_request(
        operation,
        approvals.PLURAL,
        group=approvals.GROUP,
        version=approvals.VERSION,
        kind=approvals.KIND,
        name="mine",
        namespace=shipped_policy.guard_namespace,
        obj=None if operation == "DELETE" else obj,
        old=None if operation == "CREATE" else obj,
    )
    verdict = engine.Engine(shipped_policy).admit(
        review.parse_admission(reviews.body(reviews.review(request)))
    )
    assert not verdict.allowed and "guard-tamper" in verdict.guards


@pytest.mark.parametrize("verb", ["create", "update", "patch", "delete", "deletecollection"])
@pytest.mark.parametrize("sub_resource", ["", "status"])
def test_agents_cannot_write_approvals_through_the_authorizer(
    shipped_policy: policy.Policy, verb: str, sub_resource: str
) -> None:
    access = attributes.AccessRequest(
        user=attributes.UserInfo(str(reviews.AGENT["username"]), tuple(reviews.AGENT["groups"])),
        verb=verb,
        group=approvals.GROUP,
        version=approvals.VERSION,
        resource=approvals.PLURAL,
        sub_resource=sub_resource,
        namespace=shipped_policy.guard_namespace,
        name="" if verb in ("create", "deletecollection") else "mine",
    )
    verdict = engine.Engine(shipped_policy).authorize(access)
    assert not verdict.allowed and "guard-tamper" in verdict.guards
