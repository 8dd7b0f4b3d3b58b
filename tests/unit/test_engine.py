"""Engine rules that no guard can get wrong: prefixes, modes, fail closed on a crash."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from tests import reviews
from webhook import attributes, engine, guards, policy, review
from webhook.guards import base


def _delete_namespace(user: dict[str, Any] | None = None) -> attributes.AdmissionRequest:
    return review.parse_admission(reviews.body(reviews.namespace_delete(user=user)))


def test_agent_denied_in_enforce(shipped_engine: engine.Engine) -> None:
    verdict = shipped_engine.admit(_delete_namespace())
    assert verdict.agent and not verdict.allowed and verdict.decision == "deny"
    assert verdict.guards == ("namespace-delete",)
    assert verdict.denials[0].message.startswith("[namespace-delete] ")


def test_non_agent_is_not_judged(shipped_engine: engine.Engine) -> None:
    verdict = shipped_engine.admit(_delete_namespace(reviews.ADMIN))
    assert verdict is engine.NOT_AGENT and verdict.allowed


def test_dry_run_allows_with_finding(shipped_policy: policy.Policy) -> None:
    verdict = engine.Engine(shipped_policy.with_mode("dry-run")).admit(_delete_namespace())
    assert verdict.allowed and verdict.decision == "would-deny"
    assert [f.mode for f in verdict.findings] == ["dry-run"]


def test_off_guard_is_not_run(shipped_policy: policy.Policy) -> None:
    settings = dict(shipped_policy.guards)
    settings["namespace-delete"] = guards.by_id()["namespace-delete"].settings(mode="off")
    verdict = engine.Engine(dataclasses.replace(shipped_policy, guards=settings)).admit(_delete_namespace())
    assert verdict.allowed and not verdict.findings


@pytest.fixture
def crashing() -> policy.Policy:
    """The shipped policy, with a namespace-delete that crashes (every other family unchanged)."""

    def boom(*_: object) -> Iterator[str]:
        raise KeyError("spec")

    shipped = guards.discover()
    families = shipped.replacing(dataclasses.replace(shipped.by_id["namespace-delete"], admission=boom))
    return policy.load(reviews.RULES, families=families)


@pytest.mark.parametrize(("mode", "allowed"), [("enforce", False), ("dry-run", True)])
def test_crashing_guard_fails_closed_for_agents(
    crashing: policy.Policy, mode: policy.GlobalMode, allowed: bool
) -> None:
    judge = engine.Engine(crashing.with_mode(mode))
    benign = review.parse_admission(
        reviews.body(
            reviews.review(reviews.admission_request("CREATE", "configmaps", obj={"kind": "ConfigMap"}))
        )
    )
    verdict = judge.admit(benign)
    assert verdict.allowed is allowed
    assert verdict.findings[0].error
    assert verdict.findings[0].message.startswith("[namespace-delete] internal error")
    assert judge.admit(dataclasses.replace(benign, user=attributes.UserInfo("kubernetes-admin"))).allowed


def test_family_contract_holds_for_every_guard() -> None:
    for family in guards.families():
        assert isinstance(family, base.Family)
        assert family.admission or family.access, family.id
        assert issubclass(family.settings, base.GuardSettings)
        assert family.summary
