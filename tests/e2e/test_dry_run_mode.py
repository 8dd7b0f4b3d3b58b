"""Scenario 5: with the guard in dry-run mode, attacks go through but nobody can miss them.

The client gets a ``Warning`` header per finding, the apiserver's audit event carries our annotations
(prefixed with the webhook's name by the apiserver) and the guard logs ``would-deny``. On an existing
cluster (kind) the deployed guard is switched to ``--mode=dry-run`` and back, and its pods' logs are read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from tests.e2e import attacks, audit, incluster, stack
from tests.e2e.conftest import SceneFactory, require_guard
from webhook import manifests

pytestmark = pytest.mark.e2e

ROWS = [pytest.param(attack, id=attack.id) for attack in attacks.ATTACKS]


@pytest.fixture(scope="module")
def dry_run_log(e2e: stack.Stack) -> Iterator[Callable[[], str]]:
    """The output of a guard in dry-run mode: a second local guard, or (kind) the deployed one switched."""
    if isinstance(e2e, incluster.InClusterStack):
        with e2e.in_mode("dry-run"):
            yield e2e.guard_logs
        return
    with e2e.extra_guard("--mode", "dry-run") as guard:
        e2e.webhook.point_at(guard)
        try:
            yield guard.output
        finally:
            e2e.enforcing()


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
    decisions = [json.loads(line) for line in dry_run_log().splitlines() if line.startswith("{")]
    assert any(
        d["decision"] == "would-deny"
        and attack.guard in d["guards"]
        and (d["namespace"] == scene.namespace or scene.suffix in d["name"])
        for d in decisions
    ), f"no would-deny decision for {attack.id} ({scene.namespace}) in the guard's log"
