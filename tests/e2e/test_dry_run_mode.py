"""Scenario 5: with the guard in dry-run mode, attacks go through but nobody can miss them.

The guard on the authorizer's port is restarted with ``--mode dry-run`` (the apiserver's authorizer URL
is fixed at start-up), so both endpoints are in dry-run. For admission, the client gets a ``Warning``
header per finding, the apiserver's audit event carries our annotations (prefixed with the webhook's
name by the apiserver) and the guard logs ``would-deny``. The authorizer can do none of that: it
answers "no opinion", RBAC allows, and only the guard's decision log says ``would-deny``.

On an existing cluster (kind) the deployed guard is switched to ``--mode=dry-run`` and back, and its
pods' logs are read; its apiserver does not call the guard's authorizer (see ``require_authorizer``).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

import pytest

from tests.e2e import attacks, audit, incluster, kube, stack
from tests.e2e.conftest import SceneFactory, require_authorizer, require_guard
from webhook import manifests

pytestmark = pytest.mark.e2e

ROWS = [pytest.param(attack, id=attack.id) for attack in attacks.ATTACKS]


@pytest.fixture(scope="module")
def dry_run_log(e2e: stack.Stack) -> Iterator[Callable[[], str]]:
    """The output of the guard in dry-run mode: the local guard restarted on the authorizer's port
    (both endpoints; the next scenario's fixture restarts it enforcing), or (kind) the deployed one
    switched, and switched back at the end of the module."""
    if isinstance(e2e, incluster.InClusterStack):
        with e2e.in_mode("dry-run"):
            yield e2e.guard_logs
        return
    yield e2e.guard_mode("--mode", "dry-run").output


@pytest.mark.parametrize("attack", ROWS)
def test_attack_is_admitted_with_warnings_and_audit_annotations(
    attack: attacks.Attack, dry_run_log: Callable[[], str], e2e: stack.Stack, new_scene: SceneFactory
) -> None:
    require_guard(attack.guard, e2e)
    scene = new_scene(f"dryrun-{attack.id}")
    reply = e2e.agent.request(attack.prepare(scene))
    assert reply.status in attack.admitted, reply
    ours = [w for w in reply.warnings if w.startswith(f"[{attack.guard}] would deny")]
    assert ours, f"no [{attack.guard}] warning in {reply.warnings} (headers {reply.headers})"
    if e2e.target.audit_log is not None:
        found = audit.annotations_of(e2e.target.audit_log, reply.audit_id, f"{manifests.WEBHOOK_NAME}/")
        assert found[f"{manifests.WEBHOOK_NAME}/decision"] == "would-deny", found
        assert attack.guard in found[f"{manifests.WEBHOOK_NAME}/guards"].split(","), found
    decisions = stack.decisions(dry_run_log)
    assert any(
        d["decision"] == "would-deny"
        and attack.guard in d["guards"]
        and (d["namespace"] == scene.namespace or scene.suffix in d["name"])
        for d in decisions
    ), f"no would-deny decision for {attack.id} ({scene.namespace}) in the guard's log"


def test_agent_reads_a_secret_and_the_guard_logs_would_deny(
    dry_run_log: Callable[[], str], e2e: stack.Stack, new_scene: SceneFactory
) -> None:
    """The authorizer side of dry-run: "no opinion" (RBAC allows), and a would-deny decision line."""
    require_authorizer(e2e)
    require_guard("secret-access", e2e)
    scene = new_scene("dryrun-secret-read")
    secret = {"metadata": {"name": "db-credentials"}, "stringData": {"password": secrets.token_urlsafe(12)}}
    e2e.admin.ok(kube.Request("POST", f"/api/v1/namespaces/{scene.namespace}/secrets", secret))
    read = e2e.agent.core.read_namespaced_secret("db-credentials", scene.namespace)
    assert read.metadata.name == "db-credentials" and read.data, "the agent's read should have succeeded"
    listed = e2e.agent.core.list_namespaced_secret(scene.namespace)
    assert [item.metadata.name for item in listed.items] == ["db-credentials"]
    logged = [
        d
        for d in stack.decisions(dry_run_log)
        if d["endpoint"] == "authorize" and d["namespace"] == scene.namespace and d["resource"] == "secrets"
    ]
    assert {d["operation"] for d in logged} == {"get", "list"}, logged
    for decision in logged:
        assert decision["decision"] == "would-deny" and decision["guards"] == ["secret-access"], decision
        assert decision["mode"] == "dry-run" and decision["allowed"] is True, decision
